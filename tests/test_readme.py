"""The README's console example is real output: run it and compare."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from ttlpolicy.cli.main import main

README = Path(__file__).parent.parent / "README.md"


def test_console_example_is_current(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    block = re.search(r"```console\n\$ (.*?)\n```", README.read_text(), re.S)
    assert block, "README has no console example"
    lines = block.group(1).split("\n")
    command = lines.pop(0)
    while command.endswith("\\"):
        command = command[:-1] + lines.pop(0)
    args = shlex.split(command)
    assert args[0] == "ttlpolicy"
    monkeypatch.chdir(README.parent)
    assert main(args[1:]) == 0
    assert capsys.readouterr().out.rstrip("\n").split("\n") == lines
