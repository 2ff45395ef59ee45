"""One command: ``python -m osgha_lite <command>`` (the ``osgha`` script), and the old forms still working."""

from __future__ import annotations

import subprocess
import sys

import pytest

from osgha_lite.__main__ import COMMANDS, OLD_FORMS

EXPECTED = ("run", "augment", "evaluate", "search", "manifest", "envcheck", "book")


def osgha(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=120)


def test_help_lists_every_command():
    assert tuple(COMMANDS) == EXPECTED
    done = osgha("osgha_lite", "--help")
    assert done.returncode == 0
    for command in EXPECTED:
        assert f"\n  {command} " in done.stdout
    assert "examples:" in done.stdout


@pytest.mark.parametrize("command", EXPECTED)
def test_every_command_has_help_with_an_example(command):
    done = osgha("osgha_lite", command, "--help")
    assert done.returncode == 0, done.stderr
    assert "example" in done.stdout and f"python -m osgha_lite {command}" in done.stdout


def test_an_unknown_command_is_one_error_and_the_list():
    done = osgha("osgha_lite", "train")
    assert done.returncode == 2 and "unknown command 'train'" in done.stderr and "envcheck" in done.stderr


@pytest.mark.parametrize("module", sorted(OLD_FORMS))
def test_the_old_forms_name_the_new_one_and_run_it(module):
    done = osgha(f"osgha_lite.{module}", "--help")
    assert done.returncode == 0, done.stderr
    (note,) = done.stderr.strip().splitlines()
    assert note == (f"note: `python -m osgha_lite.{module}` is now `python -m osgha_lite {OLD_FORMS[module]}` "
                    f"(or `osgha {OLD_FORMS[module]}`)")
    assert f"python -m osgha_lite {OLD_FORMS[module]}" in done.stdout
