import math

import pytest

pytest.importorskip("ir_measures", reason="ir-measures is in the eval extra")

from colxm.errors import InputError
from colxm.evaluate import DEFAULT_MEASURES, evaluate_run, read_trec_run, write_trec_run

QRELS = {"q1": {"d1": 1}, "q2": {"d2": 1, "d3": 1, "d7": 0}, "q3": {"d9": 1}}
RUN = {
    "q1": {"d5": 0.9, "d1": 0.8},                 # relevant at rank 2
    "q2": {"d2": 0.9, "d4": 0.5, "d3": 0.3},      # relevant at ranks 1 and 3
    # q3: no results -> counts as 0
    "qX": {"d1": 1.0},                            # not judged -> ignored
}


def test_hand_computed_values():
    m = evaluate_run(RUN, QRELS)
    assert set(m) == set(DEFAULT_MEASURES)
    assert m["MRR@10"] == pytest.approx((1 / 2 + 1 + 0) / 3)
    assert m["MRR@100"] == pytest.approx(0.5)
    assert m["R@10"] == pytest.approx(2 / 3)
    assert m["R@1000"] == pytest.approx(2 / 3)
    assert m["Success@5"] == pytest.approx(2 / 3)
    ndcg_q1 = 1 / math.log2(3)
    ndcg_q2 = (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    assert m["nDCG@10"] == pytest.approx((ndcg_q1 + ndcg_q2) / 3)


def test_cutoffs_and_per_query():
    run = {"q1": {f"x{i}": 100.0 - i for i in range(10)} | {"d1": 1.0}}  # relevant at rank 11
    means, per_q = evaluate_run(run, {"q1": {"d1": 1}}, ["MRR@10", "MRR@100", "R@10", "R@100"], per_query=True)
    assert means == pytest.approx({"MRR@10": 0.0, "MRR@100": 1 / 11, "R@10": 0.0, "R@100": 1.0})
    assert per_q["MRR@100"] == pytest.approx({"q1": 1 / 11})


def test_other_measure_names_and_errors():
    assert evaluate_run(RUN, QRELS, ["P@1"])["P@1"] == pytest.approx((0 + 1 + 0) / 3)
    with pytest.raises(InputError, match="unknown measure"):
        evaluate_run(RUN, QRELS, ["NotAMeasure@3"])
    with pytest.raises(InputError):
        evaluate_run(RUN, {})
    assert evaluate_run({}, QRELS, ["MRR@10"]) == {"MRR@10": 0.0}


def test_trec_run_roundtrip(tmp_path):
    path = write_trec_run({"q1": {"b": 0.5, "a": 2.0}, "q2": {"c": -1.0}}, tmp_path / "runs" / "r.trec", tag="t1")
    lines = path.read_text().splitlines()
    assert lines == ["q1 Q0 a 1 2.000000 t1", "q1 Q0 b 2 0.500000 t1", "q2 Q0 c 1 -1.000000 t1"]
    assert read_trec_run(path) == {"q1": {"a": 2.0, "b": 0.5}, "q2": {"c": -1.0}}
    assert [p.name for p in path.parent.iterdir()] == ["r.trec"]  # no temporary left behind


def test_trec_run_rejects_whitespace_ids(tmp_path):
    with pytest.raises(InputError, match="whitespace"):
        write_trec_run({"q1": {"doc one": 1.0}}, tmp_path / "r.trec")
    assert not (tmp_path / "r.trec").exists()
    bad = tmp_path / "bad.trec"
    bad.write_text("q1 Q0 d1 1 0.5\n")
    with pytest.raises(InputError, match="line 1"):
        read_trec_run(bad)
