"""The CLI teaches: help everywhere, every option described, two examples per command, completion."""

from __future__ import annotations

import argparse
import subprocess

import pytest
from required import require_program

from ttlpolicy import __version__
from ttlpolicy.cli.completion import bash_script, describe, fish_script, zsh_script
from ttlpolicy.cli.main import build_parser, main, subcommands

COMMANDS = subcommands(build_parser())


def test_bare_ttlpolicy_and_help_print_the_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    bare = capsys.readouterr().out
    assert "usage: ttlpolicy" in bare and "examples:" in bare
    for name in COMMANDS:
        assert name in bare
    assert main(["help"]) == 0
    assert capsys.readouterr().out == bare


def test_help_of_one_command_and_a_misspelt_one(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["help", "lint"]) == 0
    assert "usage: ttlpolicy lint" in capsys.readouterr().out
    assert main(["help", "lnt"]) == 2
    assert "no command 'lnt' — did you mean 'lint'?" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["-V", "--version"])
def test_version(flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([flag])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"ttlpolicy {__version__}"


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_explains_every_option_and_shows_two_examples(name: str, capsys: pytest.CaptureFixture[str]
                                                                     ) -> None:
    parser = COMMANDS[name]
    assert parser.description, f"{name} has no description"
    undescribed = [action.dest for action in parser._actions
                   if not action.help and not isinstance(action, (argparse._HelpAction, argparse._SubParsersAction))]
    assert not undescribed, f"ttlpolicy {name}: options without help: {undescribed}"
    examples = getattr(parser, "examples", ())
    assert len(examples) >= 2, f"ttlpolicy {name} needs two examples (EXAMPLES in its module)"
    for example in examples:
        assert example.startswith(("ttlpolicy ", "echo ", "printf ")) and f"ttlpolicy {name}" in example, example
    with pytest.raises(SystemExit) as exit_:
        main([name, "--help"])
    assert exit_.value.code == 0
    shown = capsys.readouterr().out
    assert "examples:" in shown and examples[0] in shown


def _bash_complete(script: str, words: list[str]) -> list[str]:
    line = " ".join(words)
    program = (f"{script}\nCOMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; _ttlpolicy\n"
               "printf '%s\\n' \"${COMPREPLY[@]}\"")
    done = subprocess.run(["bash", "--norc", "-c", program], capture_output=True, text=True, check=True)
    return done.stdout.split()


def test_bash_completion_completes_commands_options_and_values(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["completion", "bash"]) == 0
    script = capsys.readouterr().out
    assert set(COMMANDS) <= set(_bash_complete(script, ["ttlpolicy", "''"]))
    assert _bash_complete(script, ["ttlpolicy", "li"]) == ["lint"]
    assert "--strict" in _bash_complete(script, ["ttlpolicy", "lint", "--s"])
    assert _bash_complete(script, ["ttlpolicy", "lint", "--format", "''"]) == ["text", "json", "github", "sarif"]
    assert _bash_complete(script, ["ttlpolicy", "completion", "''"]) == ["bash", "zsh", "fish"]


def test_completion_is_generated_from_the_parsers_so_new_commands_complete() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    extra = sub.add_parser("frobnicate", help="a command added later")
    extra.add_argument("--level", choices=["low", "high"], help="how much")
    options, commands = describe(parser)
    for render in (bash_script, zsh_script, fish_script):
        script = render(options, commands)
        assert "frobnicate" in script and "--level" in script or "-l level" in script, render.__name__


def test_zsh_completion_is_valid_zsh(capsys: pytest.CaptureFixture[str]) -> None:
    zsh = require_program("zsh")
    assert main(["completion", "zsh"]) == 0
    script = capsys.readouterr().out
    assert script.startswith("#compdef ttlpolicy")
    subprocess.run([zsh, "-n", "-c", script], check=True)


def test_fish_completion_is_valid_fish(capsys: pytest.CaptureFixture[str]) -> None:
    fish = require_program("fish")
    assert main(["completion", "fish"]) == 0
    script = capsys.readouterr().out
    subprocess.run([fish, "--no-execute", "-c", script], check=True)

    def complete(line: str) -> list[str]:
        done = subprocess.run([fish, "-c", f"{script}\ncomplete -C {line!r}"], capture_output=True, text=True,
                              check=True)
        return [entry.split("\t")[0] for entry in done.stdout.splitlines()]

    assert complete("ttlpolicy li") == ["lint"]
    assert complete("ttlpolicy lint --format ") == ["github", "json", "sarif", "text"]
    assert complete("ttlpolicy lint --st") == ["--strict"]
