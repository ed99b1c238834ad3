"""The compiler's stages (one named list) and the import graph of the package (no cycle)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from ttlpolicy.compile import STAGES, compile_sources

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "ttlpolicy"


def test_the_stages_are_one_named_list_in_pipeline_order() -> None:
    assert [stage.name for stage in STAGES] == [
        "parse", "schema", "extends", "bases", "model", "semantic", "typecheck", "generate", "analyse", "default"]
    assert all(stage.does and stage.run.__doc__ for stage in STAGES)


def test_each_stage_leaves_its_result_under_its_name_and_reports_problems() -> None:
    base = {"apiVersion": "ttlpolicy/v1", "name": "base", "abstract": True,
            "defaults": {"access_ttl": "1h", "refresh_ttl": "1d"}, "rules": [{"name": "b", "when": "user.mfa",
                                                                              "access_ttl": {"cap": "10m"}}]}
    good = {"apiVersion": "ttlpolicy/v1", "name": "good", "extends": ["base"], "default": True,
            "rules": [{"name": "g", "when": 'device.trust == "managed"', "access_ttl": {"multiply": 2}}]}
    bad = {"apiVersion": "ttlpolicy/v1", "name": "bad", "rules": [{"name": "x", "when": "user.nope", "deny": "no"}]}
    c = compile_sources({"base.yaml": yaml.safe_dump(base), "good.yaml": yaml.safe_dump(good),
                         "bad.yaml": yaml.safe_dump(bad), "broken.yaml": "a: [", "odd.yaml": "name: 3"})
    assert sorted(c.parse) == ["bad.yaml", "base.yaml", "good.yaml", "odd.yaml"]
    assert sorted(c.schema) == ["bad", "base", "good"]
    assert c.extends["good"].files == ("base.yaml", "good.yaml")
    assert sorted(c.typecheck) == ["bad", "base", "good"]
    assert sorted(c.generate) == ["good"]  # base is abstract, bad has a type error
    assert c.default == "good"
    assert set(c.seconds) == {stage.name for stage in STAGES}
    codes = {(p.code, p.location.file) for p in c.problems}
    assert ("yaml-syntax", "broken.yaml") in codes
    assert ("schema", "odd.yaml") in codes
    assert any(code.startswith("cel-") and file == "bad.yaml" for code, file in codes)
    assert any(p.code == "loosening-rule" and p.location.file == "good.yaml" for p in c.problems)
    assert list(c.analyse) == ["good"]  # the policies the analysis found no error in


def _imports(module: Path) -> set[str]:
    """The package modules ``module`` imports at import time or for type checking (not inside functions)."""
    tree = ast.parse(module.read_text())
    found: set[str] = set()
    package = ".".join(module.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    nodes = list(tree.body)
    nodes += [inner for node in tree.body if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
              for inner in node.body]
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            target = f"{base}.{node.module}" if node.module else base
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ttlpolicy"):
            found.add(node.module or "")
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("ttlpolicy"))
    return found


def test_the_import_graph_has_no_cycle() -> None:
    modules = {".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__"): p
               for p in PACKAGE.rglob("*.py")}
    graph = {name: {m for m in _imports(path) if m in modules and m != name} for name, path in modules.items()}
    state: dict[str, int] = {}

    def visit(name: str, stack: list[str]) -> None:
        state[name] = 1
        for dep in sorted(graph[name]):
            if state.get(dep) == 1 and not name.startswith(dep + "."):  # a module naming its own package is fine
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(dep):] + [name, dep]))
            if dep not in state:
                visit(dep, stack + [name])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [])
    assert "ttlpolicy.evaluate" not in graph["ttlpolicy.program"]
    assert "ttlpolicy.compile" not in graph["ttlpolicy.evaluate"] | graph["ttlpolicy.generate"]


def test_loading_gives_freed_heap_pages_back_where_the_c_library_can(monkeypatch: pytest.MonkeyPatch) -> None:
    """glibc's malloc_trim(0) after the stages; nothing at all without it (another C library)."""
    import ctypes
    import sys

    import ttlpolicy.compile as compile_module

    calls: list[int] = []

    class Libc:
        def malloc_trim(self, pad: int) -> int:
            calls.append(pad)
            return 1

    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(ctypes, "CDLL", lambda name: Libc())
    compile_module.compile_sources({"p.yaml": "apiVersion: ttlpolicy/v1\nname: p\ndefaults: {access_ttl: 1h}\n"})
    assert calls == [0]

    class Musl:
        pass

    monkeypatch.setattr(ctypes, "CDLL", lambda name: Musl())
    compile_module.compile_sources({"p.yaml": "apiVersion: ttlpolicy/v1\nname: p\ndefaults: {access_ttl: 1h}\n"})
    assert calls == [0]
