"""Run the examples in the project's Markdown pages and compare them with what the page shows.

The convention is written for contributors in docs/writing-docs.md; this module implements it.
In short, per page (README.md, docs/**/*.md, examples/**/*.md, ... — every tracked ``*.md``):

* ```` ```console ```` blocks: ``$ command`` lines are run, the lines after each are the expected
  output (stdout and stderr as a terminal shows them). ``…`` matches any text within a line; a
  line holding only ``…`` matches any number of lines; expected output that is JSON is compared
  as a subset (keys not shown are not checked; ``"…"`` matches any value, ``"abc…"`` a prefix).
  A command must exit 0 unless it ends with the comment ``# exit N``.
* ```` ```sh ```` / ``bash`` / ``shell`` blocks: every command is run and must exit 0; output is
  not compared.
* ```` ```python ```` blocks: executed in one namespace per page, in order; an expression
  statement followed by ``# → VALUE`` must have ``repr(value)`` equal to VALUE.
* A directive in an HTML comment right above a block, ``<!-- doc-test: key=value ... -->``,
  adjusts it: ``skip="reason"``, ``file=PATH`` (write the block to PATH instead of running it),
  ``setup="..."`` (hidden code run first, in the block's language), ``now=RFC3339`` (move the
  page's frozen clock), ``server="ttlpolicy serve ..."`` / ``server="python -m examples.issuer ..."``
  (start that service in-process; ``localhost:PORT`` in commands reaches it).

Each page runs in its own temporary directory holding copies of policies/, examples/ and schema/,
with the clock frozen at :data:`DEFAULT_NOW` (``$ sleep N`` moves it N seconds instead of waiting).
"""

from __future__ import annotations

import ast
import contextlib
import difflib
import io
import json
import os
import queue
import re
import shlex
import shutil
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

REPO = Path(__file__).resolve().parents[1]
# A Tuesday, 10:00 in Berlin (the bundled policies' zone): office hours, so that examples show
# the daytime lifetimes unless they say otherwise with `now=`.
DEFAULT_NOW = "2025-03-04T09:00:00+00:00"
COPIED = ("policies", "examples", "schema")
EXECUTED = {"console", "sh", "bash", "shell", "python"}
DIRECTIVE_KEYS = {"skip", "file", "setup", "now", "server"}
COMMAND_TIMEOUT = 60.0
_SKIPPED_DIRS = {".git", ".venv", "venv", "build", "dist", "node_modules", ".pytest_cache", ".mypy_cache",
                 ".hypothesis", "__pycache__"}


class DocExampleError(AssertionError):
    """An example that does not do what its page shows, with the page and line."""


@dataclass
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    language: str
    text: str
    directives: dict[str, str] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"{_relative(self.page)}:{self.line}"


def pages(root: Path = REPO) -> list[Path]:
    """Every Markdown page of the project (new pages are picked up without registering them)."""
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIPPED_DIRS and not d.startswith("."))
        found.extend(Path(dirpath, name) for name in sorted(filenames) if name.endswith(".md"))
    return found


_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
_DIRECTIVE_START = "<!-- doc-test:"


def parse_blocks(page: Path, text: str | None = None) -> list[Block]:
    """The fenced blocks of a page with the directive written right above each."""
    lines = (page.read_text(encoding="utf-8") if text is None else text).split("\n")
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        match = _FENCE.match(lines[index])
        if not match:
            index += 1
            continue
        fence, indent = match.group("fence"), len(match.group("indent"))
        language = (match.group("info").strip().split() or [""])[0].lower()
        end = index + 1
        while end < len(lines) and not (lines[end].strip().startswith(fence)
                                         and lines[end].strip().strip(fence[0]) == ""):
            end += 1
        body = "\n".join(line[indent:] if line[:indent].strip() == "" else line for line in lines[index + 1:end])
        directives = _directive_above(page, lines, index)
        blocks.append(Block(page, index + 1, language, body, directives))
        index = end + 1
    return blocks


def _directive_above(page: Path, lines: list[str], fence_index: int) -> dict[str, str]:
    end = fence_index - 1
    if end < 0 or not lines[end].rstrip().endswith("-->"):
        return {}
    start = end
    while start >= 0 and _DIRECTIVE_START not in lines[start]:
        if "<!--" in lines[start] or (start < end and "-->" in lines[start]):
            return {}
        start -= 1
    if start < 0:
        return {}
    comment = "\n".join(lines[start:end + 1]).strip()
    body = comment[len(_DIRECTIVE_START):-len("-->")] if comment.startswith(_DIRECTIVE_START) else None
    if body is None:
        return {}
    where = f"{_relative(page)}:{start + 1}"
    pairs: list[tuple[str, str]] = []
    if body.split("\n", 1)[0].strip() == "":  # written as YAML over several lines
        import yaml

        try:
            loaded = yaml.safe_load(body)
        except yaml.YAMLError as exc:
            raise DocExampleError(f"{where}: cannot read the doc-test directive: {exc}") from None
        if not isinstance(loaded, dict):
            raise DocExampleError(f"{where}: a multi-line doc-test directive is a YAML mapping")
        pairs = [(str(key), "" if value is None else str(value)) for key, value in loaded.items()]
    else:
        try:
            pairs = [(token.partition("=")[0], token.partition("=")[2]) for token in shlex.split(body)]
        except ValueError as exc:
            raise DocExampleError(f"{where}: cannot read the doc-test directive: {exc}") from None
    directives: dict[str, str] = {}
    for key, value in pairs:
        if key not in DIRECTIVE_KEYS:
            raise DocExampleError(f"{where}: unknown doc-test directive {key!r} "
                                  f"(known: {', '.join(sorted(DIRECTIVE_KEYS))}; see docs/writing-docs.md)")
        if key in ("skip", "file", "server", "now") and not value:
            raise DocExampleError(f"{where}: doc-test directive {key} needs a value, e.g. {key}=\"...\"")
        directives[key] = value
    return directives


# --------------------------------------------------------------------------- commands

@dataclass
class Command:
    line: int
    text: str
    expected: str
    exit_code: int = 0


_EXIT_COMMENT = re.compile(r"\s+#\s*exit\s+(\d+)\s*$")


def _complete(command: str) -> bool:
    if command.endswith("\\"):
        return False
    try:
        shlex.split(command, comments=True)
    except ValueError:  # an open quote: a JSON body written over several lines
        return False
    return True


def console_commands(block: Block) -> list[Command]:
    """``$ command`` lines (with their continuation lines) and the output shown after each."""
    lines = block.text.split("\n")
    commands: list[Command] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        if not line.startswith("$ "):
            if commands:
                commands[-1].expected += line + "\n"
            elif line.strip():
                raise DocExampleError(f"{block.where}: console output before the first `$ ` command: {line!r}")
            index += 1
            continue
        start = index
        text = line[2:]
        while not _complete(text) and index + 1 < len(lines):
            index += 1
            text += "\n" + lines[index]
        exit_code = 0
        last = text.rsplit("\n", 1)[-1]
        found = _EXIT_COMMENT.search(last)
        if found:
            exit_code = int(found.group(1))
            text = text[:len(text) - len(last)] + last[:found.start()]
        commands.append(Command(block.line + 1 + start, text, "", exit_code))
        index += 1
    return commands


def script_commands(block: Block) -> list[Command]:
    """The commands of an ``sh`` block: every non-comment line, continuation lines joined."""
    lines = block.text.split("\n")
    commands: list[Command] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        if not line.strip() or line.lstrip().startswith("#"):
            index += 1
            continue
        start, text = index, line
        while not _complete(text) and index + 1 < len(lines):
            index += 1
            text += "\n" + lines[index]
        commands.append(Command(block.line + 1 + start, text, ""))
        index += 1
    return commands


# --------------------------------------------------------------------------- output comparison

ELLIPSIS = "…"


def output_matches(expected: str, actual: str) -> bool:
    """Does ``actual`` show what ``expected`` shows? (JSON as a subset, text with ``…`` wildcards)."""
    expected, actual = _normalise(expected), _normalise(actual)
    if expected[:1] in ("{", "["):
        try:
            want = json.loads(expected)
        except ValueError:
            pass
        else:
            try:
                got = json.loads(actual)
            except ValueError:
                return False
            return json_matches(want, got)
    return _text_pattern(expected).fullmatch(actual) is not None


def json_matches(want: Any, got: Any) -> bool:
    if isinstance(want, str) and want.endswith(ELLIPSIS):
        return want == ELLIPSIS or (isinstance(got, str) and got.startswith(want[:-1]))
    if isinstance(want, dict):
        return isinstance(got, dict) and all(key in got and json_matches(value, got[key])
                                             for key, value in want.items())
    if isinstance(want, list):
        return isinstance(got, list) and len(want) == len(got) and all(map(json_matches, want, got))
    if isinstance(want, bool) or isinstance(got, bool):
        return want is got
    return bool(want == got)


def _normalise(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.strip("\n").split("\n")).strip("\n")


def _text_pattern(expected: str) -> re.Pattern[str]:
    parts = []
    for line in expected.split("\n"):
        if line.strip() == ELLIPSIS:
            parts.append(r"(?:[^\n]*(?:\n|$))*?")
        else:
            parts.append(".*?".join(re.escape(piece) for piece in line.split(ELLIPSIS)) + r"(?:\n|$)")
    return re.compile("".join(parts).removesuffix(r"(?:\n|$)") + r"\n?", re.S)


def _mismatch(block: Block, command: Command, actual: str, code: int) -> str:
    expected = command.expected
    try:  # JSON on both sides: compare it laid out, one key per line
        expected, actual = (json.dumps(json.loads(text), indent=1, ensure_ascii=False) for text in (expected, actual))
    except ValueError:
        pass
    diff = "\n".join(difflib.unified_diff(_normalise(expected).split("\n"), _normalise(actual).split("\n"),
                                          "shown in the page", "printed", lineterm=""))
    return (f"{_relative(block.page)}:{command.line}: `{command.text}` (exit {code}) printed something else "
            f"than the page shows:\n{diff}")


# --------------------------------------------------------------------------- the page runner

class PageRun:
    """Runs one page's blocks in order in a sandbox directory with a frozen clock."""

    def __init__(self, page: Path, sandbox: Path) -> None:
        import time_machine

        self.page = page
        self.sandbox = sandbox
        for name in COPIED:
            if (REPO / name).is_dir():
                shutil.copytree(REPO / name, sandbox / name, ignore=shutil.ignore_patterns("__pycache__", "data"))
        self.clock = time_machine.travel(datetime.fromisoformat(DEFAULT_NOW), tick=False)
        self.traveller = self.clock.start()
        self.namespace: dict[str, Any] = {"__name__": "__doc_example__"}
        self.servers: dict[int, _Server] = {}
        self.shell = _Shell(sandbox, self._environment())

    def _environment(self) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith("TTLPOLICY_")}
        env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
        env["PYTHONPATH"] = str(self.sandbox)
        env["NO_COLOR"] = "1"
        env["TTLPOLICY_NO_PARSER_CACHE"] = env.get("TTLPOLICY_NO_PARSER_CACHE", "")
        return env

    def close(self) -> None:
        for server in self.servers.values():
            server.stop()
        self.shell.close()
        self.clock.stop()

    def run(self, blocks: list[Block]) -> int:
        """Run every block; returns how many ran. Raises :class:`DocExampleError` at the first failure."""
        ran = 0
        for block in blocks:
            if "skip" in block.directives:
                continue
            if "now" in block.directives:
                self.traveller.move_to(datetime.fromisoformat(block.directives["now"]))
            if "setup" in block.directives and block.language != "python":
                with _inside(self.sandbox):
                    code, output = self.shell.run(block.directives["setup"])
                if code != 0:
                    raise DocExampleError(f"{block.where}: the block's setup failed (exit {code}):\n{output}")
            if "server" in block.directives:
                with _inside(self.sandbox):
                    self._start_server(block)
            if "file" in block.directives:
                target = self.sandbox / block.directives["file"]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(block.text.rstrip("\n") + "\n", encoding="utf-8")
                ran += 1
                continue
            if block.language not in EXECUTED:
                continue
            with _inside(self.sandbox):
                if block.language == "python":
                    self._run_python(block)
                else:
                    self._run_shell(block)
            ran += 1
        return ran

    # ---- shell

    def _run_shell(self, block: Block) -> None:
        console = block.language == "console"
        for command in console_commands(block) if console else script_commands(block):
            code, actual = self._run_command(block, command.text)
            if code != command.exit_code:
                raise DocExampleError(f"{_relative(block.page)}:{command.line}: `{command.text}` exited {code}, "
                                      f"the page expects {command.exit_code}:\n{actual}")
            if console and not output_matches(command.expected, actual):
                raise DocExampleError(_mismatch(block, command, actual, code))

    def _run_command(self, block: Block, text: str) -> tuple[int, str]:
        for doc_port, server in self.servers.items():
            text = re.sub(rf"\b(localhost|127\.0\.0\.1):{doc_port}\b", f"127.0.0.1:{server.port}", text)
        words = text.split()
        if len(words) == 2 and words[0] == "sleep":  # the clock is frozen: move it instead of waiting
            self.traveller.shift(float(words[1]))
            return 0, ""
        if words and words[0] == "ttlpolicy" and not re.search(r"[|&;<>$`*?~(){}]", text):
            return _run_cli(shlex.split(text.replace("\\\n", " "), comments=True)[1:])
        return self.shell.run(text)

    # ---- python

    def _run_python(self, block: Block) -> None:
        if "setup" in block.directives:
            exec(compile(block.directives["setup"], f"{block.where} (setup)", "exec"), self.namespace)
        source = block.text
        try:
            tree = ast.parse(source, filename=block.where)
        except SyntaxError as exc:
            raise DocExampleError(f"{_relative(block.page)}:{block.line + (exc.lineno or 0)}: {exc.msg}") from None
        lines = source.split("\n")
        for statement in tree.body:
            line = block.line + statement.lineno
            expected = _shown_value(lines[(statement.end_lineno or statement.lineno) - 1])
            try:
                with contextlib.redirect_stdout(io.StringIO()):
                    if isinstance(statement, ast.Expr) and expected is not None:
                        value = eval(compile(ast.Expression(statement.value), block.where, "eval"), self.namespace)
                    else:
                        exec(compile(ast.Module([statement], []), block.where, "exec"), self.namespace)
                        continue
            except Exception as exc:
                raise DocExampleError(f"{_relative(block.page)}:{line}: the example raised "
                                      f"{type(exc).__name__}: {exc}") from exc
            if not output_matches(expected, repr(value)):
                raise DocExampleError(f"{_relative(block.page)}:{line}: the page shows {expected}, "
                                      f"the code gives {value!r}")

    # ---- servers

    def _start_server(self, block: Block) -> None:
        words = shlex.split(block.directives["server"])
        environment = {}
        while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
            name, _, value = words.pop(0).partition("=")
            environment[name] = value
        with _environment(environment):
            self._start(block, words)

    def _start(self, block: Block, words: list[str]) -> None:
        if words[:2] == ["ttlpolicy", "serve"]:
            app, doc_port = _ttlpolicy_app(words[2:], block)
        elif words[:3] == ["python", "-m", "examples.issuer"]:
            app, doc_port = _issuer_app(words[3:], self.sandbox)
        else:
            raise DocExampleError(f"{block.where}: server= knows `ttlpolicy serve ...` and "
                                  f"`python -m examples.issuer ...`, not {words[:3]}")
        if doc_port in self.servers:
            self.servers.pop(doc_port).stop()
        self.servers[doc_port] = _Server(app)


def _shown_value(line: str) -> str | None:
    marker = line.rfind("# → ")
    return line[marker + len("# → "):].strip() if marker >= 0 else None


def _run_cli(argv: list[str]) -> tuple[int, str]:
    """``ttlpolicy ARGS`` in this process (fast, and under the frozen clock)."""
    from ttlpolicy.cli.main import main

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer), \
            _swap_stdin(io.StringIO("")):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse: --help, usage errors
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    return int(code), buffer.getvalue()


@contextlib.contextmanager
def _swap_stdin(stream: io.StringIO) -> Iterator[None]:
    saved = sys.stdin
    sys.stdin = stream
    try:
        yield
    finally:
        sys.stdin = saved


@contextlib.contextmanager
def _environment(variables: dict[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def _inside(directory: Path) -> Iterator[None]:
    saved = os.getcwd()
    os.chdir(directory)
    try:
        yield
    finally:
        os.chdir(saved)


def _ttlpolicy_app(argv: list[str], block: Block) -> tuple[Any, int]:
    """The app `ttlpolicy serve ARGV` would serve, built the same way (settings, checks, policies)."""
    from ttlpolicy import PolicyError, load_policies
    from ttlpolicy.cli.main import build_parser
    from ttlpolicy.server.app import create_app
    from ttlpolicy.server.config import ConfigError

    args = build_parser().parse_args(["serve", *argv])
    from ttlpolicy.cli.serve import settings_from_args

    try:
        settings = settings_from_args(args)
    except ConfigError as exc:
        raise DocExampleError(f"{block.where}: `ttlpolicy serve` refuses to start: {exc}") from None
    settings = settings.model_copy(update={"reload": settings.reload.model_copy(update={"watch": False})})
    try:
        policies = load_policies(settings.policies)
    except PolicyError as exc:
        raise DocExampleError(f"{block.where}: the policies do not load:\n{exc.render()}") from None
    return create_app(settings, policies), settings.port


def _issuer_app(argv: list[str], sandbox: Path) -> tuple[Any, int]:
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from examples.issuer.app import app_from_args

    app, port = app_from_args(argv, data_dir=sandbox / "issuer-data")
    return app, port


class _Server:
    """A uvicorn server on a free loopback port in a thread of this process (so the clock is frozen)."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True)
        self.thread.start()
        for _ in range(600):
            if self.server.started or not self.thread.is_alive():
                break
            threading.Event().wait(0.01)
        if not self.server.started:
            raise DocExampleError("the example server did not start")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.socket.close()


class _Shell:
    """One bash per page, so that variables and files carry from one command to the next."""

    _MARK = re.compile(r"^\x1e(\d+)\x1e$")

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(["bash", "--noprofile", "--norc"], cwd=cwd, env=env, stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def run(self, command: str) -> tuple[int, str]:
        assert self.process.stdin is not None
        # The command's stdin is /dev/null so that it can never read the next commands.
        self.process.stdin.write(f"{{ {command}\n}} </dev/null 2>&1\nprintf '\\n\\036%d\\036\\n' $?\n")
        self.process.stdin.flush()
        output: list[str] = []
        while True:
            try:
                line = self.lines.get(timeout=COMMAND_TIMEOUT)
            except queue.Empty:
                self.close()
                raise DocExampleError(f"`{command}` did not finish within {COMMAND_TIMEOUT:.0f} s") from None
            if line is None:
                raise DocExampleError(f"the shell exited while running `{command}`:\n{''.join(output)}")
            mark = self._MARK.match(line.rstrip("\n"))
            if mark:
                text = "".join(output)
                return int(mark.group(1)), text[:-1] if text.endswith("\n") else text
            output.append(line)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


def _relative(path: Path) -> str:
    try:
        return str(path.relative_to(REPO))
    except ValueError:
        return str(path)
