"""colxm: multilingual late-interaction retrieval (ColBERT-XM / ColBERTv2) for the CPU."""
from colxm.errors import (
    CheckpointError,
    ColxmError,
    IndexFormatError,
    InputError,
    LanguageError,
    WriterLockedError,
)

__version__ = "0.1.0"

__all__ = [
    "Encoder",
    "Hit",
    "Index",
    "IndexConfig",
    "SearchParams",
    "CheckpointError",
    "ColxmError",
    "IndexFormatError",
    "InputError",
    "LanguageError",
    "WriterLockedError",
    "__version__",
]


def __getattr__(name):
    # Lazy imports keep `import colxm` (and the CLI's start-up) free of torch/transformers.
    if name == "Encoder":
        from colxm.modeling.encoder import Encoder

        return Encoder
    if name == "Index":
        from colxm.index.index import Index

        return Index
    if name == "IndexConfig":
        from colxm.index.manifest import IndexConfig

        return IndexConfig
    if name == "SearchParams":
        from colxm.search.searcher import SearchParams

        return SearchParams
    if name == "Hit":
        from colxm.store import Hit

        return Hit
    raise AttributeError(f"module 'colxm' has no attribute {name!r}")
