"""``ttlpolicy`` entry point. Exit codes: 0 clean, 1 findings or failed tests, 2 usage or I/O error."""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import NoReturn, Sequence

from .. import __version__

# Subcommand modules, each with ``register(subparsers)``; imported lazily so that
# ``ttlpolicy lint`` does not pay for the HTTP stack.
COMMANDS = ("lint", "decide", "test", "diff", "serve", "schema", "heatmap", "report", "compile", "bundle",
            "revoke", "revocations", "emergency")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse exits 2 on usage errors; keep that, drop the noise
        self.print_usage(sys.stderr)
        print(f"ttlpolicy: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ttlpolicy", description="Adaptive token lifetimes as declarative, type-checked policy.")
    parser.add_argument("--version", action="version", version=f"ttlpolicy {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in COMMANDS:
        try:
            module = importlib.import_module(f".{name}", __package__)
        except ModuleNotFoundError as exc:
            if exc.name == f"{__package__}.{name}":
                continue  # a subcommand not built in this installation
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `ttlpolicy decide ... | head`
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
