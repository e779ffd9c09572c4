"""Evaluation: datasets (BEIR / TSV / TREC / ir_datasets), metrics via ir-measures, TREC runs."""
from colxm.evaluate.datasets import EvalSet, load_beir, load_eval_set, load_irds
from colxm.evaluate.metrics import DEFAULT_MEASURES, evaluate_run
from colxm.evaluate.retrieval import run_index
from colxm.evaluate.runs import read_trec_run, write_trec_run

__all__ = [
    "DEFAULT_MEASURES",
    "EvalSet",
    "evaluate_run",
    "load_beir",
    "load_eval_set",
    "load_irds",
    "read_trec_run",
    "run_index",
    "write_trec_run",
]
