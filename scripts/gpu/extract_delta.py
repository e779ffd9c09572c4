#!/usr/bin/env python3
"""Write the part of a trained default model that differs from the e5-small base, for shipping in
`src/colxm/data/default_model/` (read by colxm.modeling.default_model.build_model_folder).

usage: extract_delta.py TRAINED_DIR BASE_DIR OUT_DIR
Writes OUT_DIR/weights.safetensors (float16: linear.weight + every changed `bert.*` tensor) and
OUT_DIR/default_model.json (the trained model's ColBERTConfig fields). Fails if an embedding changed
(the recipe keeps them frozen, and the shipped delta must stay small).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file


def main(trained: Path, base: Path, out: Path) -> None:
    new, old = load_file(str(trained / "model.safetensors")), load_file(str(base / "model.safetensors"))
    delta = {}
    for key, value in new.items():
        if key != "linear.weight" and key not in old:
            continue  # e.g. a pooler the loader added: ColBERT never uses it, the base has none
        if key == "linear.weight" or not np.array_equal(value, old[key]):
            if "embeddings" in key:
                raise SystemExit(f"{key} changed: embeddings must stay frozen")
            delta[key] = value.astype(np.float16)
    out.mkdir(parents=True, exist_ok=True)
    save_file(delta, str(out / "weights.safetensors"))
    meta = json.loads((trained / "artifact.metadata").read_text())
    keep = ("dim", "query_maxlen", "doc_maxlen", "mask_punctuation", "attend_to_mask_tokens",
            "query_token_id", "doc_token_id", "query_token", "doc_token", "similarity")
    settings = {k: meta[k] for k in keep if k in meta}
    extra = {k: v for k, v in meta.items() if k.startswith("colxm_") and k != "colxm_marker_scheme"}
    if extra:
        settings["extra"] = extra  # e.g. the text prefixes the model was trained with
    settings["name"] = "colxm-e5-small-ddtp-en"
    (out / "default_model.json").write_text(json.dumps(settings, indent=2) + "\n")
    size = (out / "weights.safetensors").stat().st_size
    print(json.dumps({"tensors": len(delta), "bytes": size, "keys": sorted(delta)[:3] + ["..."]}))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
