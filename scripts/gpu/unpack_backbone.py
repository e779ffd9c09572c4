#!/usr/bin/env python3
"""Rebuild the default model folder on the GPU machine from `pack_backbone.py`'s output.

usage: unpack_backbone.py PACK_DIR MODEL_OUT_DIR [DIM]
The folder is the UNTRAINED backbone (the shipped delta is not applied) with a DIM x 384 projection:
the identity when DIM is 384 (every backbone dimension kept), else the seeded orthonormal one.
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


def main(pack: Path, out: Path, dim: int = 128) -> None:
    import tempfile

    import colxm.modeling.default_model as dm
    from safetensors.torch import load_file, save_file

    container = load_container(pack)
    dm.read_e5_container = lambda _path: container  # build_model_folder reads by path; hand it ours
    with tempfile.TemporaryDirectory() as no_delta:  # untrained: do not apply the shipped delta
        build_model_folder("<packed>", pack / "tokenizer.json", out, DefaultModelSpec(dim=dim),
                           shipped_folder=Path(no_delta))
    if dim == container.header["H"]:
        import torch

        weights = load_file(str(out / "model.safetensors"))
        weights["linear.weight"] = torch.eye(dim)
        save_file(weights, str(out / "model.safetensors"), metadata={"format": "pt"})
    print("model at", out)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 128)
