import subprocess
import sys

import colxm
from colxm.errors import ColxmError, InputError, LanguageError


def test_error_family():
    assert issubclass(LanguageError, InputError)
    assert issubclass(InputError, ColxmError)
    assert issubclass(InputError, ValueError)


def test_cli_version():
    out = subprocess.run([sys.executable, "-m", "colxm.cli", "version"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == colxm.__version__


def test_public_names_resolve():
    from colxm.index.index import Index
    from colxm.modeling.encoder import Encoder

    assert colxm.Index is Index and colxm.Encoder is Encoder
    for name in colxm.__all__:
        assert getattr(colxm, name) is not None
