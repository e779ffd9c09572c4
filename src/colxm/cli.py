"""The `colxm` command: index a collection, search it, evaluate it, keep it up to date.

Every error is one line on stderr starting with ``error:`` (no traceback, no usage panel):
exit code 2 for a bad command line (missing argument, unknown option or command, bad option
value), 1 for a failure while working (missing file, malformed collection, not an index).
The library's own writes are atomic, so an interrupted or failed command leaves the index as it was.
"""
from __future__ import annotations

import functools
import json
import logging
import re
import sys
from pathlib import Path
from typing import List, Optional

import numpy as np
import typer
from typer.core import TyperGroup

from colxm import __version__
from colxm.errors import ColxmError, InputError, LanguageError

try:  # typer >= 0.2x ships its own copy of click; older typer uses click itself
    from typer._click import exceptions as click_exceptions
    from typer._click.globals import get_current_context as click_get_current_context
except ImportError:  # pragma: no cover - depends on the installed typer
    from click import exceptions as click_exceptions
    from click import get_current_context as click_get_current_context

log = logging.getLogger("colxm")
USAGE_EXIT = 2


class OptionError(InputError):
    """A bad option or argument value found before any work is done (exit code 2)."""


class LanguageOptionError(LanguageError, OptionError):
    """An unknown --lang code."""


def _one_line(message: str) -> str:
    message = " ".join(str(message).split()).rstrip(".")
    return message[:1].lower() + message[1:]


def usage_message(e: Exception, command_path: Optional[str]) -> str:
    """``error: <problem>; see <command> --help`` for a command-line mistake."""
    param = getattr(e, "param", None)
    if isinstance(e, click_exceptions.MissingParameter) and param is not None:
        if param.param_type_name == "argument":
            text = f"missing argument {param.name.upper()}"
        else:
            text = f"missing option {' / '.join(param.opts)}"
    elif isinstance(e, click_exceptions.ClickException):
        text = _one_line(e.format_message())
    else:
        text = _one_line(str(e))
    return f"error: {text}" + (f"; see {command_path} --help" if command_path else "")


class OneLineErrors(TyperGroup):
    """The colxm command group: click's usage errors (missing argument, unknown option or
    command, bad option value) become one ``error:`` line and exit code 2 instead of the
    usage panel; the `train` sub-app's commands are part of this group, so they get it too."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click_exceptions.NoArgsIsHelpError as e:  # bare `colxm`: the help text is the answer
            e.show()
            sys.exit(e.exit_code)
        except click_exceptions.UsageError as e:
            path = e.ctx.command_path if e.ctx is not None else self._command_path(args, prog_name)
            typer.echo(usage_message(e, path), err=True)
            sys.exit(USAGE_EXIT)
        except click_exceptions.ClickException as e:
            typer.echo(f"error: {_one_line(e.format_message())}", err=True)
            sys.exit(e.exit_code)
        except typer.Abort:
            typer.echo("error: aborted", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)  # a typer.Exit's code, or 0

    def _command_path(self, args, prog_name) -> str:
        """'colxm <command>' for errors click raises before it has a context (an option that
        lacks its value)."""
        args = list(sys.argv[1:] if args is None else args)
        sub = next((a for a in args if a in self.commands), None)
        return " ".join(x for x in (prog_name or self.name or "colxm", sub) if x)


app = typer.Typer(cls=OneLineErrors, name="colxm", add_completion=False, no_args_is_help=True,
                  pretty_exceptions_enable=False, help="Multilingual late-interaction retrieval.")

DEFAULT_MODEL = "default"
MODEL_HELP = ("model: 'default' (multilingual-e5-small + ColBERT projection, built offline on first "
              "use), a local ColBERT folder, or a Hugging Face id such as antoinelouis/colbert-xm")


def _fail(message: str, code: int = 1) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def handles_errors(fn):
    """Turn colxm errors (and file-system errors) into a one-line message and exit code 1
    (2 for an OptionError: a bad value on the command line)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except OptionError as e:
            ctx = click_get_current_context(silent=True)
            typer.echo(usage_message(e, ctx.command_path if ctx is not None else None), err=True)
            raise typer.Exit(USAGE_EXIT)
        except ColxmError as e:
            _fail(str(e))
        except OSError as e:
            _fail(f"{e.filename + ': ' if getattr(e, 'filename', None) else ''}{e.strerror or e}")
        except KeyboardInterrupt:
            _fail("interrupted (the index is unchanged unless a commit had completed)", 130)
    return wrapper


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-v", help="log progress details")) -> None:
    """colxm: index documents in any language and search them with late interaction."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s",
                        stream=sys.stderr)


@app.command()
def version() -> None:
    """Print the colxm version."""
    typer.echo(__version__)


# ---------------------------------------------------------------------------- helpers

def load_encoder(model: str, language: Optional[str] = None):
    """An Encoder for --model ('default' builds the offline default model on first use)."""
    from colxm.modeling.encoder import Encoder

    if model == DEFAULT_MODEL:
        from colxm.modeling.default_model import default_model_path

        model = str(default_model_path())
    return Encoder.from_pretrained(model)


def check_language(lang: Optional[str]) -> Optional[str]:
    """None/'auto' or a plausible language code (ISO 639-1/3, optionally with a region, or an
    XMOD code); the model checks that it has the language when it encodes."""
    if lang is None or lang == "auto":
        return lang
    from colxm.modeling.languages import resolve_alias

    if not re.fullmatch(r"[A-Za-z]{2,3}([_-][A-Za-z]{2,4})?", lang):
        raise LanguageOptionError(f"unknown language {lang!r}: give a code like 'de', 'pt_BR' or 'auto'")
    iso = resolve_alias(lang).replace("-", "_").split("_")[0].lower()
    if iso not in _known_languages():
        raise LanguageOptionError(f"unknown language {lang!r}: give a code like 'de', 'pt_BR' or 'auto'")
    return lang


@functools.lru_cache(maxsize=1)
def _known_languages() -> frozenset:
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    codes = set(LanguageIdentifier.from_model_file(MODEL_FILE).labels)
    # XMOD adapters py3langid does not detect (ColBERT-XM's 81 languages, by ISO prefix)
    codes |= {"as", "bn", "ceb", "ckb", "fa", "gu", "ha", "hy", "ig", "kk", "km", "kn", "ky", "lo",
              "mk", "mn", "my", "ne", "or", "pa", "ps", "sa", "sd", "si", "so", "sr", "sw", "ta",
              "te", "tg", "tl", "uz", "yo", "zu", "no", "he", "id"}
    return frozenset(codes)


def parse_where(items: Optional[List[str]]) -> Optional[dict]:
    """FIELD=VALUE filters; a repeated field means any of its values; numbers match numbers too."""
    if not items:
        return None
    where: dict = {}
    for item in items:
        field, sep, value = item.partition("=")
        if not sep or not field.strip():
            raise OptionError(f"--where expects FIELD=VALUE, got {item!r}")
        values = [value]
        if re.fullmatch(r"-?\d+", value):
            values.append(int(value))
        elif re.fullmatch(r"-?\d+\.\d*", value):
            values.append(float(value))
        where.setdefault(field.strip(), []).extend(values)
    return where


def check_k(k: int, name: str = "-k") -> None:
    if k <= 0:
        raise OptionError(f"{name} must be a positive number of results, got {k}")


def open_index(path: Path, model: Optional[str] = None):
    from colxm.index.index import Index

    if not Path(path).exists():
        raise InputError(f"{path}: no such index folder")
    encoder = load_encoder(model) if model else None
    return Index.open(path, encoder=encoder)


def read_documents(collection: Path, fmt: str, id_field, text_field, title: bool = True):
    """Documents of a collection; with ``title``, a document's title is put before its text
    (as BEIR evaluations do), so that it is searchable and shows in snippets."""
    from colxm.collections import load_collection

    docs = load_collection(collection, fmt, id_field=id_field, text_field=text_field)
    if not title:
        return docs
    return ({**d, "text": f"{d['title']}\n{d['text']}"} if d.get("title") and d["text"].strip() else d
            for d in docs)


def summary_line(summary) -> str:
    parts = [f"{summary.indexed} documents indexed ({summary.passages} passages)"]
    if getattr(summary, "replaced", 0):
        parts.append(f"{summary.replaced} replaced")
    if getattr(summary, "duplicates", 0):
        parts.append(f"{summary.duplicates} duplicate ids (last copy kept; e.g. {', '.join(summary.duplicate_ids[:3])})")
    if getattr(summary, "empty", 0):
        parts.append(f"{summary.empty} empty texts not indexed (e.g. {', '.join(summary.empty_ids[:3])})")
    return "; ".join(parts)


def snippet(text: str, width: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1].rstrip() + "…"


# ---------------------------------------------------------------------------- index / search

FORMAT_HELP = "collection format: auto, beir, jsonl, json, tsv, folder"


@app.command("index")
@handles_errors
def index_command(
    collection: Path = typer.Argument(..., help="BEIR corpus.jsonl or folder, TSV, JSONL, or a folder of .txt/.md"),
    index: Path = typer.Option(..., "--index", "-i", help="index folder to create"),
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help=MODEL_HELP),
    nbits: int = typer.Option(2, "--nbits", help="bits per dimension of the compressed residuals: 1, 2 or 4"),
    lang: Optional[str] = typer.Option(None, "--lang", help="documents' language: auto (detect), a code, or none (a 'language' field per document is used when present)"),
    passage_tokens: Optional[int] = typer.Option(None, "--passage-tokens", help="split documents into passages of at most N tokens (default: the model's document length)"),
    passage_overlap: int = typer.Option(0, "--passage-overlap", help="tokens shared by consecutive passages"),
    fmt: str = typer.Option("auto", "--format", help=FORMAT_HELP),
    id_field: Optional[str] = typer.Option(None, "--id-field", help="JSONL/TSV-header field holding the id"),
    text_field: Optional[str] = typer.Option(None, "--text-field", help="JSONL/TSV-header field holding the text"),
    title: bool = typer.Option(True, "--title/--no-title", help="put each document's title (when it has one) before its text"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing index (atomically)"),
    full_vectors: bool = typer.Option(False, "--full-vectors", help="also store every token vector in float16 (2 x dim bytes each, 8x the residuals at 2 bits) so that search re-scores its final candidates exactly, as uncompressed MaxSim"),
) -> None:
    """Build an index from a collection."""
    from colxm.index.index import Index
    from colxm.index.manifest import IndexConfig

    lang = check_language(lang)
    if nbits not in (1, 2, 4):
        raise OptionError(f"--nbits must be 1, 2 or 4, got {nbits}")
    if passage_tokens is not None and passage_tokens < 8:
        raise OptionError(f"--passage-tokens must be at least 8, got {passage_tokens}")
    if passage_overlap < 0:
        raise OptionError(f"--passage-overlap must be >= 0, got {passage_overlap}")
    docs = read_documents(collection, fmt, id_field, text_field, title)
    encoder = load_encoder(model)
    if passage_tokens is None:
        passage_tokens = max(8, encoder.config.doc_maxlen - 3)  # [CLS], [D] marker, [SEP] fit too
    if passage_overlap >= passage_tokens:
        raise OptionError(f"--passage-overlap ({passage_overlap}) must be smaller than --passage-tokens ({passage_tokens})")
    config = IndexConfig(nbits=nbits, passage_max_tokens=passage_tokens, passage_overlap=passage_overlap,
                         full_vectors=full_vectors)
    built = Index.build(index, docs, encoder=encoder, config=config, languages=lang, overwrite=overwrite)
    typer.echo(f"{index}: {summary_line(built.last_summary)}")


@app.command("search")
@handles_errors
def search_command(
    index: Path = typer.Argument(..., help="index folder"),
    query: str = typer.Argument(..., help="the query, in any language"),
    k: int = typer.Option(10, "-k", "--k", help="number of documents"),
    lang: Optional[str] = typer.Option(None, "--lang", help="query language: auto, a code, or none"),
    where: Optional[List[str]] = typer.Option(None, "--where", help="FIELD=VALUE filter (repeatable; id, language or a metadata field)"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
    explain: bool = typer.Option(False, "--explain", help="show which document token each query token matched"),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="override the model recorded in the index"),
) -> None:
    """Search an index; print ranked documents with scores and snippets."""
    check_k(k)
    lang = check_language(lang)
    if not query.strip():
        raise OptionError("the query is empty")
    filters = parse_where(where)
    idx = open_index(index, model)
    hits = idx.search(query, k=k, languages=lang, where=filters)[0]
    if explain:
        from colxm.explain import explain_hit, format_explanation

        explanations = [explain_hit(idx.encoder, query, lang, h) for h in hits]
    if as_json:
        out = {"query": query, "results": [
            {"rank": r, "id": h.id, "score": h.score, "language": h.language, "passage": h.passage,
             "text": h.text, "metadata": h.metadata,
             **({"explain": explanations[r - 1]} if explain else {})}
            for r, h in enumerate(hits, 1)]}
        typer.echo(json.dumps(out, ensure_ascii=False, indent=2))
        return
    if not hits:
        typer.echo("no results")
    for r, h in enumerate(hits, 1):
        title = h.metadata.get("title") if isinstance(h.metadata, dict) else None
        typer.echo(f"{r:>3}. {h.score:8.3f}  {h.id}  [{h.language or '?'}]" + (f"  {title}" if title else ""))
        typer.echo(f"     {snippet(h.text)}")
        if explain:
            typer.echo(format_explanation(explanations[r - 1]))


# ---------------------------------------------------------------------------- evaluate

@app.command("evaluate")
@handles_errors
def evaluate_command(
    index: Path = typer.Argument(..., help="index folder"),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="BEIR folder or ir_datasets name (gives queries and qrels)"),
    queries: Optional[Path] = typer.Option(None, "--queries", "-q", help="queries: BEIR queries.jsonl, JSONL or TSV"),
    qrels: Optional[Path] = typer.Option(None, "--qrels", "-r", help="qrels: BEIR qrels .tsv or TREC qrels"),
    depth: int = typer.Option(1000, "--depth", help="documents retrieved per query (R@1000 needs 1000)"),
    lang: Optional[str] = typer.Option(None, "--lang", help="query language: auto, a code, or none"),
    run_file: Optional[Path] = typer.Option(None, "--run-file", help="write the ranking as a TREC run file"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Evaluate an index: MRR@10, MRR@100, R@10/100/1000, nDCG@10, Success@5 (ir-measures)."""
    from colxm.evaluate import evaluate_run, load_eval_set, run_index, write_trec_run

    check_k(depth, "--depth")
    lang = check_language(lang)
    ev = load_eval_set(dataset, queries=queries, qrels=qrels)
    idx = open_index(index)
    run = run_index(idx, ev.queries, depth, lang)
    metrics = evaluate_run(run, ev.qrels)
    if run_file is not None:
        write_trec_run(run, run_file)
    if as_json:
        typer.echo(json.dumps({"index": str(index), "queries": len(ev.queries), **metrics}))
        return
    typer.echo(f"{len(ev.queries)} queries")
    for name, value in metrics.items():
        typer.echo(f"{name:>10}  {value:.4f}")
    if run_file is not None:
        typer.echo(f"run written to {run_file}")


# ---------------------------------------------------------------------------- updates

def _update(index: Path, collection: Path, fmt, id_field, text_field, lang, replace: bool,
            title: bool = True) -> None:
    lang = check_language(lang)
    docs = read_documents(collection, fmt, id_field, text_field, title)
    with open_index(index) as idx:
        summary = (idx.upsert if replace else idx.add)(docs, languages=lang)
    typer.echo(f"{index}: {summary_line(summary)}")


@app.command("add")
@handles_errors
def add_command(
    index: Path = typer.Argument(..., help="index folder"),
    collection: Path = typer.Argument(..., help="documents to add (same formats as `colxm index`)"),
    lang: Optional[str] = typer.Option(None, "--lang"),
    fmt: str = typer.Option("auto", "--format", help=FORMAT_HELP),
    id_field: Optional[str] = typer.Option(None, "--id-field"),
    text_field: Optional[str] = typer.Option(None, "--text-field"),
) -> None:
    """Add new documents (an id already in the index is an error: use upsert)."""
    _update(index, collection, fmt, id_field, text_field, lang, replace=False)


@app.command("upsert")
@handles_errors
def upsert_command(
    index: Path = typer.Argument(..., help="index folder"),
    collection: Path = typer.Argument(..., help="documents to add or replace"),
    lang: Optional[str] = typer.Option(None, "--lang"),
    fmt: str = typer.Option("auto", "--format", help=FORMAT_HELP),
    id_field: Optional[str] = typer.Option(None, "--id-field"),
    text_field: Optional[str] = typer.Option(None, "--text-field"),
) -> None:
    """Add documents, replacing those whose id is already in the index."""
    _update(index, collection, fmt, id_field, text_field, lang, replace=True)


@app.command("delete")
@handles_errors
def delete_command(
    index: Path = typer.Argument(..., help="index folder"),
    ids: Optional[List[str]] = typer.Argument(None, help="document ids"),
    ids_file: Optional[Path] = typer.Option(None, "--ids-file", help="file with one id per line"),
) -> None:
    """Delete documents by id."""
    all_ids = list(ids or [])
    if ids_file is not None:
        if not ids_file.is_file():
            raise InputError(f"{ids_file}: no such file")
        all_ids += [line.strip() for line in ids_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not all_ids:
        raise OptionError("give the ids to delete (arguments or --ids-file)")
    with open_index(index) as idx:
        summary = idx.delete(all_ids)
    typer.echo(f"{index}: {summary.deleted} documents deleted" + (f", {summary.not_found} ids not found" if summary.not_found else ""))


@app.command("optimize")
@handles_errors
def optimize_command(index: Path = typer.Argument(..., help="index folder")) -> None:
    """Merge all segments into one and drop deleted rows."""
    with open_index(index) as idx:
        idx.optimize()
        typer.echo(f"{index}: {idx.stats()['segments']} segment(s), {len(idx)} documents")


@app.command("reindex")
@handles_errors
def reindex_command(
    index: Path = typer.Argument(..., help="index folder"),
    force: bool = typer.Option(False, "--force", help="retrain the codec even if it still fits"),
) -> None:
    """Retrain the compression codec when the index has drifted from it (or --force)."""
    with open_index(index) as idx:
        report = idx.reindex(force=force)
    typer.echo(f"{index}: {'reindexed' if report.done else 'not reindexed'} ({report.reason})")


@app.command("verify")
@handles_errors
def verify_command(index: Path = typer.Argument(..., help="index folder")) -> None:
    """Check every file's checksum and the index invariants."""
    with open_index(index) as idx:
        problems = idx.verify()
    if problems:
        for p in problems:
            typer.echo(f"problem: {p}", err=True)
        _fail(f"{index}: {len(problems)} problem(s) found")
    typer.echo(f"{index}: ok")


@app.command("stats")
@handles_errors
def stats_command(index: Path = typer.Argument(..., help="index folder")) -> None:
    """Print the index's counts and settings as JSON."""
    with open_index(index) as idx:
        typer.echo(json.dumps(idx.stats(), indent=2, default=str))


@app.command("import-colbert")
@handles_errors
def import_colbert_command(
    colbert_index: Path = typer.Argument(..., help="a colbert-ai index folder (metadata.json, centroids.pt, 0.codes.pt, ...)"),
    index: Path = typer.Option(..., "--index", "-i", help="colxm index folder to create"),
    collection: Optional[Path] = typer.Option(None, "--collection", help="the collection the index was built from, in the same order (TSV/JSONL): ids and texts; without it ids are colbert-ai's passage numbers and texts are empty"),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="the ColBERT model that built it (recorded for text queries)"),
    fmt: str = typer.Option("auto", "--format", help=FORMAT_HELP),
    overwrite: bool = typer.Option(False, "--overwrite"),
) -> None:
    """Convert a colbert-ai index into a colxm index without re-encoding (codes are copied)."""
    from colxm.collections import load_collection
    from colxm.index.colbert_import import read_colbert_index
    from colxm.index.index import Index

    codec, seg, info = read_colbert_index(colbert_index)
    n = len(seg.doclens)
    if collection is not None:
        docs = list(load_collection(collection, fmt))
        if len(docs) != n:
            raise InputError(f"{collection} has {len(docs)} documents but the colbert-ai index has {n}; "
                             "give the collection it was built from")
    else:
        docs = [{"id": str(i), "text": ""} for i in range(n)]
    encoder = load_encoder(model) if model else None
    idx = Index.from_compressed(index, codec, np.asarray(seg.codes), np.asarray(seg.residuals),
                                np.asarray(seg.doclens), docs, encoder=encoder, overwrite=overwrite)
    typer.echo(f"{index}: {len(idx)} documents imported from {colbert_index} "
               f"({info.get('num_tokens', '?')} token vectors, {codec.nbits} bits)")
    idx.close()


# ---------------------------------------------------------------------------- demo

@app.command("demo")
@handles_errors
def demo_command(
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help=MODEL_HELP),
    index: Optional[Path] = typer.Option(None, "--index", "-i", help="where to build the sample index (default: a temporary folder)"),
    k: int = typer.Option(3, "-k", help="results per query"),
) -> None:
    """Index the shipped multilingual sample collection and answer its queries in several languages."""
    import tempfile

    from colxm.collections import load_qrels, load_queries, sample_collection_path
    from colxm.evaluate import evaluate_run
    from colxm.index.index import Index
    from colxm.index.manifest import IndexConfig

    check_k(k)
    root = sample_collection_path()
    encoder = load_encoder(model)
    with tempfile.TemporaryDirectory(prefix="colxm-demo-") as tmp:
        path = index or Path(tmp) / "sample-index"
        docs = list(read_documents(root / "corpus.jsonl", "auto", None, None))
        idx = Index.build(path, docs, encoder=encoder, config=IndexConfig(nbits=2), overwrite=index is not None)
        langs = sorted({d["language"] for d in docs})
        typer.echo(f"indexed {len(idx)} documents in {len(langs)} languages ({', '.join(langs)}) at {path}\n")
        queries = load_queries(root / "queries.jsonl")
        qlang = {json.loads(line)["id"]: json.loads(line)["language"]
                 for line in (root / "queries.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()}
        run = {}
        for qid, text in queries.items():
            hits = idx.search(text, k=max(k, 10))[0]
            run[qid] = {h.id: h.score for h in hits}
            typer.echo(f"[{qlang.get(qid, '?')}] {text}")
            for r, h in enumerate(hits[:k], 1):
                typer.echo(f"   {r}. {h.score:7.3f}  {h.id:<22} [{h.language or '?'}] {snippet(h.text, 90)}")
        try:
            metrics = evaluate_run(run, load_qrels(root / "qrels.tsv"), ["MRR@10", "R@10", "nDCG@10"])
            typer.echo("\nsample qrels: " + "  ".join(f"{n} {v:.3f}" for n, v in metrics.items()))
        except ColxmError as e:  # ir-measures (the eval extra) is not installed
            log.warning("no metrics: %s", e)
        idx.close()


def _mount_train() -> None:
    try:
        from colxm.train.cli import app as train_app
    except ImportError:  # the training extra may be absent
        return
    app.add_typer(train_app)


_mount_train()

if __name__ == "__main__":
    app()
