"""Read a colbert-ai (PLAID, v0.2.x) index folder into a ResidualCodec and a SegmentData.

colxm's codec is byte-compatible with colbert-ai's, so codes and residuals are taken as they are
(nothing is re-encoded). Tensors are read with ``torch.load(weights_only=True)`` only.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from colxm.errors import IndexFormatError
from colxm.index.codec import ResidualCodec
from colxm.index.ivf import build_ivf
from colxm.search.data import SegmentData


def _load_pt(path: Path):
    import torch

    if not path.exists():
        raise IndexFormatError(f"{path} is missing: not a complete colbert-ai index")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for truncated or foreign files
        raise IndexFormatError(f"cannot read {path} as a tensor file ({type(e).__name__}: {e}); "
                               "the colbert-ai index is damaged or not an index") from None


def _load_json(path: Path):
    if not path.exists():
        raise IndexFormatError(f"{path} is missing: not a complete colbert-ai index")
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise IndexFormatError(f"{path} is not valid JSON ({e}); the colbert-ai index is damaged") from None


def _np(t, dtype) -> np.ndarray:
    import torch

    if not isinstance(t, torch.Tensor):
        raise IndexFormatError(f"expected a tensor, found {type(t).__name__}")
    return t.detach().cpu().numpy().astype(dtype, copy=False)


def read_colbert_index(path: str | os.PathLike) -> tuple[ResidualCodec, SegmentData, dict]:
    """Return (codec, segment, info) for the colbert-ai index folder ``path``.

    info: num_docs, num_tokens, num_centroids, nbits, dim, num_chunks, and the colbert-ai config
    dict from metadata.json / plan.json. Document indexes are colbert-ai's passage ids (0..N-1).
    """
    root = Path(path)
    if not root.is_dir():
        raise IndexFormatError(f"{root} is not a folder; give the colbert-ai index folder "
                               "(the one holding metadata.json, centroids.pt, 0.codes.pt ...)")
    meta = _load_json(root / "metadata.json")
    plan = _load_json(root / "plan.json") if (root / "plan.json").exists() else {}
    config = meta.get("config") or plan.get("config") or {}
    try:
        num_chunks = int(meta.get("num_chunks", plan.get("num_chunks")))
        nbits = int(config["nbits"])
        dim = int(config["dim"])
    except (KeyError, TypeError, ValueError):
        raise IndexFormatError(f"{root / 'metadata.json'} lacks num_chunks / config.nbits / config.dim; "
                               "not a colbert-ai PLAID index") from None

    centroids = _np(_load_pt(root / "centroids.pt"), np.float32)
    buckets = _load_pt(root / "buckets.pt")
    if not (isinstance(buckets, (tuple, list)) and len(buckets) == 2):
        raise IndexFormatError(f"{root / 'buckets.pt'} should hold (bucket_cutoffs, bucket_weights)")
    avg = _np(_load_pt(root / "avg_residual.pt"), np.float32).reshape(-1)
    codec = ResidualCodec(nbits=nbits, dim=dim, centroids=centroids,
                          bucket_cutoffs=_np(buckets[0], np.float32), bucket_weights=_np(buckets[1], np.float32),
                          avg_residual=float(avg.mean()) if avg.size else 0.0,
                          normalize=True)  # colbert-ai's scoring, so that results match colbert-ai's

    codes, residuals, doclens = [], [], []
    for i in range(num_chunks):
        c = _np(_load_pt(root / f"{i}.codes.pt"), np.int64).reshape(-1)
        r = _np(_load_pt(root / f"{i}.residuals.pt"), np.uint8)
        d = _load_json(root / f"doclens.{i}.json")
        if r.ndim != 2 or r.shape != (c.shape[0], codec.packed_dim) or sum(d) != c.shape[0]:
            raise IndexFormatError(f"chunk {i} of {root} is inconsistent: {c.shape[0]} codes, residuals "
                                   f"{r.shape}, doclens summing to {sum(d)}")
        codes.append(c)
        residuals.append(r)
        doclens.extend(int(x) for x in d)
    codes = np.concatenate(codes) if codes else np.zeros(0, np.int64)
    if codes.size and (codes.min() < 0 or codes.max() >= codec.num_centroids):
        raise IndexFormatError(f"codes in {root} point past the {codec.num_centroids} centroids")
    code_dtype = np.uint16 if codec.num_centroids <= 65536 else np.int32
    codes = codes.astype(code_dtype)
    doclens = np.asarray(doclens, dtype=np.int32)
    residuals = np.concatenate(residuals) if residuals else np.zeros((0, codec.packed_dim), np.uint8)

    ivf_offsets, ivf_docs = _read_ivf(root, codes, doclens, codec.num_centroids)
    offsets = np.zeros(len(doclens) + 1, dtype=np.int64)
    np.cumsum(doclens, out=offsets[1:])
    seg = SegmentData(codes=codes, residuals=residuals, doclens=doclens, doc_offsets=offsets,
                      ivf_offsets=ivf_offsets, ivf_docs=ivf_docs)
    seg.check(codec)
    info = {"num_docs": int(len(doclens)), "num_tokens": int(codes.shape[0]), "num_centroids": codec.num_centroids,
            "nbits": nbits, "dim": dim, "num_chunks": num_chunks, "colbert_config": config}
    return codec, seg, info


def _read_ivf(root: Path, codes: np.ndarray, doclens: np.ndarray, K: int) -> tuple[np.ndarray, np.ndarray]:
    """colbert-ai's centroid -> passage lists (ivf.pid.pt), checked against the codes; an index
    with only the older centroid -> embedding lists (ivf.pt), or none, gets them rebuilt from codes."""
    ivf_offsets, ivf_docs = build_ivf(codes, doclens, K)
    pid_path = root / "ivf.pid.pt"
    if pid_path.exists():
        ivf, lengths = _load_pt(pid_path)
        lengths = _np(lengths, np.int64)
        stored = _np(ivf, np.int64)[: int(lengths.sum())]
        if lengths.shape != (K,) or not np.array_equal(stored, ivf_docs):
            raise IndexFormatError(f"{pid_path} does not match the index's codes; the index is damaged")
    return ivf_offsets, ivf_docs
