import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from colxm.errors import InputError
from colxm.passages import split_passages, token_spans


@pytest.fixture(scope="module")
def tok():
    # A word-level tokenizer built in memory: one token per whitespace/punctuation-separated word.
    words = "the cat sat on mat a dog ran in park . , und der hund läuft im 日本 語".split()
    vocab = {"[UNK]": 0, **{w: i + 1 for i, w in enumerate(words)}}
    t = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    t.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])
    return PreTrainedTokenizerFast(tokenizer_object=t, unk_token="[UNK]")


def test_short_text_is_one_unchanged_passage(tok):
    text = "  the cat sat on the mat.  "
    assert split_passages(text, tok, max_tokens=50, overlap=5) == [text]


def test_empty_text_gives_no_passage(tok):
    assert split_passages("", tok, 10, 0) == []
    assert split_passages("  \n\t ", tok, 10, 0) == []


def test_windows_without_overlap(tok):
    text = "w1 w2 w3 w4 w5 w6 w7"
    assert split_passages(text, tok, max_tokens=3, overlap=0) == ["w1 w2 w3", "w4 w5 w6", "w7"]


def test_windows_with_overlap_are_exact_substrings(tok):
    text = "the  cat sat\non the mat, a dog   ran in the park. und der Hund läuft im park"
    passages = split_passages(text, tok, max_tokens=5, overlap=2)
    spans = token_spans(text, tok)
    assert len(spans) == 20
    # 20 tokens, step 3: windows start at tokens 0,3,...,15 -> 6 windows, last one ends at token 20
    assert len(passages) == 6
    for p in passages:
        assert p in text
        assert p == p.strip()
    assert passages[0] == "the  cat sat\non the"
    assert passages[1] == "on the mat, a"  # shares "on the" (2 tokens) with the first
    assert passages[-1].endswith("im park")
    # every token of the text is in at least one passage
    for s, e in spans:
        assert any(text[s:e] in p for p in passages)


def test_no_duplicate_tail_window(tok):
    text = "a b c d e f"
    assert split_passages(text, tok, max_tokens=4, overlap=2) == ["a b c d", "c d e f"]


@pytest.mark.parametrize("max_tokens,overlap", [(0, 0), (-3, 0), (5, 5), (5, 7), (5, -1), (2.5, 0), (True, 0)])
def test_bad_parameters(tok, max_tokens, overlap):
    with pytest.raises(InputError):
        split_passages("the cat sat", tok, max_tokens, overlap)


def test_bad_text_and_tokenizer(tok):
    with pytest.raises(InputError, match="string"):
        split_passages(None, tok, 5, 0)
    with pytest.raises(InputError, match="fast"):
        split_passages("the cat", object(), 5, 0)


def test_windows_snap_to_word_boundaries_with_subwords():
    # WordPiece: "running" -> run ##ning, "jumped" -> jump ##ed; cuts must fall between words.
    vocab = {"[UNK]": 0, "run": 1, "##ning": 2, "jump": 3, "##ed": 4, "fox": 5, "over": 6, "it": 7}
    t = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    t.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=t, unk_token="[UNK]")
    text = "fox running jumped over it running jumped"
    assert len(token_spans(text, tok)) == 11
    passages = split_passages(text, tok, max_tokens=4, overlap=1)
    words = set(text.split())
    for p in passages:
        assert p in text
        assert set(p.split()) <= words, p  # no passage starts or ends inside a word
        assert len(token_spans(p, tok)) <= 4
    assert " ".join(passages).split()[-1] == "jumped"
    assert passages[0] == "fox running"
