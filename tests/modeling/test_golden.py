"""colxm's token ids and vectors against colbert-ai's own (fixtures: scripts/golden/make_golden.py)."""
import json
from pathlib import Path

import numpy as np
import pytest

from colxm.modeling.encoder import Encoder
from tiny_models import materialize_xmod

GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "golden"
MANIFEST = json.loads((GOLDEN / "golden.json").read_text(encoding="utf-8"))
TEXTS = MANIFEST["texts"]
CASES = MANIFEST["cases"]
ATOL = 1e-5


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    return {"bert": GOLDEN / "bert", "xmod": materialize_xmod(GOLDEN / "xmod", tmp_path_factory.mktemp("xmod"))}


@pytest.fixture(scope="module")
def encoders(model_dirs):
    cache = {}

    def get(model, scheme, attend):
        key = (model, scheme, attend)
        if key not in cache:
            cache[key] = Encoder.from_pretrained(model_dirs[model], marker_scheme=scheme,
                                                 attend_to_mask_tokens=attend, batch_size=5)
        return cache[key]

    return get


def _split(flat, lens):
    return np.split(flat, np.cumsum(lens)[:-1])


@pytest.mark.parametrize("name", sorted(CASES))
def test_document_ids_and_vectors_match_colbert_ai(name, encoders):
    case = CASES[name]
    enc = encoders(case["model"], case["scheme"], False)
    assert enc.colbert_tokenizer.document_ids(TEXTS) == case["doc_ids"]
    ref = _split(np.load(GOLDEN / case["docs_file"]), case["doclens"])
    ours = enc.encode_documents(TEXTS, languages=case["adapter"])
    assert [len(x) for x in ours] == case["doclens"]
    for i, (a, b) in enumerate(zip(ours, ref)):
        np.testing.assert_allclose(a, b, atol=ATOL, rtol=0, err_msg=f"text #{i}")


@pytest.mark.parametrize("attend", ["attend0", "attend1"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_query_ids_and_vectors_match_colbert_ai(name, attend, encoders):
    case = CASES[name]
    q = case["queries"][attend]
    enc = encoders(case["model"], case["scheme"], q["attend_to_mask_tokens"])
    tok = enc.tokenize_queries(TEXTS)
    assert tok["input_ids"].tolist() == q["query_ids"]
    assert tok["attention_mask"].tolist() == q["query_mask"]
    ref = np.load(GOLDEN / q["file"])
    ours = np.stack(enc.encode_queries(TEXTS, languages=case["adapter"]))
    np.testing.assert_allclose(ours, ref, atol=ATOL, rtol=0)


def test_legacy_scheme_leaves_stray_dot_with_xlmr(encoders):
    legacy = CASES["xmod-legacy-en_XX"]["doc_ids"][0]
    current = CASES["xmod-current-en_XX"]["doc_ids"][0]
    enc = encoders("xmod", "legacy", False)
    assert enc.tokenizer.convert_ids_to_tokens(legacy[:3])[2] == "."
    assert legacy[:2] == current[:2] and legacy[3:] == current[2:]


def test_mixed_language_batch_matches_each_adapter_alone(encoders):
    """One batch, a different adapter per text == colbert-ai with that adapter set globally."""
    adapters = [c["adapter"] for c in CASES.values() if c["model"] == "xmod" and c["scheme"] == "current"]
    per_text = [adapters[i % len(adapters)] for i in range(len(TEXTS))]
    enc = encoders("xmod", "current", False)
    docs = enc.encode_documents(TEXTS, languages=per_text, batch_size=7)
    queries = enc.encode_queries(TEXTS, languages=per_text, batch_size=7)
    for i, lang in enumerate(per_text):
        case = CASES[f"xmod-current-{lang}"]
        ref_d = _split(np.load(GOLDEN / case["docs_file"]), case["doclens"])[i]
        ref_q = np.load(GOLDEN / case["queries"]["attend0"]["file"])[i]
        np.testing.assert_allclose(docs[i], ref_d, atol=ATOL, rtol=0)
        np.testing.assert_allclose(queries[i], ref_q, atol=ATOL, rtol=0)
    # and the adapters really differ (otherwise this test could not fail)
    a = _split(np.load(GOLDEN / CASES["xmod-current-en_XX"]["docs_file"]), CASES["xmod-current-en_XX"]["doclens"])
    b = _split(np.load(GOLDEN / CASES["xmod-current-de_DE"]["docs_file"]), CASES["xmod-current-de_DE"]["doclens"])
    assert np.abs(a[0] - b[0]).max() > 1e-2


def test_iso_codes_route_to_the_same_adapters(encoders):
    enc = encoders("xmod", "current", False)
    case = CASES["xmod-current-de_DE"]
    ref = _split(np.load(GOLDEN / case["docs_file"]), case["doclens"])
    ours = enc.encode_documents(TEXTS[:3], languages="de")
    for a, b in zip(ours, ref):
        np.testing.assert_allclose(a, b, atol=ATOL, rtol=0)


def test_colbert_ai_loads_colxm_saved_folders():
    """Recorded by make_golden.py: colbert-ai loaded folders written by colxm's save_pretrained
    and produced the same vectors as for the original checkpoints."""
    rt = MANIFEST["roundtrip"]
    assert {"bert-current", "xmod-current-de_DE", "xmod-legacy-fr_XX"} <= set(rt)
    for name, r in rt.items():
        assert r["loads_in_colbert_ai"] and r["same_vectors"] and r["max_abs_diff"] <= 1e-6, name
