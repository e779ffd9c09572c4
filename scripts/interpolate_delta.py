#!/usr/bin/env python3
"""WiSE-FT (Wortsman et al. 2022) on a shipped model delta, on the CPU: every tensor of the delta
becomes base + alpha * (trained - base), where base is the plain e5-small tensor (the identity for
the 384-d projection, which was initialised to it; weights of 1 for learned query-token weights).
alpha 1 = the trained delta, 0 = untrained e5.

usage: interpolate_delta.py ALPHA OUT_DELTA_DIR [--from DELTA_DIR] [--model-out MODEL_DIR]
Writes OUT_DELTA_DIR in the source's layout (delta.safetensors + delta.json, or the older
weights.safetensors + default_model.json; fp16), and with
--model-out also the HF_ColBERT folder built from it (for benchmarks/quality_models.py).
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from colxm.modeling.default_model import (SHIPPED_DIR, build_model_folder, cache_dir, e5_to_bert,
                                          fetch_e5_files, read_e5_container)
from colxm.modeling.query_weights import STATE_PREFIX as QUERY_WEIGHTS_PREFIX, QueryTokenWeights


def base_tensors(names: list[str], shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """The untrained value of each delta tensor: e5-small's, or the identity for linear.weight."""
    e5, _ = fetch_e5_files(cache_dir())
    _, state = e5_to_bert(read_e5_container(e5))
    out = {}
    for name in names:
        if name.startswith(QUERY_WEIGHTS_PREFIX):  # untrained query-token weights: every weight 1
            head = QueryTokenWeights(shapes[name][-1] - 1) if name.endswith("weight") else QueryTokenWeights(1)
            out[name] = head.state_tensors()[name].numpy()
            continue
        if name == "linear.weight":
            rows, cols = shapes[name]
            if rows != cols:
                raise SystemExit("linear.weight is not square: its untrained value is not the identity")
            out[name] = np.eye(rows, dtype=np.float32)
        else:
            out[name] = state[name.removeprefix("bert.")].numpy()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("alpha", type=float)
    ap.add_argument("out", type=Path)
    ap.add_argument("--from", dest="source", type=Path, default=SHIPPED_DIR)
    ap.add_argument("--model-out", type=Path, default=None)
    args = ap.parse_args()
    delta_layout = (args.source / "delta.safetensors").is_file()  # colxm.train.delta's layout
    weights_file, meta_file = ("delta.safetensors", "delta.json") if delta_layout else \
        ("weights.safetensors", "default_model.json")
    trained = load_file(str(args.source / weights_file))
    base = base_tensors(sorted(trained), {k: v.shape for k, v in trained.items()})
    mixed = {k: (base[k] + args.alpha * (trained[k].astype(np.float32) - base[k])).astype(np.float16)
             for k in trained}
    args.out.mkdir(parents=True, exist_ok=True)
    save_file(mixed, str(args.out / weights_file))
    meta = json.loads((args.source / meta_file).read_text(encoding="utf-8"))
    meta["name"] = f"{meta.get('name', 'model')}-wise{args.alpha:g}"
    (args.out / meta_file).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    print("delta at", args.out)
    if args.model_out is not None:
        e5, tok = fetch_e5_files(cache_dir())
        if args.model_out.exists():
            shutil.rmtree(args.model_out)
        build_model_folder(e5, tok, args.model_out, shipped_folder=args.out)
        print("model at", args.model_out)


if __name__ == "__main__":
    main()
