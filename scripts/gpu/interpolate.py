#!/usr/bin/env python3
"""Weight-space interpolation of a fine-tuned model with its starting point (WiSE-FT,
Wortsman et al. 2022): theta = base + alpha * (trained - base), tensor by tensor.

usage: interpolate.py BASE_DIR TRAINED_DIR ALPHA OUT_DIR
Both folders are HF_ColBERT folders of the same architecture; OUT_DIR gets TRAINED_DIR's
config/tokenizer files and the interpolated model.safetensors. alpha 1 = trained, 0 = base.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

from safetensors.torch import load_file, save_file


def main(base: Path, trained: Path, alpha: float, out: Path) -> None:
    start, end = load_file(str(base / "model.safetensors")), load_file(str(trained / "model.safetensors"))
    if start.keys() != end.keys():
        raise SystemExit(f"{base} and {trained} hold different tensors")
    shutil.copytree(trained, out, dirs_exist_ok=True)
    mixed = {k: (start[k].float() + alpha * (end[k].float() - start[k].float())).to(end[k].dtype)
             for k in end}
    save_file(mixed, str(out / "model.safetensors"), metadata={"format": "pt"})
    print("model at", out)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3]), Path(sys.argv[4]))
