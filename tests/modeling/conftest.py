import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ for tiny_models

from tiny_models import make_tiny_bert_colbert, make_tiny_xmod_colbert  # noqa: E402


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory):
    return make_tiny_bert_colbert(tmp_path_factory.mktemp("bert") / "model")


@pytest.fixture(scope="session")
def tiny_xmod(tmp_path_factory):
    return make_tiny_xmod_colbert(tmp_path_factory.mktemp("xmod") / "model")
