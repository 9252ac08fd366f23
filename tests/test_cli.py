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


def test_bench_list_json(capsys):
    code, out, _ = run(capsys, "bench", "--list", "--json")
    assert code == 0
    rows = {r["model"]: r for r in json.loads(out)}
    tiny = rows["_tiny_test"]
    assert tiny["resolution"] == 8
    assert tiny["g_params"] == 8 * 16 + 16 + 32 * 192 + 192
    assert tiny["d_params"] == 192 + 1
