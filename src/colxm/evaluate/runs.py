"""TREC run files: ``qid Q0 docid rank score tag``, one line per retrieved document."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Mapping

from colxm.errors import InputError


def _check_token(value: str, what: str) -> str:
    value = str(value)
    if not value or any(c.isspace() for c in value):
        raise InputError(f"{what} {value!r} is empty or contains whitespace, which a TREC run file cannot hold")
    return value


def write_trec_run(run: Mapping[str, Mapping[str, float]], path: str | Path, tag: str = "colxm") -> Path:
    """Write ``{qid: {docid: score}}`` as a TREC run (documents by descending score, ranks from 1).
    The file is written to a temporary name and renamed, so it is never half-written."""
    path = Path(path)
    tag = _check_token(tag, "run tag")
    lines = []
    for qid, docs in run.items():
        qid = _check_token(qid, "query id")
        ranked = sorted(docs.items(), key=lambda item: (-item[1], item[0]))
        for rank, (did, score) in enumerate(ranked, 1):
            lines.append(f"{qid} Q0 {_check_token(did, 'document id')} {rank} {float(score):.6f} {tag}\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.writelines(lines)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_trec_run(path: str | Path) -> dict[str, dict[str, float]]:
    """Read a TREC run file into ``{qid: {docid: score}}``."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such run file")
    run: dict[str, dict[str, float]] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            cols = line.split()
            if not cols:
                continue
            if len(cols) != 6:
                raise InputError(f"{path}, line {lineno}: expected 'qid Q0 docid rank score tag', found {len(cols)} columns")
            try:
                score = float(cols[4])
            except ValueError:
                raise InputError(f"{path}, line {lineno}: score {cols[4]!r} is not a number") from None
            run.setdefault(cols[0], {})[cols[2]] = score
    return run
