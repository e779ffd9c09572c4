"""Read document collections, queries and relevance judgements from the formats people have.

Documents come out as plain dicts ``{"id": str, "text": str, "title"?: str, "language"?: str,
...metadata}`` in file order, streamed (a large collection is never held in memory). Every
problem is an :class:`~colxm.errors.InputError` naming the file and, where there is one, the line.

Formats (``fmt="auto"`` picks by name and content):
  * ``beir``   BEIR ``corpus.jsonl`` (``{"_id", "title", "text", ...}``), or a BEIR folder holding it
  * ``jsonl``  one JSON object per line, any fields (id/text field names given or auto-detected)
  * ``json``   one JSON array of such objects
  * ``tsv``    ``id<TAB>text[<TAB>title]``, with or without a header row (a header names the columns)
  * ``folder`` a folder of ``.txt`` / ``.md`` files; the id is the path relative to the folder
Other fields are kept as metadata (one that would clash with id/text/title/language, say an
``id`` column when another field is the id, is kept as ``orig_id``). A ``.gz`` suffix on jsonl/json/tsv files is read transparently.
"""
from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from colxm.errors import InputError

ID_FIELDS = ("id", "_id", "docid", "doc_id", "doc-id", "pid", "qid", "query_id", "query-id", "uuid", "key")
TEXT_FIELDS = ("text", "contents", "content", "body", "passage", "document", "abstract", "query", "question")
LANGUAGE_FIELDS = ("language", "lang", "locale")
RESERVED = ("id", "text", "title", "language")
FORMATS = ("auto", "beir", "jsonl", "json", "tsv", "folder")
FOLDER_SUFFIXES = (".txt", ".md")


@dataclass(frozen=True)
class CollectionFormat:
    """How to read a collection file. ``None`` field names mean: detect them from the data."""

    fmt: str = "auto"
    id_field: str | None = None
    text_field: str | None = None
    title_field: str | None = "title"
    language_field: str | None = None
    encoding: str = "utf-8"


def _open_text(path: Path, encoding: str):
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding=encoding, newline="")
    return open(path, encoding=encoding, newline="")


def _strip_gz(path: Path) -> str:
    name = path.name.lower()
    return name[:-3] if name.endswith(".gz") else name


def detect_format(path: str | Path) -> str:
    """The collection format of ``path`` (see the module docstring)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.is_dir():
        if (path / "corpus.jsonl").is_file() or (path / "corpus.jsonl.gz").is_file():
            return "beir"
        return "folder"
    name = _strip_gz(path)
    if name.endswith((".jsonl", ".ndjson")):
        return "beir" if name.startswith("corpus") else "jsonl"
    if name.endswith(".json"):
        return "json"
    if name.endswith((".tsv", ".txt", ".tab")):
        return "tsv"
    raise InputError(
        f"{path}: cannot tell the collection format from the name; use a .jsonl, .json, .tsv file "
        "or a folder, or pass the format explicitly"
    )


def load_collection(path: str | Path, fmt: str = "auto", *, id_field: str | None = None,
                    text_field: str | None = None, title_field: str | None = "title",
                    language_field: str | None = None, encoding: str = "utf-8") -> Iterator[dict]:
    """Stream the documents of a collection as ``{"id", "text", ...}`` dicts (see module doc)."""
    spec = CollectionFormat(fmt, id_field, text_field, title_field, language_field, encoding)
    if fmt not in FORMATS:
        raise InputError(f"unknown collection format {fmt!r}; choose one of {', '.join(FORMATS)}")
    path = Path(path)
    kind = detect_format(path) if fmt == "auto" else fmt
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if kind == "folder":
        return _read_folder(path, spec)
    if path.is_dir():
        if kind != "beir":
            raise InputError(f"{path} is a folder; a {kind} collection is a file")
        path = path / "corpus.jsonl" if (path / "corpus.jsonl").is_file() else path / "corpus.jsonl.gz"
        if not path.is_file():
            raise InputError(f"{path.parent}: no corpus.jsonl in this folder, so it is not a BEIR dataset")
    if kind in ("beir", "jsonl"):
        return _records_to_docs(read_jsonl_records(path, encoding), path, spec)
    if kind == "json":
        return _records_to_docs(_read_json_array(path, encoding), path, spec, unit="item")
    return _read_tsv(path, spec)


# ---------------------------------------------------------------------------- record readers

def read_jsonl_records(path: Path, encoding: str = "utf-8") -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line of a JSONL file; errors name file and line."""
    try:
        with _open_text(path, encoding) as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise InputError(f"{path}, line {lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
                if not isinstance(obj, dict):
                    raise InputError(f"{path}, line {lineno}: expected a JSON object, got {type(obj).__name__}")
                yield lineno, obj
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not {encoding} text ({e.reason}); convert it or pass the right encoding") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror or e})") from None


def _read_json_array(path: Path, encoding: str) -> Iterator[tuple[int, dict]]:
    try:
        with _open_text(path, encoding) as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise InputError(f"{path}, line {e.lineno}: not valid JSON ({e.msg})") from None
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not {encoding} text ({e.reason})") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror or e})") from None
    if not isinstance(data, list):
        raise InputError(f"{path}: expected a JSON array of objects")
    for i, obj in enumerate(data):
        if not isinstance(obj, dict):
            raise InputError(f"{path}, item {i}: expected a JSON object, got {type(obj).__name__}")
        yield i, obj


def _pick(fields, candidates, given: str | None, what: str, where: str, flag: str) -> str | None:
    if given is not None:
        return given
    for name in candidates:
        if name in fields:
            return name
    if what == "language":
        return None
    raise InputError(
        f"{where}: no {what} field found (looked for {', '.join(candidates)}; fields here: "
        f"{', '.join(map(str, fields)) or 'none'}); name it with {flag}"
    )


def _as_id(value, where: str, field: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InputError(f"{where}: id field {field!r} must be a string or an integer, got {type(value).__name__}")
    value = str(value)
    if not value.strip():
        raise InputError(f"{where}: empty id in field {field!r}")
    return value


def _records_to_docs(records, path: Path, spec: CollectionFormat, *, unit: str = "line") -> Iterator[dict]:
    id_f = text_f = lang_f = None
    for pos, obj in records:
        where = f"{path}, {unit} {pos}"
        if id_f is None:  # field names are fixed by the first record, then required on every one
            id_f = _pick(obj, ID_FIELDS, spec.id_field, "id", where, "--id-field")
            text_f = _pick(obj, TEXT_FIELDS, spec.text_field, "text", where, "--text-field")
            lang_f = _pick(obj, LANGUAGE_FIELDS, spec.language_field, "language", where, "--language-field")
        if id_f not in obj:
            raise InputError(f"{where}: missing id field {id_f!r}")
        if text_f not in obj:
            raise InputError(f"{where}: missing text field {text_f!r}")
        text = obj[text_f]
        if text is None:
            text = ""
        if not isinstance(text, str):
            raise InputError(f"{where}: text field {text_f!r} must be a string, got {type(text).__name__}")
        doc = {"id": _as_id(obj[id_f], where, id_f), "text": text}
        for key, value in obj.items():
            if key in (id_f, text_f):
                continue
            if key == spec.title_field:
                if value:  # BEIR writes "" for no title
                    doc["title"] = str(value)
            elif key == lang_f:
                if value:
                    doc["language"] = str(value)
            elif key in RESERVED:  # e.g. an "id" column when --id-field names another one
                doc["orig_" + key] = value
            else:
                doc[key] = value
        yield doc


def _split_tsv_line(line: str) -> list[str]:
    return line.rstrip("\r\n").split("\t")


def _is_header(cols: list[str]) -> bool:
    low = [c.strip().lower() for c in cols]
    return len(low) >= 2 and low[0] in ID_FIELDS and low[1] in TEXT_FIELDS + ("title",)


def _read_tsv(path: Path, spec: CollectionFormat) -> Iterator[dict]:
    def records():
        names = None
        try:
            with _open_text(path, spec.encoding) as f:
                for lineno, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    cols = _split_tsv_line(line)
                    if names is None and lineno == 1 and _is_header(cols):
                        names = [c.strip() for c in cols]
                        continue
                    if names is None:
                        names = ["id", "text", "title"]
                    if len(cols) < 2:
                        raise InputError(
                            f"{path}, line {lineno}: expected id<TAB>text[<TAB>title], found no tab"
                        )
                    if len(cols) > len(names):
                        raise InputError(
                            f"{path}, line {lineno}: {len(cols)} columns, but the file has {len(names)} "
                            "(a tab inside a text field?)"
                        )
                    yield lineno, dict(zip(names, cols))
        except UnicodeDecodeError as e:
            raise InputError(f"{path}: not {spec.encoding} text ({e.reason})") from None
        except OSError as e:
            raise InputError(f"{path}: cannot read ({e.strerror or e})") from None

    return _records_to_docs(records(), path, spec)


def _read_folder(path: Path, spec: CollectionFormat) -> Iterator[dict]:
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in FOLDER_SUFFIXES
                   and not any(part.startswith(".") for part in p.relative_to(path).parts))
    if not files:
        raise InputError(f"{path}: no .txt or .md files in this folder (nor a BEIR corpus.jsonl)")
    for file in files:
        try:
            text = file.read_text(encoding=spec.encoding)
        except UnicodeDecodeError as e:
            raise InputError(f"{file}: not {spec.encoding} text ({e.reason})") from None
        except OSError as e:
            raise InputError(f"{file}: cannot read ({e.strerror or e})") from None
        doc = {"id": file.relative_to(path).as_posix(), "text": text}
        if file.suffix.lower() == ".md":
            for line in text.splitlines():
                if line.startswith("# "):
                    doc["title"] = line[2:].strip()
                    break
        yield doc


# ---------------------------------------------------------------------------- queries and qrels

def load_queries(path: str | Path, *, id_field: str | None = None, text_field: str | None = None,
                 encoding: str = "utf-8") -> dict[str, str]:
    """Queries as ``{query id: text}`` in file order: BEIR ``queries.jsonl`` (or a BEIR folder),
    any JSONL with id/text fields, or a TSV ``qid<TAB>text`` (header optional)."""
    path = Path(path)
    if path.is_dir():
        path = path / "queries.jsonl"
    fmt = detect_format(path)
    if fmt == "beir":
        fmt = "jsonl"
    if fmt not in ("jsonl", "json", "tsv"):
        raise InputError(f"{path}: queries must be a .jsonl, .json or .tsv file")
    queries: dict[str, str] = {}
    for doc in load_collection(path, fmt, id_field=id_field, text_field=text_field, title_field=None,
                               encoding=encoding):
        if doc["id"] in queries:
            raise InputError(f"{path}: query id {doc['id']!r} appears twice")
        queries[doc["id"]] = doc["text"]
    if not queries:
        raise InputError(f"{path}: no queries in this file")
    return queries


def load_qrels(path: str | Path, encoding: str = "utf-8") -> dict[str, dict[str, int]]:
    """Relevance judgements ``{query id: {doc id: grade}}`` from a BEIR ``qrels/*.tsv``
    (``query-id corpus-id score``, header optional), a TREC qrels file (``qid iter docid rel``),
    or a BEIR folder (``qrels/test.tsv``). Columns may be separated by tabs or spaces."""
    path = Path(path)
    if path.is_dir():
        path = path / "qrels" / "test.tsv"
    if not path.is_file():
        raise InputError(f"{path}: no such qrels file")
    qrels: dict[str, dict[str, int]] = {}
    try:
        with _open_text(path, encoding) as f:
            for lineno, line in enumerate(f, 1):
                cols = line.split()
                if not cols:
                    continue
                if len(cols) == 3:
                    qid, did, grade = cols
                elif len(cols) == 4:
                    qid, _, did, grade = cols
                else:
                    raise InputError(
                        f"{path}, line {lineno}: expected 'query-id doc-id score' (BEIR) or "
                        f"'query-id 0 doc-id relevance' (TREC), found {len(cols)} columns"
                    )
                try:
                    value = int(float(grade))
                except ValueError:
                    if lineno == 1:  # header row
                        continue
                    raise InputError(f"{path}, line {lineno}: relevance {grade!r} is not a number") from None
                qrels.setdefault(qid, {})[did] = value
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not {encoding} text ({e.reason})") from None
    if not qrels:
        raise InputError(f"{path}: no relevance judgements in this file")
    return qrels


def sample_collection_path() -> Path:
    """The folder of the small multilingual sample collection shipped with colxm
    (``corpus.jsonl``, ``queries.jsonl``, ``qrels.tsv``)."""
    return Path(__file__).resolve().parent / "data" / "sample"
