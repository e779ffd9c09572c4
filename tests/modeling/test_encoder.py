import numpy as np
import pytest

from colxm.modeling.encoder import Encoder

TEXTS = ["Paris is the capital of France.", "what is the capital of italy? rome!", "dog",
         "the history of science, 1900-2000: computers; data & music"]


@pytest.mark.parametrize("which", ["tiny_bert", "tiny_xmod"])
def test_shapes_norms_and_token_alignment(which, request):
    enc = Encoder.from_pretrained(request.getfixturevalue(which))
    qs = enc.encode_queries(TEXTS)
    assert all(q.shape == (enc.config.query_maxlen, enc.dim) and q.dtype == np.float32 for q in qs)
    ds = enc.encode_documents(TEXTS)
    toks = enc.document_tokens(TEXTS)
    for d, t in zip(ds, toks):
        assert d.shape == (len(t), enc.dim)
        np.testing.assert_allclose(np.linalg.norm(d, axis=1), 1.0, atol=1e-5)
    for q in qs:
        np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-5)


def test_punctuation_dropped_from_documents(tiny_bert):
    enc = Encoder.from_pretrained(tiny_bert)
    toks = enc.document_tokens(["rome, paris; berlin!"])[0]
    assert toks == ["[CLS]", "[unused1]", "rome", "paris", "berlin", "[SEP]"]


def test_batch_order_and_size_do_not_change_vectors(tiny_bert):
    enc = Encoder.from_pretrained(tiny_bert)
    alone = [enc.encode_documents([t])[0] for t in TEXTS]
    batched = enc.encode_documents(TEXTS, batch_size=2)
    streamed = list(enc.iter_documents(iter(TEXTS), batch_size=3))
    for a, b, c in zip(alone, batched, streamed):
        np.testing.assert_allclose(a, b, atol=1e-6)
        np.testing.assert_allclose(a, c, atol=1e-6)


def test_iter_documents_streams_in_chunks(tiny_bert):
    enc = Encoder.from_pretrained(tiny_bert, chunk_size=4)
    consumed = []

    def gen():
        for i in range(10):
            consumed.append(i)
            yield f"document number {i} about rome"

    it = enc.iter_documents(gen(), batch_size=3)
    first = next(it)
    assert len(consumed) == 4  # only the first chunk was read
    rest = list(it)
    assert len(rest) == 9 and len(consumed) == 10
    whole = enc.encode_documents([f"document number {i} about rome" for i in range(10)])
    np.testing.assert_allclose(first, whole[0], atol=1e-6)


def test_xmod_languages_with_a_stream(tiny_xmod):
    enc = Encoder.from_pretrained(tiny_xmod, chunk_size=2)
    texts = ["hello world", "hallo welt", "bonjour le monde"]
    langs = ["en", "de", "fr"]
    streamed = list(enc.iter_documents(iter(texts), languages=langs))
    for t, l, s in zip(texts, langs, streamed):
        np.testing.assert_allclose(s, enc.encode_documents([t], languages=l)[0], atol=1e-6)
