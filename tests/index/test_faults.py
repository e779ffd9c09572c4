"""Fault injection: SIGKILL a writer at random moments of add / delete / upsert / optimize /
batch commits; after every kill the index must open, pass verify(), and hold exactly the last
committed state (no lost, duplicated or resurrected documents; store and vectors agree).

COLXM_FAULT_KILLS sets the number of kills (default 30; the recorded full run uses 240);
COLXM_FAULT_REPORT names a JSON file for the run's figures (docs/durability.md)."""
from __future__ import annotations

import collections
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from lifecycle_support import docs_and_vectors, exhaustive, stored_codes_match, vectors

from colxm.index.index import Index
from colxm.index.lock import WriterLock
from colxm.index.manifest import IndexConfig

WORKER = Path(__file__).with_name("lifecycle_worker.py")
KILLS = int(os.environ.get("COLXM_FAULT_KILLS", "30"))


class Zygote:
    def __init__(self):
        env = dict(os.environ, OMP_NUM_THREADS="1")
        self.p = subprocess.Popen([sys.executable, str(WORKER)], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True, env=env)
        assert self.p.stdout.readline().strip() == "ready"

    def ask(self, line: str) -> int:
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()
        return int(self.p.stdout.readline())

    def close(self):
        self.p.stdin.write("quit\n")
        self.p.stdin.flush()
        self.p.wait(timeout=120)  # generous: on a loaded 2-core machine shutdown took >30 s once


@pytest.fixture
def zygote():
    z = Zygote()
    yield z
    z.close()


def expected_state(idx: Index, committed: dict, intent: dict | None) -> tuple[dict, str]:
    g = idx.generation
    if g == committed["gen"]:
        return committed["state"], "old"
    # an operation is one commit, plus one more when it triggers the automatic segment merge
    assert intent is not None and intent["base_gen"] == committed["gen"] and committed["gen"] < g <= committed["gen"] + 2, (
        f"index at generation {g}, last commit known {committed['gen']}, intent {intent}")
    return intent["pending"], "new"


def check_index(path: Path, state: dict[str, int], rng: random.Random) -> None:
    idx = Index.open(path)
    try:
        assert idx.verify() == []
        assert sorted(idx.ids()) == sorted(state), "documents lost or resurrected"
        assert len(idx.ids()) == len(set(idx.ids())), "duplicated documents"
        for doc_id, version in state.items():
            assert [p.text for p in idx.get(doc_id)] == [f"{doc_id} v{version}"]
        expected = {d: vectors(f"{d} v{v}") for d, v in state.items()}
        assert stored_codes_match(idx, expected) == [], "vectors disagree with their texts"
        for doc_id in rng.sample(sorted(state), min(3, len(state))):
            hit = idx.search_embeddings([vectors(f"{doc_id} v{state[doc_id]}")], k=1, params=exhaustive())[0][0]
            assert hit.id == doc_id
    finally:
        idx.close()


def wait_for_file(path: Path, timeout: float) -> None:
    """Until ``path`` exists (fails after ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"the writer never started an operation ({path})"
        time.sleep(0.005)


def test_sigkill_writer_at_random_moments(tmp_path, zygote):
    path, sd = tmp_path / "idx", tmp_path / "state"
    sd.mkdir()
    ids = [f"s{i}" for i in range(30)]
    ds, vs = docs_and_vectors(ids)
    # max_segments=6: adds trigger automatic merges too, and the kills land in those as well
    Index.build(path, ds, embeddings=vs, config=IndexConfig(chunk_documents=8, max_segments=6)).close()
    committed = {"gen": 1, "state": {i: 0 for i in ids}}
    (sd / "committed.json").write_text(json.dumps(committed))
    rng = random.Random(1234)
    per_op: collections.Counter = collections.Counter()
    outcomes: collections.Counter = collections.Counter()
    t0 = time.perf_counter()
    for round_ in range(KILLS):
        (sd / "intent.json").unlink(missing_ok=True)
        pid = zygote.ask(f"fork fault_writer {path} {sd} {round_ + 1}")
        # the clock starts once the writer is in its first operation, so that a loaded machine
        # (a slow Index.open) does not move the kills out of the writes
        wait_for_file(sd / "intent.json", timeout=120)
        time.sleep(rng.uniform(0.0, 0.4))
        os.kill(pid, signal.SIGKILL)
        status = zygote.ask(f"wait {pid}")
        assert os.WIFSIGNALED(status), "the writer died on its own (see its traceback above)"
        committed = json.loads((sd / "committed.json").read_text())
        intent = json.loads((sd / "intent.json").read_text()) if (sd / "intent.json").exists() else None
        idx = Index.open(path)
        state, outcome = expected_state(idx, committed, intent)
        idx.close()
        op = intent["op"] if intent and intent["base_gen"] == committed["gen"] else "open/idle"
        per_op[op] += 1
        outcomes[outcome] += 1
        check_index(path, state, rng)
        with WriterLock(path):  # the kernel released the dead writer's lock
            pass
        with Index.open(path) as now:
            (sd / "committed.json").write_text(json.dumps({"gen": now.generation, "state": state}))
    seconds = time.perf_counter() - t0
    # the next writer collects what the killed ones left behind
    idx = Index.open(path)
    idx.delete(["never-there"])
    with idx.batch():
        idx.delete([sorted(state)[0]])
    idx.close()
    leftovers = [p for p in (path / "tmp").iterdir()] if (path / "tmp").exists() else []
    assert leftovers == []
    report = {"kills": KILLS, "per_operation": dict(per_op), "commit_landed_before_kill": outcomes["new"],
              "seconds": round(seconds, 1)}
    print(json.dumps(report))
    if os.environ.get("COLXM_FAULT_REPORT"):
        Path(os.environ["COLXM_FAULT_REPORT"]).write_text(json.dumps(report, indent=1))
    assert sum(per_op.values()) == KILLS
    # the kills really landed inside write operations, not only between them
    assert sum(v for k, v in per_op.items() if k != "open/idle") >= KILLS // 2


def test_sigkill_during_overwrite_builds(tmp_path, zygote):
    """Killing Index.build(overwrite=True) never loses the old index nor leaves a mixed one;
    the next build removes the dead build's temp folder."""
    path, sd = tmp_path / "idx", tmp_path / "state"
    sd.mkdir()
    ds, vs = docs_and_vectors([f"r{i}" for i in range(120)], version=0)
    Index.build(path, ds, embeddings=vs).close()
    rng = random.Random(7)
    mid_build = 0
    for round_ in range(max(4, KILLS // 6)):
        (sd / "rebuild.json").unlink(missing_ok=True)
        pid = zygote.ask(f"fork rebuilder {path} {sd} {round_}")
        time.sleep(rng.uniform(0.1, 3.0))
        os.kill(pid, signal.SIGKILL)
        assert os.WIFSIGNALED(zygote.ask(f"wait {pid}"))
        with Index.open(path) as idx:
            assert idx.verify() == []
            versions = {h.text.split(" v")[1] for d in idx.ids() for h in idx.get(d)}
            assert len(idx) == 120 and len(versions) == 1, "a mix of two builds"
            version = int(versions.pop())
            if (sd / "rebuild.json").exists():
                mid_build += json.loads((sd / "rebuild.json").read_text())["building"] != version
            expected = {f"r{i}": vectors(f"r{i} v{version}") for i in range(120)}
            assert stored_codes_match(idx, expected) == []
    assert mid_build >= 1, "no kill landed inside a build"
    ds, vs = docs_and_vectors(["final"])
    Index.build(path, ds, embeddings=vs, overwrite=True).close()
    assert [p.name for p in tmp_path.iterdir() if ".building-" in p.name] == []
