"""Every ``nat-gan ...`` command quoted in README.md and the recipes parses with the CLI's own parser
(unknown options, missing arguments and bad values fail), and the cheap ones run at tiny size."""

from __future__ import annotations

import json

import pytest
import typer

from natgan.cli import app, main
from quoted_commands import quoted_commands

COMMANDS = quoted_commands()


def parse(argv: list[str]) -> None:
    """Parse ``argv`` as ``nat-gan`` would, down to the subcommand, without running it (Click raises a
    UsageError for an unknown command or option, a missing argument or a bad value). A command named in prose
    without arguments (``nat-gan prepare``) only has to exist."""
    command = typer.main.get_command(app)
    ctx = command.make_context("nat-gan", list(argv))
    args = [*ctx._protected_args, *ctx.args]
    while hasattr(command, "resolve_command"):
        name, command, args = command.resolve_command(ctx, args)
        if not args:
            return
        ctx = command.make_context(name, args, parent=ctx)
        args = [*getattr(ctx, "_protected_args", []), *ctx.args]
    assert not args, f"unexpected extra arguments {args}"


def test_commands_are_found():
    wheres = {where.split(":")[0] for where, _ in COMMANDS}
    assert "README.md" in wheres and "stylegan2_ffhq256.toml" in wheres and len(COMMANDS) > 50


@pytest.mark.parametrize("where,argv", COMMANDS, ids=[w for w, _ in COMMANDS])
def test_quoted_command_parses(where, argv):
    try:
        parse(argv)
    except Exception as exc:  # Click's UsageError / BadParameter (vendored or not)
        pytest.fail(f"{where}: nat-gan {' '.join(argv)}: {type(exc).__name__}: {exc}")


def test_the_parser_check_can_fail():
    """The check above refuses what nat-gan would refuse (a missing --recipe flag, an unknown option)."""
    for argv in (["train", "recipes/stylegan2_ffhq256.toml"], ["sample", "--ckpt", "x.pt", "--nope"],
                 ["fid", "--num", "many"]):
        with pytest.raises(Exception, match="(?i)unexpected|no such option|valid integer"):
            parse(argv)


def test_cheap_quoted_commands_run(tmp_path, monkeypatch, capsys):
    """The demo recipe's prepare command and the dry run a README command describes run for real (tiny sizes
    where the command names a big dataset); bench --list and doctor --json print."""
    monkeypatch.chdir(tmp_path)
    demo = dict(COMMANDS)["demo.toml:17"]
    assert demo[:2] == ["prepare", "digits"]
    with pytest.raises(SystemExit) as exc:
        main([*demo, "--sizes", "32"])
    assert exc.value.code in (0, None)
    assert (tmp_path / "demo" / "digits.lmdb").is_dir()
    for argv in (["bench", "--list"], ["doctor", "--json"]):
        assert [argv] == [c for _, c in COMMANDS if c == argv][:1]
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code in (0, 1, None)  # doctor exits 1 where a required check fails (no GPU is fine)
    capsys.readouterr()
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    with pytest.raises(SystemExit) as exc:
        main(["train", "--recipe", str(repo / "recipes/demo.toml"), "--data", "demo/digits.lmdb", "--outdir",
              "runs/demo", "--dry-run", "--json"])
    assert exc.value.code in (0, None)
    assert json.loads(capsys.readouterr().out)["data"]["images"] == 1797
