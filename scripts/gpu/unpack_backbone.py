#!/usr/bin/env python3
"""Rebuild the default model folder on the GPU machine from `pack_backbone.py`'s output.

usage: unpack_backbone.py PACK_DIR MODEL_OUT_DIR
Word-embedding rows of tokens not in the packed texts are zero; every other weight is exactly
what `colxm.modeling.default_model.build_model_folder` writes from the full container.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from colxm.modeling.default_model import E5Container, DefaultModelSpec, build_model_folder


def load_container(pack: Path) -> E5Container:
    meta = json.loads((pack / "container.json").read_text())
    header, tensors = meta["header"], {k: tuple(v) for k, v in meta["tensors"].items()}
    dtype, count, row_bytes = meta["word"]
    words = np.zeros((header["VOC"], row_bytes), np.uint8)  # a zero Q4 block (scale 0) is all zeros
    words[np.load(pack / "word_ids.npy")] = np.load(pack / "word_rows.npy")
    blob = (pack / "tensors.bin").read_bytes()
    tensors["emb.word"] = (dtype, count, len(blob), words.nbytes)
    return E5Container(blob + words.tobytes(), header, tensors)


def main(pack: Path, out: Path) -> None:
    import colxm.modeling.default_model as dm

    container = load_container(pack)
    dm.read_e5_container = lambda _path: container  # build_model_folder reads by path; hand it ours
    build_model_folder("<packed>", pack / "tokenizer.json", out, DefaultModelSpec())
    print("model at", out)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
