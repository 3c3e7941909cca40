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
