"""Document store: external id, text, language and metadata of every row, in SQLite.

Each segment has its own ``docs.sqlite`` written once with the segment and never modified, so a
document's text and its vectors move in the same commit. Deletions are tombstones in the
manifest, not SQL deletes. Readers open the file read-only and ``immutable`` (no locks, no
journal), which is safe precisely because a committed file never changes.
"""
from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from colxm.errors import IndexFormatError, InputError

_SCHEMA = """
CREATE TABLE docs (
    row INTEGER PRIMARY KEY,
    doc_id TEXT NOT NULL,
    passage INTEGER NOT NULL,
    text TEXT NOT NULL,
    language TEXT,
    metadata TEXT
);
CREATE INDEX docs_doc_id ON docs(doc_id);
"""


@dataclass
class Record:
    """One input document (or passage): external id, text, optional language, metadata."""

    id: str
    text: str
    language: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class Hit:
    """One search result: a document, scored by its best passage."""

    id: str
    score: float
    text: str
    language: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    passage: int = 0


def to_record(item: Any, position: int) -> Record:
    """Accept a dict with "id" and "text" (optional "language"; other keys are metadata) or an
    (id, text) pair; InputError naming the position otherwise."""
    if isinstance(item, Record):
        return item
    if isinstance(item, dict):
        if "id" not in item or "text" not in item:
            raise InputError(f"document #{position} needs 'id' and 'text' keys, got {sorted(item)}")
        meta = {k: v for k, v in item.items() if k not in ("id", "text", "language")}
        doc_id, text, lang = item["id"], item["text"], item.get("language")
    elif isinstance(item, (tuple, list)) and len(item) == 2:
        doc_id, text, lang, meta = item[0], item[1], None, {}
    else:
        raise InputError(
            f"document #{position} must be a dict with 'id' and 'text' or an (id, text) pair, "
            f"not {type(item).__name__}"
        )
    if doc_id is None or isinstance(doc_id, (dict, list, tuple, bytes)):
        raise InputError(f"document #{position} has an invalid id {doc_id!r}")
    if not isinstance(text, str):
        raise InputError(f"document {doc_id!r} (#{position}): text must be a string")
    if lang is not None and not isinstance(lang, str):
        raise InputError(f"document {doc_id!r}: language must be a string code such as 'de'")
    return Record(str(doc_id), text, lang, meta)


def iter_records(documents: Iterable[Any]) -> Iterator[Record]:
    for i, item in enumerate(documents):
        yield to_record(item, i)


def dump_metadata(rec: Record) -> str:
    """A record's metadata as JSON; InputError naming the document when it cannot be."""
    try:
        return json.dumps(rec.metadata, ensure_ascii=False, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise InputError(f"metadata of document {rec.id!r} is not JSON-serialisable: {e}") from None


class StoreWriter:
    """Writes one segment's ``docs.sqlite`` (in a temp folder; made durable by the caller)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._con = sqlite3.connect(self.path)
        self._con.execute("PRAGMA journal_mode=OFF")
        self._con.execute("PRAGMA synchronous=OFF")
        self._con.executescript(_SCHEMA)
        self.num_rows = 0

    def add(self, rows: Sequence[tuple[Record, int]]) -> None:
        """Append rows (record, passage number); row numbers continue from the last one."""
        data = []
        for rec, passage in rows:
            data.append((self.num_rows, rec.id, passage, rec.text, rec.language, dump_metadata(rec)))
            self.num_rows += 1
        self._con.executemany("INSERT INTO docs VALUES (?, ?, ?, ?, ?, ?)", data)

    def add_raw(self, rows: Iterable[tuple]) -> None:
        """Append rows given as (doc_id, passage, text, language, metadata_json) (for merging)."""
        data = []
        for doc_id, passage, text, language, meta in rows:
            data.append((self.num_rows, doc_id, passage, text, language, meta))
            self.num_rows += 1
        self._con.executemany("INSERT INTO docs VALUES (?, ?, ?, ?, ?, ?)", data)

    def close(self) -> None:
        self._con.commit()
        self._con.close()


class StoreReader:
    """Read-only view of one committed segment's ``docs.sqlite``."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise IndexFormatError(f"document store {self.path} is missing; the index is corrupted")
        uri = f"file:{self.path.as_posix()}?mode=ro&immutable=1"
        try:
            self._con = sqlite3.connect(uri, uri=True, check_same_thread=False)
            # Touch the file now: the connection then holds it open even if a writer later
            # removes it as garbage, so this snapshot stays readable.
            self.num_rows = int(self._con.execute("SELECT count(*) FROM docs").fetchone()[0])
        except sqlite3.DatabaseError as e:
            raise IndexFormatError(f"document store {self.path} is unreadable ({e})") from None

    def close(self) -> None:
        self._con.close()

    def id_rows(self) -> Iterator[tuple[int, str]]:
        yield from self._con.execute("SELECT row, doc_id FROM docs ORDER BY row")

    def raw_rows(self, start: int, stop: int) -> list[tuple]:
        """Rows [start, stop) as (row, doc_id, passage, text, language, metadata_json)."""
        return self._con.execute(
            "SELECT row, doc_id, passage, text, language, metadata FROM docs "
            "WHERE row >= ? AND row < ? ORDER BY row",
            (start, stop),
        ).fetchall()

    def fetch(self, rows: Sequence[int]) -> dict[int, tuple[str, int, str, str | None, dict]]:
        """row -> (doc_id, passage, text, language, metadata) for the given rows."""
        out: dict[int, tuple] = {}
        rows = list(dict.fromkeys(int(r) for r in rows))
        for i in range(0, len(rows), 900):  # stay below SQLite's bound-parameter limit
            part = rows[i : i + 900]
            q = ",".join("?" * len(part))
            for row, doc_id, passage, text, lang, meta in self._con.execute(
                f"SELECT row, doc_id, passage, text, language, metadata FROM docs WHERE row IN ({q})",
                part,
            ):
                out[row] = (doc_id, passage, text, lang, json.loads(meta) if meta else {})
        return out

    def doc_ids(self, rows: Sequence[int]) -> list[str]:
        got = self.fetch(rows)
        return [got[int(r)][0] for r in rows]

    def filter_mask(self, where: dict[str, Any]) -> np.ndarray:
        """Bool mask [num_rows]: rows whose fields equal the given values (a list = any of)."""
        clauses, params = [], []
        for key, value in where.items():
            if key == "id":
                column = "doc_id"
            elif key == "language":
                column = "language"
            else:
                column = "json_extract(metadata, ?)"
                params.append('$."' + str(key).replace('"', '\\"') + '"')
            values = list(value) if isinstance(value, (list, tuple, set)) else [value]
            for v in values:
                if not isinstance(v, (str, int, float, bool)) or v is None:
                    raise InputError(f"filter value for {key!r} must be a string or number, not {v!r}")
            clauses.append(f"{column} IN ({','.join('?' * len(values))})")
            params.extend(int(v) if isinstance(v, bool) else v for v in values)
        mask = np.zeros(self.num_rows, dtype=bool)
        sql = "SELECT row FROM docs" + (" WHERE " + " AND ".join(clauses) if clauses else "")
        rows = [r for (r,) in self._con.execute(sql, params)]
        mask[np.asarray(rows, dtype=np.int64)] = True
        return mask
