"""Split long documents into overlapping, token-counted passages.

Passages are exact substrings of the original text: window boundaries are found with the fast
tokenizer's character offsets, so a snippet or an --explain view always points at real text.
"""
from __future__ import annotations

from colxm.errors import InputError


def _validate(text, tokenizer, max_tokens, overlap) -> None:
    if not isinstance(text, str):
        raise InputError(f"split_passages: text must be a string, got {type(text).__name__}")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise InputError(f"passage size must be a positive number of tokens, got {max_tokens!r}")
    if isinstance(overlap, bool) or not isinstance(overlap, int) or overlap < 0:
        raise InputError(f"passage overlap must be a number of tokens >= 0, got {overlap!r}")
    if overlap >= max_tokens:
        raise InputError(
            f"passage overlap ({overlap}) must be smaller than the passage size ({max_tokens}); "
            "lower --passage-overlap or raise --passage-tokens"
        )
    if not getattr(tokenizer, "is_fast", False):
        raise InputError(
            "split_passages needs a fast (Rust) Hugging Face tokenizer, which reports character "
            f"offsets; got {type(tokenizer).__name__}"
        )


def token_spans(text: str, tokenizer) -> list[tuple[int, int]]:
    """Character spans (start, end) of the text's tokens, without special tokens or empty spans."""
    return [span for span, _ in _tokens(text, tokenizer)]


def _tokens(text: str, tokenizer) -> list[tuple[tuple[int, int], int | None]]:
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, truncation=False,
                    verbose=False)
    words = enc.word_ids()
    return [((int(s), int(e)), w) for (s, e), w in zip(enc["offset_mapping"], words) if e > s]


def split_passages(text: str, tokenizer, max_tokens: int, overlap: int = 0) -> list[str]:
    """Split ``text`` into windows of at most ``max_tokens`` tokens, consecutive windows sharing
    at least ``overlap`` tokens. Windows end and start on word boundaries where a word boundary
    lies inside the window (a word longer than a window, or unspaced CJK text, is cut between
    tokens). A text that fits in one window comes back unchanged as a single passage; an empty or
    whitespace-only text gives none. Special tokens are not counted; passages are stripped of
    surrounding whitespace and are exact substrings of ``text``."""
    _validate(text, tokenizer, max_tokens, overlap)
    if not text.strip():
        return []
    toks = _tokens(text, tokenizer)
    n = len(toks)
    if n <= max_tokens:
        return [text]
    # word_start[i]: token i begins a new word (a pre-tokenizer unit), so a cut before it is clean.
    word_start = [i == 0 or w is None or w != toks[i - 1][1] for i, (_, w) in enumerate(toks)]
    word_start.append(True)

    def snap_back(i: int, floor: int) -> int:
        j = i
        while j > floor and not word_start[j]:
            j -= 1
        return j if j > floor else i

    passages = []
    start = 0
    while True:
        end = min(start + max_tokens, n)
        if end < n:  # shorten to a word boundary, but never below half a window
            end = snap_back(end, start + max(1, max_tokens // 2) - 1)
        passages.append(text[toks[start][0][0]:toks[end - 1][0][1]].strip())
        if end == n:
            return passages
        start = snap_back(max(end - overlap, start + 1), start)
