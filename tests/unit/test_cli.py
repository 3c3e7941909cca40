"""The CLI explains itself: every sub-command's --help says what it does, every option has help, and
--version names the package's version."""
from __future__ import annotations

import argparse
from importlib.metadata import version

import pytest

from videossl import cli


def _commands(parser: argparse.ArgumentParser, path=()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*path, name), sub
                yield from _commands(sub, (*path, name))


def test_every_sub_command_and_option_explains_itself():
    commands = dict(_commands(cli._parser()))
    assert {("ingest",), ("evaluate",), ("pipeline", "compile"), ("grant-access",)} <= set(commands)
    for path, parser in commands.items():
        assert parser.description, f"videossl {' '.join(path)} --help says nothing about what it does"
        for action in parser._actions:
            if action.option_strings and not isinstance(action, argparse._HelpAction):
                assert action.help, f"videossl {' '.join(path)} {action.option_strings[0]} has no help"


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"videossl {version('videossl')}"


@pytest.mark.parametrize("shell", cli.COMPLETION_SHELLS)
def test_completion_scripts_complete_the_sub_commands(shell, capsys):
    assert cli.main(["completion", shell]) == 0
    script = capsys.readouterr().out
    for name in ("probe-eval", "review", "--params"):
        assert name in script, (shell, name)


def test_completion_in_bash_offers_the_sub_commands(tmp_path, capsys):
    import subprocess

    assert cli.main(["completion", "bash"]) == 0
    (tmp_path / "videossl.bash").write_text(capsys.readouterr().out)
    proc = subprocess.run(["bash", "-c", f'source {tmp_path / "videossl.bash"}; COMP_WORDS=(videossl rev); '
                           'COMP_CWORD=1; _shtab_videossl; echo "${COMPREPLY[@]}"'],
                          capture_output=True, text=True, timeout=60)
    assert proc.stdout.split() == ["review"], proc.stderr


def test_validate_json_answers_on_stdout_either_way(tmp_path, capsys):
    import json

    assert cli.main(["validate", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["valid"] is True and got["params"]["pretrain"]["steps"] >= 1
    assert cli.main(["validate", "--json", "-S", "pretrain.steps=x"]) == 2
    got = json.loads(capsys.readouterr().out)
    assert got["valid"] is False and "pretrain.steps" in got["error"]
