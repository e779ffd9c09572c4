"""ColBERTConfig: the model-side settings colbert-ai keeps in a checkpoint's ``artifact.metadata``.

Only the keys that change how text becomes vectors are typed fields; every other key found in
``artifact.metadata`` (training settings, colbert-ai's ``meta`` block, ...) is kept verbatim in
``extra`` so that a load → save round trip writes back what was read.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from colxm.errors import CheckpointError

METADATA_FILE = "artifact.metadata"

MARKER_SCHEMES = ("legacy", "current")
# colbert-ai <= 0.2.20 made room for the marker by prefixing ". " and overwriting position 1; the
# change to inserting the marker after [CLS]/<s> (stanford-futuredata/ColBERT PR #362) was merged
# on 2024-08-20 and released in 0.2.21. A checkpoint trained before that used the legacy scheme.
MARKER_SCHEME_CHANGE_DATE = "2024-08-20"

# Our own key in artifact.metadata (colbert-ai ignores unknown keys when loading).
MARKER_SCHEME_KEY = "colxm_marker_scheme"


@dataclass
class ColBERTConfig:
    """How a ColBERT checkpoint turns text into token vectors (mirrors colbert-ai's names)."""

    dim: int = 128
    query_maxlen: int = 32
    doc_maxlen: int = 220
    mask_punctuation: bool = True
    attend_to_mask_tokens: bool = False
    query_token_id: str = "[unused0]"
    doc_token_id: str = "[unused1]"
    query_token: str = "[Q]"
    doc_token: str = "[D]"
    similarity: str = "cosine"
    model_name: str | None = None
    marker_scheme: str = "current"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.marker_scheme not in MARKER_SCHEMES:
            raise CheckpointError(
                f"marker_scheme must be one of {MARKER_SCHEMES}, got {self.marker_scheme!r}"
            )
        if self.similarity != "cosine":
            raise CheckpointError(
                f"similarity {self.similarity!r} is not supported (only 'cosine', as in ColBERTv2)"
            )
        for name in ("dim", "query_maxlen", "doc_maxlen"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < (1 if name == "dim" else 4):
                raise CheckpointError(f"{name} must be a positive integer, got {value!r}")

    # ---- artifact.metadata <-> dataclass -------------------------------------------------------
    @classmethod
    def from_metadata(cls, meta: dict[str, Any], *, default_scheme: str | None = None,
                      undated_scheme: str = "current") -> "ColBERTConfig":
        """Build from a parsed artifact.metadata dict.

        The marker scheme is our recorded key when present; otherwise ``default_scheme`` if given;
        otherwise inferred from the date colbert-ai records (legacy before 0.2.21); otherwise
        ``undated_scheme``.
        """
        if not isinstance(meta, dict):
            raise CheckpointError(f"{METADATA_FILE} must hold a JSON object, got {type(meta).__name__}")
        if isinstance(meta.get("config"), dict):  # older colbert-ai wrote {"config": {...}, ...}
            meta = {**meta["config"], **{k: v for k, v in meta.items() if k != "config"}}
        names = {f.name for f in dataclasses.fields(cls)} - {"extra", "marker_scheme"}
        kwargs: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for key, value in meta.items():
            if key in names:
                kwargs[key] = value
            elif key != MARKER_SCHEME_KEY:
                extra[key] = value
        scheme = (meta.get(MARKER_SCHEME_KEY) or default_scheme or infer_marker_scheme(meta)
                  or undated_scheme)
        try:
            return cls(**kwargs, marker_scheme=scheme, extra=extra)
        except TypeError as exc:  # wrong value types in the JSON
            raise CheckpointError(f"malformed {METADATA_FILE}: {exc}") from exc

    def to_metadata(self) -> dict[str, Any]:
        """The JSON object written to artifact.metadata (colbert-ai reads it as its ColBERTConfig)."""
        out = dict(self.extra)
        for f in dataclasses.fields(self):
            if f.name in ("extra", "marker_scheme"):
                continue
            out[f.name] = getattr(self, f.name)
        out[MARKER_SCHEME_KEY] = self.marker_scheme
        return out

    @classmethod
    def load(cls, folder: str | Path, *, default_scheme: str | None = None,
             undated_scheme: str = "current") -> "ColBERTConfig":
        path = Path(folder) / METADATA_FILE
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise CheckpointError(f"{path} is missing") from exc
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CheckpointError(
                f"{path} is not valid JSON ({exc}); restore it from the original checkpoint"
            ) from exc
        return cls.from_metadata(meta, default_scheme=default_scheme, undated_scheme=undated_scheme)

    def save(self, folder: str | Path) -> None:
        path = Path(folder) / METADATA_FILE
        path.write_text(json.dumps(self.to_metadata(), indent=4, sort_keys=False) + "\n", encoding="utf-8")


def infer_marker_scheme(meta: dict[str, Any]) -> str | None:
    """The marker scheme a colbert-ai checkpoint was trained with, from the dates it records.

    colbert-ai writes ``meta.current_datetime`` (e.g. "Feb 14, 2024 ; 10:12AM CET (+0100)") and
    ``meta.git_commit_datetime`` ("2024-02-05 15:40:12-08:00"). None when there is no date.
    """
    info = meta.get("meta") if isinstance(meta.get("meta"), dict) else {}
    # current_datetime is when the checkpoint was written (git_* describe the training script's repo).
    date = _iso_date(info.get("current_datetime")) or _iso_date(info.get("git_commit_datetime"))
    if date is None:
        return None
    return "legacy" if date < MARKER_SCHEME_CHANGE_DATE else "current"


_MONTHS = {m: i for i, m in enumerate(
    ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"], start=1)}


def _iso_date(value: Any) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    if len(text) >= 10 and text[4] == "-" and text[7] == "-" and text[:4].isdigit():
        return text[:10]
    parts = text.replace(",", " ").split()  # "Feb 14 2024 ; 10:12AM ..."
    if len(parts) >= 3 and parts[0][:3].lower() in _MONTHS and parts[1].isdigit() and parts[2].isdigit():
        return f"{int(parts[2]):04d}-{_MONTHS[parts[0][:3].lower()]:02d}-{int(parts[1]):02d}"
    return None
