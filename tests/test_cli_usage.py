"""Command-line mistakes (missing argument, unknown option or command, bad option value) give one
`error: ...; see colxm CMD --help` line and exit code 2 for every colxm command, the `train`
sub-app's included: no usage panel, no traceback, and the command does not run."""
import re
import subprocess
import sys

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from colxm.cli import app

GROUP = get_command(app)
COMMANDS = sorted(GROUP.commands)


def run(*args):
    return CliRunner().invoke(app, list(args))


def usage_error(res, command: str, pattern: str):
    assert res.exit_code == 2, (res.exit_code, res.output)
    err = res.stderr.strip()
    assert "\n" not in err and "Traceback" not in err and "Usage:" not in err, err
    assert err.startswith("error: ") and err.endswith(f"; see colxm{' ' + command if command else ''} --help"), err
    assert re.search(pattern, err), err
    assert res.stdout == "", res.stdout  # the command did not run
    assert res.exception is None or isinstance(res.exception, SystemExit)


def test_every_command_is_covered():
    # the main commands and the training sub-app's (mounted without a name: they join the top level)
    assert {"index", "search", "evaluate", "add", "upsert", "delete", "optimize", "reindex", "verify",
            "stats", "import-colbert", "demo", "version"} <= set(COMMANDS)
    if "train" not in COMMANDS:
        pytest.skip("colxm.train.cli not importable here (training extra absent)")
    assert {"train", "mine", "add-language"} <= set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_unknown_option(command):
    usage_error(run(command, "--no-such-option"), command, r"no such option: --no-such-option")


@pytest.mark.parametrize("command", [c for c in COMMANDS if any(p.required for p in GROUP.commands[c].params)])
def test_missing_required_parameter(command):
    first = next(p for p in GROUP.commands[command].params if p.required)
    res = run(command)
    usage_error(res, command, r"missing (argument [A-Z_]+|option --[a-z-]+)")
    if first.param_type_name == "argument":  # arguments are reported by name, upper-case
        assert f"missing argument {first.name.upper()}" in res.stderr


@pytest.mark.parametrize("args, command, pattern", [
    (["search", "idx", "q", "-k", "many"], "search", r"invalid value for '-k' / '--k'"),
    (["search", "idx", "q", "-k"], "search", r"option '-k' requires an argument"),
    (["index", "docs.jsonl", "--index"], "index", r"option '--index' requires an argument"),
    (["index", "docs.jsonl", "--index", "i", "--nbits", "two"], "index", r"invalid value for '--nbits'"),
    (["evaluate", "idx", "--depth", "1.5"], "evaluate", r"invalid value for '--depth'"),
    (["delete", "idx", "--ids-file"], "delete", r"option '--ids-file' requires an argument"),
    (["search", "idx", "q", "extra"], "search", r"unexpected extra argument.* \(extra\)"),
    (["mine", "pairs.jsonl", "--out", "o.jsonl", "--method", "magic"], "mine", r"invalid value for '--method'.*magic"),
    (["train", "pairs.jsonl", "--model", "m", "--out", "o", "--steps", "lots"], "train", r"invalid value for '--steps'"),
])
def test_bad_option_values(args, command, pattern):
    if command not in COMMANDS:
        pytest.skip(f"colxm {command} not available (training extra absent)")
    usage_error(run(*args), command, pattern)


def test_unknown_command_and_group_option():
    usage_error(run("serch", "idx", "q"), "", r"no such command 'serch'")
    usage_error(run("--no-such-option"), "", r"no such option: --no-such-option")


@pytest.mark.parametrize("args, command, pattern", [
    (["search", "idx", "q", "-k", "0"], "search", r"-k must be a positive number of results, got 0"),
    (["search", "idx", "q", "--lang", "klingon"], "search", r"unknown language 'klingon'"),
    (["search", "idx", "q", "--where", "nofield"], "search", r"--where expects FIELD=VALUE"),
    (["index", "docs.jsonl", "--index", "i", "--nbits", "3"], "index", r"--nbits must be 1, 2 or 4, got 3"),
    (["index", "docs.jsonl", "--index", "i", "--passage-overlap", "-1"], "index", r"--passage-overlap must be >= 0"),
    (["evaluate", "idx", "--depth", "0"], "evaluate", r"--depth must be a positive"),
])
def test_values_checked_by_colxm_are_usage_errors_too(args, command, pattern):
    # checked before any file is read or model loaded: the paths here do not exist
    usage_error(run(*args), command, pattern)


def test_help_still_works_and_exits_0():
    res = run("index", "--help")
    assert res.exit_code == 0 and "--nbits" in res.stdout


@pytest.mark.parametrize("args, pattern", [
    (["index"], "error: missing argument COLLECTION; see colxm index --help"),
    (["search", "idx", "q", "--k"], "error: option '--k' requires an argument; see colxm search --help"),
])
def test_real_process(args, pattern):
    """The installed entry point's code path (Typer.__call__ -> the group's main) in a subprocess."""
    code = "import sys; from colxm.cli import app; sys.argv[0] = 'colxm'; app()"
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip() == pattern, out.stderr
    assert out.stdout == ""


def test_language_aliases_through_the_public_lookup():
    from colxm.cli import check_language
    from colxm.modeling.languages import resolve_alias

    assert resolve_alias("nb") == "no" and resolve_alias("zh-TW") == "zh_TW" and resolve_alias("de") == "de"
    assert check_language("nb") == "nb" and check_language("zh-tw") == "zh-tw"  # aliases of known languages
    usage_error(run("search", "idx", "q", "--lang", "qq"), "search", r"unknown language 'qq'")
