"""artifact.metadata <-> ColBERTConfig, and which marker scheme a checkpoint was trained with."""
import json

import pytest

from colxm.errors import CheckpointError
from colxm.modeling.config import ColBERTConfig
from colxm.modeling.encoder import Encoder

# Shaped like colbert-ai's artifact.metadata (flat ColBERTConfig fields + "meta").
COLBERT_META = {
    "query_token_id": "[unused0]", "doc_token_id": "[unused1]", "query_token": "[Q]", "doc_token": "[D]",
    "ncells": None, "nbits": 2, "kmeans_niters": 4, "dim": 128, "doc_maxlen": 180, "query_maxlen": 32,
    "mask_punctuation": True, "attend_to_mask_tokens": False, "similarity": "cosine", "bsize": 32,
    "model_name": "bert-base-uncased", "checkpoint": "/some/where",
    "meta": {"hostname": "x", "current_datetime": "Aug 13, 2021 ; 10:01AM PDT (-0700)", "cmd": "train.py"},
}


def test_metadata_round_trip_keeps_unknown_keys():
    cfg = ColBERTConfig.from_metadata(COLBERT_META)
    assert (cfg.dim, cfg.doc_maxlen, cfg.query_maxlen, cfg.model_name) == (128, 180, 32, "bert-base-uncased")
    out = cfg.to_metadata()
    assert {k: v for k, v in out.items() if k != "colxm_marker_scheme"} == COLBERT_META
    assert ColBERTConfig.from_metadata(out) == cfg


@pytest.mark.parametrize("meta, scheme", [
    ({"current_datetime": "Aug 13, 2021 ; 10:01AM PDT (-0700)"}, "legacy"),
    ({"current_datetime": "Feb 14, 2024 ; 10:12AM CET (+0100)"}, "legacy"),
    ({"current_datetime": "Sep  2, 2024 ;  9:00AM UTC (+0000)"}, "current"),
    ({"git_commit_datetime": "2024-08-19 10:00:00-07:00"}, "legacy"),
    ({"git_commit_datetime": "2025-01-01 10:00:00+00:00"}, "current"),
    ({}, "current"),
])
def test_scheme_inferred_from_dates(meta, scheme):
    assert ColBERTConfig.from_metadata({**COLBERT_META, "meta": meta}).marker_scheme == scheme


def test_recorded_scheme_wins_and_wrapper_form_is_read():
    meta = {**COLBERT_META, "colxm_marker_scheme": "current"}
    assert ColBERTConfig.from_metadata(meta).marker_scheme == "current"
    assert ColBERTConfig.from_metadata({"config": {"dim": 64}}).dim == 64


def test_undated_xmod_checkpoint_defaults_to_legacy(tiny_xmod, tiny_bert):
    assert "meta" not in json.loads((tiny_xmod / "artifact.metadata").read_text())
    assert Encoder.from_pretrained(tiny_xmod).config.marker_scheme == "legacy"
    assert Encoder.from_pretrained(tiny_xmod, marker_scheme="current").config.marker_scheme == "current"
    assert Encoder.from_pretrained(tiny_bert).config.marker_scheme == "current"


@pytest.mark.parametrize("bad", [{"marker": 1, "colxm_marker_scheme": "odd"}, {"similarity": "l2"},
                                 {"dim": 0}, {"query_maxlen": "32"}, [1, 2]])
def test_invalid_metadata(bad):
    with pytest.raises(CheckpointError):
        ColBERTConfig.from_metadata(bad)
