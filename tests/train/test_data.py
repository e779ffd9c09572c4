"""Training data: JSONL round trips and errors, BM25 and model mining, teacher scores."""
import json
import zlib

import numpy as np
import pytest

from colxm.errors import CheckpointError, ColxmError, InputError
from colxm.train import data

PAIRS = [
    ("how gzip compresses files", "gzip compresses files with the deflate algorithm"),
    ("draw vector graphics", "inkscape is an editor for vector graphics drawing"),
    ("draw vector graphics", "karbon draws vector graphics for the calligra suite"),
    ("play music files", "a music player that plays audio files and playlists"),
]
CORPUS = [p for _, p in PAIRS] + [
    "gzip compresses files with the deflate algorithm.",  # near-duplicate of positive 0
    "bzip2 compresses files better than gzip in most cases",
    "a raster graphics editor to draw and paint pictures",
    "music notation editor to write sheet music files",
]


def test_jsonl_round_trips(tmp_path):
    t = [data.Triple("q", "p", "n"), data.Triple("q2", "p2", "n2")]
    assert data.write_jsonl(tmp_path / "t.jsonl", t) == 2
    assert data.read_triples(tmp_path / "t.jsonl") == t
    n = [data.NwayTuple("q", ["p", "n1", "n2"], [3.0, 1.0, -2.5])]
    data.write_jsonl(tmp_path / "n.jsonl", n)
    assert data.read_nway(tmp_path / "n.jsonl") == n
    (tmp_path / "p.jsonl").write_text(json.dumps({"_id": "1", "query": "a", "positive": "b"}) + "\n")
    assert data.read_pairs(tmp_path / "p.jsonl") == [("a", "b")]


@pytest.mark.parametrize(
    "line, message",
    [
        ("{not json", r"bad\.jsonl, line 2: not valid JSON"),
        ('{"query": "q", "positive": "p"}', r"bad\.jsonl, line 2: missing key 'negative'"),
        ('{"query": "", "positive": "p", "negative": "n"}', r"'query' must be a non-empty string"),
    ],
)
def test_bad_triples_name_file_and_line(tmp_path, line, message):
    f = tmp_path / "bad.jsonl"
    f.write_text('{"query": "q", "positive": "p", "negative": "n"}\n' + line + "\n")
    with pytest.raises(InputError, match=message):
        data.read_triples(f)


def test_bad_nway_scores(tmp_path):
    f = tmp_path / "n.jsonl"
    f.write_text(json.dumps({"query": "q", "passages": ["a", "b"], "scores": [1.0]}) + "\n")
    with pytest.raises(InputError, match="'scores' must be a list of 2 numbers"):
        data.read_nway(f)
    with pytest.raises(InputError, match="no such file"):
        data.read_nway(tmp_path / "missing.jsonl")


def test_near_duplicate():
    assert data.is_near_duplicate("Gzip compresses files.", "gzip  compresses FILES")
    assert not data.is_near_duplicate("gzip compresses files", "bzip2 compresses files")


def test_bm25_mining_excludes_positives_and_near_duplicates():
    mined = data.mine_bm25(PAIRS, CORPUS, n_negatives=2, depth=8)
    assert [m.query for m in mined] == [q for q, _ in PAIRS]
    by_q = {}
    for q, p in PAIRS:
        by_q.setdefault(q, set()).add(p)
    for m in mined:
        assert len(m.negatives) == 2
        for n in m.negatives:
            assert n not in by_q[m.query]
            assert not any(data.is_near_duplicate(n, p) for p in by_q[m.query])
    # the lexically closest non-positive wins: bzip2 for the gzip query (its near-duplicate is skipped)
    assert mined[0].negatives[0] == CORPUS[5]
    # a query's other positive is never its negative
    assert CORPUS[2] not in mined[1].negatives and CORPUS[1] not in mined[2].negatives
    assert mined[0].triples()[0] == data.Triple(PAIRS[0][0], PAIRS[0][1], CORPUS[5])


class BagOfWordsEncoder:
    """A contract-shaped stand-in for the Encoder: one unit vector per word (hashed), so that
    MaxSim counts shared words. Lets the mining logic be tested without a neural model."""

    dim = 512

    def _vecs(self, text):
        rows = []
        for w in text.lower().split():
            v = np.zeros(self.dim, np.float32)
            v[zlib.crc32(w.encode()) % self.dim] = 1.0
            rows.append(v)
        return np.stack(rows) if rows else np.zeros((0, self.dim), np.float32)

    def encode_queries(self, texts, batch_size=32, show_progress=None):
        return [self._vecs(t) for t in texts]

    encode_documents = encode_queries


def test_maxsim_rank_matches_loop():
    rng = np.random.default_rng(0)
    docs = [rng.normal(size=(n, 4)).astype(np.float32) for n in (3, 1, 0, 5)]
    q = rng.normal(size=(2, 4)).astype(np.float32)
    mat, off = data._pack(docs, 4)
    got = data.maxsim_rank(q, mat, off)
    want = [sum(max(float(qi @ t) for t in d) for qi in q) if len(d) else -np.inf for d in docs]
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_model_mining_full_and_reranked_candidates():
    enc = BagOfWordsEncoder()
    full = data.mine_with_model(enc, PAIRS, CORPUS, n_negatives=1, depth=8)
    assert full[0].negatives == [CORPUS[5]]  # shares "compresses files gzip"; the near-duplicate is skipped
    for m in full:
        assert m.negatives and m.negatives[0] != m.positive
    cand = data.BM25Miner(CORPUS).rank([q for q, _ in PAIRS], 8)
    rer = data.mine_with_model(enc, PAIRS, CORPUS, n_negatives=1, candidates=cand)
    assert [m.negatives for m in rer] == [m.negatives for m in full]


def test_colxm_teacher_and_build_nway():
    teacher = data.ColxmTeacher(BagOfWordsEncoder())
    mined = data.mine_bm25(PAIRS, CORPUS, n_negatives=2, depth=8)
    tuples = data.build_nway(mined, teacher, nway=3)
    assert len(tuples) == len(PAIRS)
    t0 = tuples[0]
    assert t0.passages[0] == PAIRS[0][1] and len(t0.scores) == 3
    # gzip query vs its positive: "gzip", "compresses", "files" are shared words
    assert t0.scores[0] == pytest.approx(teacher.score(t0.query, [t0.passages[0]])[0])
    assert t0.scores[0] > 0


def test_cross_encoder_teacher_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        data.CrossEncoderTeacher(tmp_path / "nope")
    import importlib.util

    if importlib.util.find_spec("sentence_transformers") is None:
        with pytest.raises(ColxmError, match="pip install sentence-transformers"):
            data.CrossEncoderTeacher(tmp_path)
