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
    raise AttributeError(f"module 'colxm' has no attribute {name!r}")
