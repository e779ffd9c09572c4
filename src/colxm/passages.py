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
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, truncation=False,
                    verbose=False)
    return [(int(s), int(e)) for s, e in enc["offset_mapping"] if e > s]


def split_passages(text: str, tokenizer, max_tokens: int, overlap: int = 0) -> list[str]:
    """Split ``text`` into windows of at most ``max_tokens`` tokens, consecutive windows sharing
    ``overlap`` tokens. A text that fits in one window comes back unchanged as a single passage;
    an empty or whitespace-only text gives no passage. Special tokens are not counted."""
    _validate(text, tokenizer, max_tokens, overlap)
    if not text.strip():
        return []
    spans = token_spans(text, tokenizer)
    if len(spans) <= max_tokens:
        return [text]
    step = max_tokens - overlap
    passages = []
    start = 0
    while True:
        end = min(start + max_tokens, len(spans))
        passages.append(text[spans[start][0]:spans[end - 1][1]])
        if end == len(spans):
            return passages
        start += step
