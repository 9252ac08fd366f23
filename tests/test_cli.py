"""CLI plumbing: help, version, exit codes, one-line errors, --json."""

import json

import pytest

import tiny_model  # noqa: F401
from natgan import __version__
from natgan.cli import main

SUBCOMMANDS = ["prepare", "train", "sample", "fid", "visualize", "bench", "import", "doctor"]


def run(capsys, *argv):
    with pytest.raises(SystemExit) as exc:
        main(list(argv))
    out = capsys.readouterr()
    return exc.value.code or 0, out.out, out.err


def test_version(capsys):
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.strip() == f"nat-gan {__version__}"


def test_help_lists_every_subcommand(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0
    for cmd in SUBCOMMANDS:
        assert cmd in out


@pytest.mark.parametrize("cmd", SUBCOMMANDS)
def test_subcommand_help(capsys, cmd):
    code, out, _ = run(capsys, cmd, "--help")
    assert code == 0 and "Usage" in out


def test_usage_error_exits_2(capsys):
    code, _, err = run(capsys, "no-such-command")
    assert code == 2 and "No such command" in err
    code, _, _ = run(capsys, "bench", "--no-such-flag")
    assert code == 2


@pytest.mark.parametrize("argv, fragment", [
    (["fid", "--num", "1e12", "--ckpt", "x.pt"], "nat-gan fid: Invalid value for '--num'"),
    (["sample", "--bogus"], "nat-gan sample: No such option: --bogus"),
    (["no-such-command"], "No such command"),
    (["train", "--recipe"], "Option '--recipe' requires an argument"),
])
def test_usage_errors_are_one_line_naming_command_and_option(capsys, argv, fragment):
    """Click's boxed multi-line usage panels become one `error:` line (exit 2), like every other error."""
    code, out, err = run(capsys, *argv)
    lines = err.strip().splitlines()
    assert code == 2 and out == "" and len(lines) == 1, err
    assert lines[0].startswith("error: ") and fragment in lines[0] and "Traceback" not in err


def test_no_arguments_still_shows_the_help(capsys):
    code, out, err = run(capsys)
    assert code == 2 and "Usage" in out + err and "error:" not in err


def test_bench_list_json(capsys):
    code, out, _ = run(capsys, "bench", "--list", "--json")
    assert code == 0
    rows = {r["model"]: r for r in json.loads(out)}
    tiny = rows["_tiny_test"]
    assert tiny["resolution"] == 8
    assert tiny["g_params"] == 8 * 16 + 16 + 32 * 192 + 192
    assert tiny["d_params"] == 192 + 1
