"""Processes for the fault-injection and concurrency tests.

``python lifecycle_worker.py zygote`` imports colxm once and then, per line "fork ROLE ARGS..." on
stdin, forks a child that runs ROLE (so each of hundreds of killed writers starts in
milliseconds, not seconds of importing torch) and answers its pid; "wait PID" reaps a child and
answers its exit status. Nothing heavy runs in the zygote before forking.
"""
from __future__ import annotations

import json
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from lifecycle_support import doc, exhaustive, vectors  # noqa: E402

import colxm.index.codec  # noqa: E402,F401  (import everything a child needs, torch included,
import colxm.index.ivf  # noqa: E402,F401   before forking: children then start in milliseconds)
import colxm.search  # noqa: E402,F401
import torch  # noqa: E402,F401
from colxm.index.index import Index  # noqa: E402


def write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)


# ---------------------------------------------------------------- fault injection: the writer
def fault_writer(index: str, statedir: str, seed: str) -> None:
    """Random add/delete/upsert/optimize/batch commits forever. Before each operation it writes
    intent.json (the state the operation will produce); after the commit returns, committed.json."""
    sd = Path(statedir)
    committed = json.loads((sd / "committed.json").read_text())
    state: dict[str, int] = {k: int(v) for k, v in committed["state"].items()}
    rng = random.Random(int(seed))
    idx = Index.open(index)
    step = 0
    while True:
        step += 1
        live = sorted(state)
        op = rng.choices(["add", "delete", "upsert", "optimize", "batch"], [25, 20, 25, 15, 15])[0]
        if len(live) > 70:
            op = "delete"
        elif len(live) < 10 and op == "delete":
            op = "add"
        new = dict(state)
        fresh = [f"k{seed}_{step}_{j}" for j in range(rng.randint(1, 3))]
        if op == "add":
            for d in fresh:
                new[d] = 0
            action = lambda: idx.add(*_dv(fresh, new))  # noqa: E731
        elif op == "delete":
            gone = rng.sample(live, min(len(live), rng.randint(1, 3)))
            for d in gone:
                del new[d]
            action = lambda: idx.delete(gone + ["never-there"])  # noqa: E731
        elif op == "upsert":
            ups = rng.sample(live, min(len(live), rng.randint(0, 2))) + fresh[:1]
            for d in ups:
                new[d] = new.get(d, -1) + 1
            action = lambda: idx.upsert(*_dv(ups, new))  # noqa: E731
        elif op == "optimize":
            action = idx.optimize
        else:
            gone = rng.choice(live)
            up = rng.choice(live)
            del new[gone]
            new[fresh[0]] = 0
            if up != gone:
                new[up] = new[up] + 1

            def action():
                with idx.batch():
                    idx.delete([gone])
                    idx.add(*_dv(fresh[:1], new))
                    if up != gone:
                        idx.upsert(*_dv([up], new))

        write_json(sd / "intent.json", {"round": seed, "base_gen": idx.generation, "op": op, "pending": new})
        action()
        state = new
        write_json(sd / "committed.json", {"gen": idx.generation, "state": state})


def _dv(ids, state):
    docs = [doc(d, state[d]) for d in ids]
    return docs, [vectors(d["text"]) for d in docs]


# ---------------------------------------------------------------- concurrency: writer and readers
def conc_state(gen: int) -> dict[str, int]:
    """The documents (id -> version) of generation ``gen`` of the concurrency schedule."""
    state = {f"c{i}": 0 for i in range(20)}
    order = list(state)
    for s in range(1, gen):
        if s % 3 == 0:
            state[f"a{s}"] = 0
            order.append(f"a{s}")
        elif s % 3 == 1:
            del state[order.pop(0)]
        else:
            victim = order[len(order) // 2]
            state[victim] = s
    return state


def conc_writer(index: str, steps: str) -> None:
    idx = Index.open(index)
    rng = random.Random(0)
    for s in range(1, int(steps) + 1):
        assert idx.generation == s
        before, after = conc_state(s), conc_state(s + 1)
        added = [d for d in after if d not in before or after[d] != before[d]]
        removed = [d for d in before if d not in after]
        if removed:
            idx.delete(removed)
        else:
            docs = [doc(d, after[d]) for d in added]
            (idx.add if after[added[0]] == 0 else idx.upsert)(docs, embeddings=[vectors(x["text"]) for x in docs])
        time.sleep(rng.uniform(0, 0.02))
    idx.close()


def conc_reader(index: str, stop_file: str, out: str, mode: str) -> None:
    q = [vectors("the query")]
    reads, gens, bad = 0, set(), []
    idx = Index.open(index)
    while True:
        stopping = os.path.exists(stop_file)
        if mode == "refresh":
            idx.refresh()
        else:
            idx.close()
            idx = Index.open(index)
        hits = idx.search_embeddings(q, k=1000, params=exhaustive())[0]
        g = idx.generation
        expect = conc_state(g)
        got = {h.id: h.text for h in hits}
        want = {d: f"{d} v{v}" for d, v in expect.items()}
        if got != want or len(idx) != len(want) or sorted(idx.ids()) != sorted(want):
            bad.append({"gen": g, "got": sorted(got.items()), "want": sorted(want.items())})
        reads += 1
        gens.add(g)
        if stopping:
            break
    Path(out).write_text(json.dumps({"reads": reads, "generations": sorted(gens), "bad": bad[:5], "num_bad": len(bad)}))


def rebuilder(index: str, statedir: str, seed: str) -> None:
    """Rebuild the index with overwrite=True forever, alternating two known collections."""
    from colxm.index.manifest import IndexConfig

    k = int(seed)
    while True:
        version = k % 2 + 1
        docs = [doc(f"r{i}", version) for i in range(120)]
        write_json(Path(statedir) / "rebuild.json", {"building": version})
        Index.build(index, docs, embeddings=[vectors(d["text"]) for d in docs], overwrite=True,
                    config=IndexConfig(chunk_documents=16)).close()
        k += 1


ROLES = {"rebuilder": rebuilder, "fault_writer": fault_writer, "conc_writer": conc_writer, "conc_reader": conc_reader}


def zygote() -> None:
    print("ready", flush=True)
    for line in sys.stdin:
        cmd, *args = line.split()
        if cmd == "fork":
            pid = os.fork()
            if pid == 0:
                code = 0
                try:
                    torch.set_num_threads(1)
                    ROLES[args[0]](*args[1:])
                except BaseException:  # noqa: BLE001 - report and exit without running parent's cleanup
                    import traceback

                    traceback.print_exc()
                    code = 1
                finally:
                    sys.stderr.flush()
                    os._exit(code)
            print(pid, flush=True)
        elif cmd == "wait":
            _, status = os.waitpid(int(args[0]), 0)
            print(status, flush=True)
        elif cmd == "quit":
            return


if __name__ == "__main__":
    zygote()
