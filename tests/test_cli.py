"""The `colxm` command end to end on tiny models: every command, and bad input giving a one-line
error, a non-zero exit code, no traceback and nothing half-written."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/ for tiny_models
from tiny_models import make_tiny_xmod_colbert  # noqa: E402

from colxm.cli import app  # noqa: E402
from colxm.collections import sample_collection_path  # noqa: E402

SAMPLE = sample_collection_path()
LANGS = ("en_XX", "de_DE", "fr_XX", "es_XX", "it_IT", "pt_XX", "nl_XX", "pl_PL", "ru_RU", "zh_CN", "ar_AR")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return str(make_tiny_xmod_colbert(tmp_path_factory.mktemp("xmod") / "model", languages=LANGS))


@pytest.fixture(scope="module")
def index(tmp_path_factory, model):
    path = tmp_path_factory.mktemp("idx") / "sample"
    res = run("index", str(SAMPLE / "corpus.jsonl"), "--index", str(path), "--model", model,
              "--passage-tokens", "24", "--passage-overlap", "4")
    assert res.exit_code == 0, res.output
    assert "49 documents indexed" in res.output
    return path


def run(*args):
    return CliRunner().invoke(app, list(args))


def fails(res, pattern, code=1):
    """One line on stderr starting with 'error:', exit code ``code`` (2: a bad command line),
    no traceback."""
    assert res.exit_code == code, res.output
    err = res.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    assert pattern in err, err
    assert res.exception is None or isinstance(res.exception, SystemExit)


def test_search_text_json_where(index):
    res = run("search", str(index), "Der Rhein mündet in die Nordsee", "-k", "3")
    assert res.exit_code == 0, res.output
    lines = [line for line in res.stdout.splitlines() if line.strip()]
    assert lines[0].lstrip().startswith("1.") and len([x for x in lines if x.lstrip()[:2] in ("1.", "2.", "3.")]) == 3
    res = run("search", str(index), "Rhein", "-k", "5", "--json", "--where", "language=de")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["query"] == "Rhein" and len(out["results"]) == 5
    assert all(r["language"] == "de" and r["id"].startswith("de-") for r in out["results"])
    scores = [r["score"] for r in out["results"]]
    assert scores == sorted(scores, reverse=True)
    res = run("search", str(index), "x", "--json", "--where", "topic=food", "--where", "topic=art", "-k", "50")
    ids = {r["id"] for r in json.loads(res.stdout)["results"]}
    expected = {json.loads(line)["id"] for line in (SAMPLE / "corpus.jsonl").read_text().splitlines()
                if json.loads(line)["topic"] in ("food", "art")}
    assert ids == expected


def test_search_explain(index):
    res = run("search", str(index), "Wo fließt der Rhein?", "-k", "2", "--json", "--explain", "--lang", "de")
    assert res.exit_code == 0, res.output
    for r in json.loads(res.stdout)["results"]:
        ex = r["explain"]
        assert ex["tokens"] and {"query_token", "document_token", "similarity"} <= set(ex["tokens"][0])
        assert any(t["query_token"] == "▁Rhein" for t in ex["tokens"])
        # the exact MaxSim is the sum of the per-token best similarities shown
        assert ex["exact_score"] == pytest.approx(sum(t["similarity"] for t in ex["tokens"]), rel=1e-5)
        # and agrees with the index's (compressed, 2-bit) score to within compression error
        assert ex["exact_score"] == pytest.approx(r["score"], rel=0.1)
    res = run("search", str(index), "Wo fließt der Rhein?", "-k", "1", "--explain")
    assert "▁Rhein →" in res.stdout and "exact MaxSim score" in res.stdout


def test_evaluate_and_run_file(index, tmp_path):
    run_file = tmp_path / "out" / "run.trec"
    res = run("evaluate", str(index), "--queries", str(SAMPLE / "queries.jsonl"), "--qrels", str(SAMPLE / "qrels.tsv"),
              "--json", "--run-file", str(run_file), "--depth", "100")
    assert res.exit_code == 0, res.output
    m = json.loads(res.stdout)
    assert m["queries"] == 14
    assert set(m) >= {"MRR@10", "MRR@100", "R@10", "R@100", "R@1000", "nDCG@10", "Success@5"}
    assert 0 <= m["R@10"] <= m["R@100"] <= m["R@1000"] <= 1 and m["R@100"] > 0
    # the run file holds what was evaluated: scoring it again gives the same figures
    from colxm.collections import load_qrels
    from colxm.evaluate import evaluate_run, read_trec_run

    again = evaluate_run(read_trec_run(run_file), load_qrels(SAMPLE / "qrels.tsv"))
    assert again == pytest.approx({k: v for k, v in m.items() if k in again})
    first = run_file.read_text().splitlines()[0].split()
    assert first[1] == "Q0" and first[3] == "1" and first[5] == "colxm"


def test_updates_and_maintenance(index, model, tmp_path):
    import shutil

    path = tmp_path / "copy"
    shutil.copytree(index, path)
    new = tmp_path / "new.tsv"
    new.write_text("id\ttext\tlang\nnew-1\tDer Rhein ist lang.\tde\nnew-2\tLe Rhin est long.\tfr\n")
    assert run("add", str(path), str(new)).exit_code == 0
    fails(run("add", str(path), str(new)), "already in the index")
    res = run("upsert", str(path), str(new))
    assert res.exit_code == 0 and "2 replaced" in res.stdout
    res = run("delete", str(path), "new-1", "missing-id")
    assert res.exit_code == 0 and "1 documents deleted, 1 ids not found" in res.stdout
    assert run("optimize", str(path)).exit_code == 0
    res = run("reindex", str(path), "--force")
    assert res.exit_code == 0 and "reindexed" in res.stdout
    res = run("verify", str(path))
    assert res.exit_code == 0 and res.stdout.strip().endswith("ok")
    stats = json.loads(run("stats", str(path)).stdout)
    assert stats["documents"] == 50 and stats["segments"] == 1
    out = json.loads(run("search", str(path), "Le Rhin", "--json", "--where", "id=new-2").stdout)
    assert [r["id"] for r in out["results"]] == ["new-2"]
    # verify notices damage
    victim = max((p for p in path.rglob("*.npy")), key=lambda p: p.stat().st_size)
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0xFF
    victim.write_bytes(bytes(data))
    res = run("verify", str(path))  # one "problem:" line per problem, then the one-line error
    assert res.exit_code == 1 and "checksum" in res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith("error: ") and "Traceback" not in res.stderr


def test_index_with_full_vectors_scores_exact_maxsim(model, tmp_path):
    path = tmp_path / "full"
    res = run("index", str(SAMPLE / "corpus.jsonl"), "--index", str(path), "--model", model, "--full-vectors")
    assert res.exit_code == 0, res.output
    stats = json.loads(run("stats", str(path)).stdout)
    assert stats["full_vectors"] is True and stats["full_vectors_bytes"] > 0
    res = run("search", str(path), "Wo fließt der Rhein?", "-k", "3", "--json", "--explain", "--lang", "de")
    assert res.exit_code == 0, res.output
    for r in json.loads(res.stdout)["results"]:
        # scored on the stored originals: the uncompressed MaxSim of --explain, to float16 rounding
        assert r["explain"]["exact_score"] == pytest.approx(r["score"], rel=1e-3)


def test_bad_input(index, model, tmp_path):
    fails(run("index", str(tmp_path / "missing.jsonl"), "--index", str(tmp_path / "i1"), "--model", model),
          "no such file")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "1", "text": "fine"}\n{"id": "2", "text": "broken"\n')
    fails(run("index", str(bad), "--index", str(tmp_path / "i2"), "--model", model), "bad.jsonl, line 2")
    assert not (tmp_path / "i2").exists() and not [p for p in tmp_path.iterdir() if "i2" in p.name]
    fails(run("search", str(index), "hello", "--lang", "xx"), "unknown language 'xx'", code=2)
    fails(run("search", str(index), "   "), "empty", code=2)
    fails(run("search", str(index), "hello", "-k", "0"), "-k must be a positive", code=2)
    fails(run("search", str(index), "hello", "-k", "-3"), "-k must be a positive", code=2)
    fails(run("search", str(tmp_path), "hello"), "not a colxm index")
    fails(run("search", str(tmp_path / "nowhere"), "hello"), "no such index folder")
    fails(run("search", str(index), "hello", "--where", "novalue"), "FIELD=VALUE", code=2)
    fails(run("index", str(SAMPLE / "corpus.jsonl"), "--index", str(index), "--model", model), "already holds an index")
    fails(run("index", str(SAMPLE / "corpus.jsonl"), "--index", str(tmp_path / "i3"), "--model", str(tmp_path / "no-model")),
          "does not exist")
    fails(run("index", str(SAMPLE / "corpus.jsonl"), "--index", str(tmp_path / "i4"), "--model", model,
              "--passage-tokens", "16", "--passage-overlap", "16"), "--passage-overlap", code=2)
    fails(run("evaluate", str(index), "--queries", str(SAMPLE / "queries.jsonl")), "both queries and qrels")
    fails(run("delete", str(index)), "give the ids", code=2)


def test_demo_on_tiny_model(model, tmp_path):
    res = run("demo", "--model", model, "--index", str(tmp_path / "demo"))
    assert res.exit_code == 0, res.output
    out = res.stdout
    assert "indexed 49 documents in 11 languages" in out
    for q in ("How do bees tell", "Warum gibt es Ebbe", "¿Cómo se hace el queso?", "绿茶和红茶"):
        assert q in out
    assert "sample qrels: MRR@10" in out


def test_subprocess_error_has_no_traceback(tmp_path):
    out = subprocess.run([sys.executable, "-m", "colxm.cli", "search", str(tmp_path), "q"],
                         capture_output=True, text=True)
    assert out.returncode == 1
    assert out.stderr.strip().startswith("error: ") and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_readme_opens_with_the_two_quickstart_commands():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    first_section = readme.split("\n## ")[1]
    assert first_section.startswith("Quickstart")
    block = first_section.split("```bash\n", 1)[1].split("```", 1)[0].strip().splitlines()
    assert len(block) == 2
    install, tests = block
    assert install.index("pip install torch==2.13.0") < install.index("pip install -e")
    assert install.endswith("colxm demo")  # the command test_demo_on_tiny_model runs on a tiny model
    assert tests == "python -m pytest -q"


def test_import_colbert_reproduces_colbert_ai_ranking(tmp_path):
    """The fixture index was built and searched by colbert-ai 0.2.22 (scripts/colbert_index/)."""
    import numpy as np

    from colxm.index.index import Index
    from colxm.search import SearchParams

    fix = Path(__file__).resolve().parent / "fixtures" / "colbert_index"
    expected = json.loads((fix / "expected.json").read_text())
    coll = tmp_path / "collection.tsv"
    coll.write_text("".join(f"doc-{i}\tpassage {i}\n" for i in range(300)))
    res = run("import-colbert", str(fix / "index"), "--index", str(tmp_path / "imported"), "--collection", str(coll))
    assert res.exit_code == 0, res.output
    assert "300 documents imported" in res.stdout
    idx = Index.open(tmp_path / "imported")
    wide = expected["settings"][1]  # colbert-ai scored every document exactly with this setting
    hits = idx.search_embeddings(list(np.load(fix / "queries.npy")), k=10, params=SearchParams(exhaustive=True))
    for got, want in zip(hits, wide["top10"]):
        assert [h.id for h in got] == [f"doc-{p}" for p in want["pids"]]
        np.testing.assert_allclose([h.score for h in got], want["scores"], rtol=1e-4, atol=1e-4)
    assert idx.get("doc-7")[0].text == "passage 7"
    idx.close()
    short = tmp_path / "short.tsv"
    short.write_text("a\tb\n")
    fails(run("import-colbert", str(fix / "index"), "--index", str(tmp_path / "x"), "--collection", str(short)),
          "has 1 documents but the colbert-ai index has 300")
    fails(run("import-colbert", str(tmp_path), "--index", str(tmp_path / "y")), "not a complete colbert-ai index")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_index_reports_duplicates_and_empty_texts_and_maps_passages(model, tmp_path):
    coll = tmp_path / "docs"
    coll.mkdir()
    (coll / "a.txt").write_text("Der Rhein fließt in die Nordsee. " * 12)  # long: several passages
    (coll / "b.md").write_text("# Kaffee\n\nEspresso wird mit Druck gebrüht.")
    (coll / "empty.txt").write_text("   \n")
    res = run("index", str(coll), "--index", str(tmp_path / "i"), "--model", model, "--passage-tokens", "16")
    assert res.exit_code == 0, res.output
    assert "2 documents indexed" in res.stdout and "1 empty texts not indexed (e.g. empty.txt)" in res.stdout
    out = json.loads(run("search", str(tmp_path / "i"), "Rhein Nordsee", "--json", "-k", "5").stdout)
    ids = [r["id"] for r in out["results"]]
    assert sorted(ids) == ["a.txt", "b.md"]  # one result per document, not per passage
    dup = tmp_path / "dup.jsonl"
    dup.write_text('{"id": "x", "text": "eins"}\n{"id": "x", "text": "zwei"}\n{"id": "y", "text": "drei"}\n')
    res = run("index", str(dup), "--index", str(tmp_path / "j"), "--model", model)
    assert res.exit_code == 0, res.output
    assert "2 documents indexed" in res.stdout and "1 duplicate ids (last copy kept; e.g. x)" in res.stdout
