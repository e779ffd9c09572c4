#!/usr/bin/env python3
"""Projection-only training on the CPU: cached backbone outputs against the full forward pass.

Both runs go through `colxm.train.trainer.train_colbert` with `trainable_layers=0` on the same
triples, model, batch size and threads; the only difference is `cache_backbone`. The cached run
trains `--steps` steps (its time includes computing the backbone once per distinct text); the
uncached run trains `--uncached-steps` steps and its per-step time is extrapolated to `--steps`.
Prints one JSON object as its last line.

usage:
  train_projection_cpu.py --model MODEL_DIR --triples TRIPLES.jsonl --out DIR
      [--limit 8000] [--steps 250] [--batch-size 32] [--uncached-steps 4] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch


def run(model: str, rows, out: Path, steps: int, batch_size: int, cached: bool) -> dict:
    from colxm.modeling.encoder import Encoder
    from colxm.train.trainer import TrainConfig, train_colbert

    shutil.rmtree(out, ignore_errors=True)
    enc = Encoder.from_pretrained(model)
    cfg = TrainConfig(output_dir=str(out), max_steps=steps, batch_size=batch_size, learning_rate=1e-4,
                      trainable_layers=0, cache_backbone=cached, save_steps=max(steps, 1), logging_steps=10)
    t0 = time.perf_counter()
    summary = train_colbert(enc, rows, cfg)
    total = time.perf_counter() - t0
    return {"steps": summary["steps"], "total_s": round(total, 1), "train_s": round(summary["train_time_s"], 1),
            "step_s": round(summary["train_time_s"] / summary["steps"], 3), "final_loss": summary["loss_curve"][-1][1]}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--triples", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--limit", type=int, default=8000)
    ap.add_argument("--steps", type=int, default=250)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--uncached-steps", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from colxm.train.data import read_triples

    rows = read_triples(args.triples)[: args.limit]
    out = Path(args.out)
    cached = run(args.model, rows, out / "cached", args.steps, args.batch_size, cached=True)
    uncached = run(args.model, rows, out / "uncached", args.uncached_steps, args.batch_size, cached=False)
    uncached_total = uncached["step_s"] * args.steps
    result = {"benchmark": "train_projection_cpu", "model": args.model, "triples": len(rows),
              "batch_size": args.batch_size, "threads": args.threads, "steps": args.steps,
              "cached": cached, "uncached": uncached,
              "cache_build_s": round(cached["total_s"] - cached["train_s"], 1),
              "uncached_extrapolated_s": round(uncached_total, 1),
              "speedup_per_step": round(uncached["step_s"] / cached["step_s"], 1),
              "speedup_whole_run": round(uncached_total / cached["total_s"], 1)}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
