"""Stage 1 — load: read a policy file safely and remember where every value came from.

PyYAML's ``SafeLoader`` builds plain data and never runs code, but on its own it accepts
duplicate keys (the last silently wins), expands aliases without limit (the "billion laughs"
bomb) and reads files of any size. This module composes the node graph, refuses those
cases with located problems, and records a line and column for every key and value so that
later stages can point at the exact spot.
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import Location, ProblemCollector

MAX_FILE_BYTES = 1 << 20  # 1 MiB: a hand-written policy is a few KiB; anything larger is a mistake
MAX_NODES = 100_000  # values after alias expansion; a billion-laughs file stops here, early
MAX_DEPTH = 64  # nesting levels; no policy needs more, and deeper input would exhaust the stack

# Keys are whatever YAML scalars the document used: mostly str, int for list indices, but a
# mapping key may also be a bool or float (``1.5: x``); those end up in paths too.
JsonPath = tuple[str | int | float, ...]


@dataclass
class Document:
    """A loaded YAML document: plain data plus the position of each value and key."""

    file: str
    source: str
    data: Any
    value_marks: dict[JsonPath, yaml.Node] = field(default_factory=dict)
    key_marks: dict[JsonPath, yaml.Node] = field(default_factory=dict)
    aliases: set[JsonPath] = field(default_factory=set)  # values written as a YAML alias (`*name`)

    def location(self, path: JsonPath, *, key: bool = False) -> Location:
        """Where ``path`` is in the file; falls back to the nearest enclosing value."""
        marks = self.key_marks if key else self.value_marks
        while path not in marks and path:
            path = path[:-1]
        node = marks.get(path) or self.value_marks.get(path)
        if node is None:
            return Location(self.file, 1, 1)
        return Location(self.file, node.start_mark.line + 1, node.start_mark.column + 1)

    def string_location(self, path: JsonPath, offset: int) -> Location:
        """Where character ``offset`` of the string at ``path`` is in the file.

        Works for every scalar style, multi-line block strings included, by walking the raw
        source text of the node in step with its value: each value character is found at or
        after the previous one (folding and indentation only ever add characters).
        """
        node = self.value_marks.get(path)
        if not isinstance(node, yaml.ScalarNode) or not isinstance(node.value, str):
            return self.location(path)
        raw = self.source[node.start_mark.index:node.end_mark.index]
        value = node.value
        pos = 0
        if node.style in ("|", ">"):
            pos = raw.find("\n") + 1  # the indicator line holds no value characters
        elif node.style in ("'", '"'):
            pos = 1
        for ch in value[:offset]:
            nxt = raw.find(ch, pos)
            if ch == " " and node.style == ">":  # a folded line break stands for a space
                brk = raw.find("\n", pos)
                nxt = brk if nxt == -1 or (brk != -1 and brk < nxt) else nxt
            if nxt == -1:
                break
            pos = nxt + 1
        while pos < len(raw) and raw[pos] in " \n" and (offset < len(value) and value[offset] not in " \n"):
            pos += 1
        index = node.start_mark.index + pos
        line = self.source.count("\n", 0, index)
        column = index - (self.source.rfind("\n", 0, index) + 1)
        return Location(self.file, line + 1, column + 1)


_PLAIN_TAGS = frozenset(f"tag:yaml.org,2002:{t}" for t in ("map", "seq", "str", "int", "float", "bool", "null"))


# libyaml's parser is ~15x faster than PyYAML's pure-Python one and gives the same marks
# (character offsets, lines, columns); PyYAML wheels ship it, but fall back when it is missing.
_SafeBase: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_SafeBase):
    """A safe loader; the composer is used on its own, the constructor only for scalars."""


class _AliasLoader(yaml.SafeLoader):
    """The pure-Python safe loader, remembering where each alias (``*name``) was written.

    Composing resolves an alias to the very node its anchor names, so that node's marks point
    at the anchor; a rule repeated with ``- *rule`` should be reported at the alias. libyaml's
    composer cannot be hooked, so this slower loader is used only for files that hold an alias.
    """

    def __init__(self, stream: str):
        super().__init__(stream)
        self.alias_marks: dict[int, list[yaml.Mark]] = {}  # id(node) -> each alias to it, in order

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            node = super().compose_node(parent, index)
            self.alias_marks.setdefault(id(node), []).append(mark)
            return node
        return super().compose_node(parent, index)


_ALIAS = re.compile(r"(?:^|[\s\[{,:-])\*[^\s\]},]")  # an alias token; a false positive only costs speed


def read_source(path: Path, problems: ProblemCollector) -> str | None:
    """Read a file as UTF-8 text, refusing oversized and binary files."""
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            problems.add("file-too-large", f"file is {size:,} bytes; the limit is {MAX_FILE_BYTES:,}")
            return None
        raw = path.read_bytes()
    except OSError as exc:
        problems.add("io-error", f"cannot read file: {exc.strerror or exc}")
        return None
    return decode_source(raw, problems)


def decode_source(raw: bytes, problems: ProblemCollector) -> str | None:
    if len(raw) > MAX_FILE_BYTES:
        problems.add("file-too-large", f"file is {len(raw):,} bytes; the limit is {MAX_FILE_BYTES:,}")
        return None
    if b"\x00" in raw:
        problems.add("file-encoding", "file is binary (it contains NUL bytes), not YAML text")
        return None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        problems.add("file-encoding", f"file is not UTF-8 text (byte {exc.start})", line, 1)
        return None


def parse_document(source: str, problems: ProblemCollector) -> Document | None:
    """Parse one YAML document whose root is a mapping; ``None`` (with problems) otherwise."""
    loader = None
    try:
        # the reader already refuses control characters here
        loader = _AliasLoader(source) if _ALIAS.search(source) else _Loader(source)
        root = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        message = exc.problem or str(exc)
        if exc.context:
            message = f"{exc.context}, {message}"
        if mark is not None and 0 <= mark.index < len(source) and source[mark.index] == "\t":
            message = (f"a tab character at line {line}, column {col}: YAML indents with spaces only; "
                       "replace the tab with spaces")
        problems.add("yaml-syntax", message.replace("\n", " "), line, col)
        return None
    except yaml.YAMLError as exc:  # reader errors: control characters and the like
        problems.add("yaml-syntax", str(exc).splitlines()[0])
        return None
    finally:
        if loader is not None:
            loader.dispose()
    if root is None:
        problems.add("not-a-mapping", "file is empty; a policy file is a YAML mapping", 1, 1)
        return None
    if not isinstance(root, yaml.MappingNode):
        problems.add("not-a-mapping", f"a policy file is a YAML mapping, not a {_kind(root)}",
                     root.start_mark.line + 1, root.start_mark.column + 1)
        return None
    doc = Document(problems.file, source, None)
    builder = _Builder(doc, loader, problems)
    doc.data = builder.build(root, ())
    return None if builder.failed else doc


def _kind(node: yaml.Node) -> str:
    return {yaml.SequenceNode: "list", yaml.ScalarNode: "scalar"}.get(type(node), "value")


class _Builder:
    """Turns the node graph into plain data, counting every node it expands."""

    def __init__(self, doc: Document, loader: _Loader | _AliasLoader, problems: ProblemCollector):
        self.doc, self.loader, self.problems = doc, loader, problems
        self.count = 0
        self.failed = False
        self._open: set[int] = set()  # the collections being built: an alias to one of them recurses
        self._uses: dict[int, int] = {}  # id(node) -> times built: every use after the first is an alias
        self._alias_marks: dict[int, list[yaml.Mark]] = getattr(loader, "alias_marks", {})

    def build(self, node: yaml.Node, path: JsonPath) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            if not self.failed:
                self.failed = True
                self.problems.add("yaml-too-many-nodes",
                                  f"document expands to more than {MAX_NODES:,} values "
                                  "(an alias bomb?); refusing to load it",
                                  node.start_mark.line + 1, node.start_mark.column + 1)
            return None
        if len(path) > MAX_DEPTH:
            self._problem("yaml-too-many-nodes", f"values nested deeper than {MAX_DEPTH} levels", node)
            return None
        if id(node) in self._open:  # `&a [*a]`: an alias inside the collection it names
            self._problem("yaml-syntax", "a YAML alias refers to a collection it is part of (recursive)", node)
            return None
        self._record(node, path)
        if node.tag not in _PLAIN_TAGS:
            # SafeLoader would refuse python/* tags too; we also refuse !!binary, !!set,
            # timestamps and custom tags, which the policy language has no use for.
            if node.tag.endswith(":timestamp"):
                message = "dates and times are not values of the policy language; quote it if it is text"
            else:
                message = f"unsupported YAML tag {node.tag!r}"
            self._problem("yaml-tag", message, node)
            return None
        if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)):
            self._open.add(id(node))
            try:
                return self._collection(node, path)
            finally:
                self._open.discard(id(node))
        value = self._scalar(node)
        if not isinstance(value, (str, int, float, bool, type(None))):
            # Dates and binary are not part of the policy language; keep the text so the
            # schema reports a clear type error rather than us guessing a conversion.
            value = str(node.value)
        return value

    def _record(self, node: yaml.Node, path: JsonPath) -> None:
        """Remember where ``path`` is: at the alias when this use of the node is one."""
        uses = self._uses.get(id(node), 0)
        self._uses[id(node)] = uses + 1
        marks = self._alias_marks.get(id(node), [])
        # The anchor is the first use and each alias one more, in document order (the order the
        # builder walks), except aliases consumed by a merge key (<<), which are never walked.
        if uses and uses - 1 < len(marks) and path not in self.doc.value_marks:
            here = copy.copy(node)
            here.start_mark = marks[uses - 1]
            self.doc.value_marks[path] = here
            self.doc.aliases.add(path)
            return
        self.doc.value_marks.setdefault(path, node)

    def _collection(self, node: yaml.Node, path: JsonPath) -> Any:
        if isinstance(node, yaml.MappingNode):
            out: dict[Any, Any] = {}
            self.loader.flatten_mapping(node)  # resolves YAML merge keys (<<)
            for key_node, value_node in node.value:
                key = self._scalar(key_node) if isinstance(key_node, yaml.ScalarNode) else None
                if not isinstance(key, (str, int, float, bool)) or key is None:
                    self._problem("yaml-key", "mapping keys must be plain scalars", key_node)
                    continue
                if key in out:
                    first = self.doc.key_marks[path + (key,)]
                    self._problem("yaml-duplicate-key",
                                  f"duplicate key {key!r} (first defined on line {first.start_mark.line + 1})",
                                  key_node)
                    continue
                self.doc.key_marks[path + (key,)] = key_node
                out[key] = self.build(value_node, path + (key,))
            return out
        return [self.build(item, path + (i,)) for i, item in enumerate(node.value)]

    def _scalar(self, node: yaml.Node) -> Any:
        """A scalar's value; ``None`` (with a located problem) for one no policy can use."""
        try:
            value = self.loader.construct_object(node, deep=True)
        except (ValueError, OverflowError, yaml.YAMLError) as exc:  # e.g. an int of 5,000 digits
            self._problem("yaml-syntax", f"value cannot be read: {str(exc).splitlines()[0][:100]}", node)
            return None
        if isinstance(value, float) and not math.isfinite(value):
            # .inf, .nan and 1e999: no lifetime, factor or bound is infinite.
            self._problem("yaml-tag", f"{node.value!r} is not a finite number", node)
            return None
        return value

    def _problem(self, code: str, message: str, node: yaml.Node) -> None:
        self.failed = True
        self.problems.add(code, message, node.start_mark.line + 1, node.start_mark.column + 1)
