"""``ttlpolicy`` entry point. Exit codes: 0 clean, 1 findings or failed tests, 2 usage or I/O error.

A subcommand is a module in this package listed in :data:`COMMANDS`, with ``register(sub)``
(adds its parser with ``sub.add_parser``) and ``EXAMPLES``, a tuple of at least two example
command lines, each optionally followed by ``  # what it does``. Everything else — ``--help``
with the examples, ``ttlpolicy help COMMAND``, shell completion — comes from the parser tree,
so a new subcommand gets it without further code (``tests/test_cli_help.py`` holds every
subcommand to that: every option described, two examples).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any, NoReturn, Sequence

from .. import __version__
from .output import fail, problems_as_json

# Subcommand modules, each with ``register(subparsers)`` and ``EXAMPLES``; imported lazily
# inside the subcommand's ``run`` so that ``ttlpolicy lint`` does not pay for the HTTP stack.
COMMANDS = ("init", "lint", "fmt", "test", "decide", "eval", "diff", "serve", "schema", "heatmap", "report",
            "verify", "compile", "bundle", "revoke", "revocations", "emergency", "completion")

DESCRIPTION = "Adaptive token lifetimes as declarative, type-checked policy."
MAIN_EXAMPLES = (
    "ttlpolicy init my-policies            # a working policy set with tests and CI to start from",
    "ttlpolicy lint && ttlpolicy test      # check policies/ and run policies/tests/",
    "ttlpolicy help decide                 # the options and examples of one command",
)


class Parser(argparse.ArgumentParser):
    """argparse with the examples printed under the options, and usage errors on one line (exit 2)."""

    def __init__(self, *args: Any, examples: Sequence[str] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.examples = tuple(examples)

    def format_help(self) -> str:
        text = super().format_help()
        if self.examples:
            text += "\nexamples:\n" + "".join(f"  {example}\n" for example in self.examples)
        return text

    def error(self, message: str) -> NoReturn:  # argparse exits 2 on usage errors; keep that, drop the noise
        # Always text: the command line that would say --format json is the one that cannot be read.
        self.print_usage(sys.stderr)
        raise SystemExit(fail("usage", message))


def build_parser() -> Parser:
    parser = Parser(prog="ttlpolicy", description=DESCRIPTION, examples=MAIN_EXAMPLES)
    parser.add_argument("-V", "--version", action="version", version=f"ttlpolicy {__version__}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    help_parser = sub.add_parser("help", help="show the help of ttlpolicy or of one command",
                                 description="Show the help of ttlpolicy, or of COMMAND (the same as "
                                             "`ttlpolicy COMMAND --help`).",
                                 examples=("ttlpolicy help", "ttlpolicy help test"))
    help_parser.add_argument("topic", nargs="?", metavar="COMMAND", help="the command to explain")
    help_parser.set_defaults(run=lambda args: _help(parser, args.topic))
    for name in COMMANDS:
        try:
            module = importlib.import_module(f".{name}", __package__)
        except ModuleNotFoundError as exc:
            if exc.name == f"{__package__}.{name}":
                continue  # a subcommand not built in this installation
            raise
        module.register(sub)
        command = sub.choices.get(name)
        if isinstance(command, Parser):
            command.examples = tuple(getattr(module, "EXAMPLES", ()))
    return parser


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The subcommand parsers of ``parser``, by name (aliases left out)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            seen: set[int] = set()
            found = {}
            for name, child in action.choices.items():
                if id(child) not in seen:
                    seen.add(id(child))
                    found[name] = child
            return found
    return {}


def command_help(parser: argparse.ArgumentParser) -> dict[str, str]:
    """One line of help per subcommand, as listed in ``ttlpolicy --help``."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return {choice.dest: choice.help or "" for choice in action._choices_actions}
    return {}


def _help(parser: argparse.ArgumentParser, topic: str | None) -> int:
    if topic is None:
        parser.print_help()
        return 0
    commands = subcommands(parser)
    if topic not in commands:
        from ..suggest import did_you_mean

        return fail("usage", f"no command {topic!r}{did_you_mean(topic, commands)} (commands: {', '.join(commands)})")
    commands[topic].print_help()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv:  # `ttlpolicy` alone: say what it can do rather than "a command is required"
        parser.print_help()
        return 0
    args = parser.parse_args(argv)
    if getattr(args, "run", None) is None:
        parser.print_help()
        return 0
    try:
        with problems_as_json(getattr(args, "format", None) == "json"):  # --format json: problems as JSON too
            return int(args.run(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `ttlpolicy decide ... | head`
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
