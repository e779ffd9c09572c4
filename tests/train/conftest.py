"""Fixtures of the training tests: contract-shaped tiny encoders (train_doubles.py) and the
project's tiny HF_ColBERT builders (tests/tiny_models.py) for runs through the real Encoder."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ for tiny_models
sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/train for train_doubles

from train_doubles import TinyEncoder  # noqa: E402


@pytest.fixture
def tiny_encoder():
    return TinyEncoder("bert")


@pytest.fixture
def tiny_xmod_encoder():
    return TinyEncoder("xmod")
