"""Language codes and routing texts to XMOD language adapters.

A text's language is an ISO 639-1 code ("de"), an XMOD code ("de_DE"), or "auto" (detected per
text with py3langid, whose model ships inside the package: nothing is downloaded). Codes are
mapped onto the adapters the checkpoint's config lists (``config.languages``), so every language
the checkpoint has is reachable by its ISO code.
"""
from __future__ import annotations

import logging
from functools import lru_cache
from typing import Sequence

from colxm.errors import LanguageError

log = logging.getLogger(__name__)

AUTO = "auto"

# ISO codes that py3langid (or users) write differently from XMOD's prefix.
_ALIASES = {"nb": "no", "nn": "no", "iw": "he", "in": "id", "fil": "tl", "zh-cn": "zh_CN",
            "zh-hans": "zh_CN", "zh-tw": "zh_TW", "zh-hant": "zh_TW"}


def resolve_alias(code: str) -> str:
    """``code`` with a known alias replaced by the code XMOD uses ("nb" -> "no", "zh-TW" ->
    "zh_TW"; case-insensitive); any other code is returned unchanged."""
    return _ALIASES.get(code.lower(), code)


class LanguageRouter:
    """Maps language specs to adapter indexes for one XMOD checkpoint.

    ``fallback``: an adapter (any accepted code) used, with a warning, for languages the model
    lacks; None (the default) raises LanguageError instead.
    """

    def __init__(self, adapters: Sequence[str], fallback: str | None = None):
        self.adapters = [str(a) for a in adapters]
        if not self.adapters:
            raise LanguageError("this model lists no language adapters")
        self._index = {a: i for i, a in enumerate(self.adapters)}
        self._lower = {a.lower(): i for i, a in enumerate(self.adapters)}
        self._iso: dict[str, int] = {}
        for i, code in enumerate(self.adapters):  # first adapter wins: "zh" -> zh_CN, not zh_TW
            self._iso.setdefault(code.split("_")[0].lower(), i)
        self.fallback: int | None = None
        if fallback is not None:
            self.fallback = self.index(fallback)
        self._warned: set[str] = set()

    @property
    def iso_codes(self) -> list[str]:
        return sorted(self._iso)

    def index(self, code: str) -> int:
        """Adapter index for one ISO / XMOD code (not "auto")."""
        if not isinstance(code, str) or not code.strip():
            raise LanguageError(f"language must be a code like 'de' or 'de_DE', got {code!r}")
        raw = code.strip()
        if raw in self._index:
            return self._index[raw]
        key = _ALIASES.get(raw.lower(), raw)
        norm = key.replace("-", "_")
        if norm.lower() in self._lower:  # "zh_tw", "DE_de"
            return self._lower[norm.lower()]
        iso = norm.split("_")[0].lower()
        if iso in self._iso:
            return self._iso[iso]
        if self.fallback is not None:
            if raw not in self._warned:
                self._warned.add(raw)
                log.warning("language %r has no adapter in this model; using the fallback adapter %s",
                            raw, self.adapters[self.fallback])
            return self.fallback
        raise LanguageError(
            f"this model has no adapter for language {code!r}; use one of "
            f"{', '.join(self.iso_codes)} (or the XMOD codes {', '.join(self.adapters[:4])}, ...), "
            "'auto' to detect, or load the encoder with fallback_language='en' to route unknown "
            "languages to one adapter"
        )

    def detect(self, text: str) -> int:
        det = _detector(tuple(self.iso_codes))
        if det is None:
            if self.fallback is not None:
                return self.fallback
            raise LanguageError(
                "none of this model's languages can be detected automatically; pass the language "
                "explicitly or set fallback_language"
            )
        return self._iso[det.classify(text)[0]]

    def resolve(self, spec, texts: Sequence[str]) -> list[int]:
        """Adapter index per text. ``spec``: one code or "auto" for all, or one per text."""
        n = len(texts)
        if isinstance(spec, str):
            if spec == AUTO:
                return [self.detect(t) for t in texts]
            return [self.index(spec)] * n
        if not isinstance(spec, (list, tuple)):
            raise LanguageError(
                f"languages must be None, a code, 'auto', or a list with one code per text; got "
                f"{type(spec).__name__}"
            )
        if len(spec) != n:
            raise LanguageError(f"got {len(spec)} languages for {n} texts; give one per text")
        cache: dict[str, int] = {}
        out = []
        for s, t in zip(spec, texts):
            if s == AUTO:
                out.append(self.detect(t))
            else:
                if s not in cache:
                    cache[s] = self.index(s)
                out.append(cache[s])
        return out


@lru_cache(maxsize=8)
def _detector(iso_codes: tuple[str, ...]):
    """py3langid restricted to the model's languages (so it always answers one we have)."""
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    ident = LanguageIdentifier.from_model_file(MODEL_FILE)
    known = set(ident.labels)
    usable = [c for c in iso_codes if c in known]
    if not usable:
        return None
    if len(usable) == 1:
        usable = usable + [c for c in ("en", "de") if c in known and c not in usable][:1]
    ident.set_languages(usable)
    return _Restricted(ident, set(iso_codes))


class _Restricted:
    def __init__(self, ident, allowed: set[str]):
        self.ident, self.allowed = ident, allowed

    def classify(self, text: str) -> tuple[str, float]:
        lang, score = self.ident.classify(text)
        lang = _ALIASES.get(lang, lang)
        if lang not in self.allowed:  # only when the model has a single language
            lang = sorted(self.allowed)[0]
        return lang, score


def detect_language(text: str) -> str:
    """ISO 639-1 code of one text, over every language py3langid knows."""
    import py3langid

    lang = py3langid.classify(text)[0]
    return _ALIASES.get(lang, lang)
