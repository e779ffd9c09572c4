"""Text → token vectors: checkpoints, tokenisation, language adapters, the Encoder."""
from colxm.modeling.config import ColBERTConfig

__all__ = ["ColBERTConfig", "Encoder"]


def __getattr__(name):
    if name == "Encoder":  # lazy: keeps `import colxm.modeling.config` free of torch
        from colxm.modeling.encoder import Encoder

        return Encoder
    raise AttributeError(name)
