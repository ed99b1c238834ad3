"""Every example in the project's Markdown pages runs and shows what the page shows.

The convention (console / sh / python blocks, ``<!-- doc-test: ... -->`` directives, the frozen
clock) is docs/writing-docs.md; the machinery is tests/doc_examples.py. New pages are found
automatically.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from doc_examples import (EXECUTED, REPO, Block, DocExampleError, PageRun, console_commands, output_matches,
                          pages, parse_blocks)

PAGES = pages()


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(REPO)) for p in PAGES])
def test_page_examples(page: Path, tmp_path: Path) -> None:
    blocks = parse_blocks(page)
    run = PageRun(page, tmp_path)
    failure = None
    try:
        run.run(blocks)
    except DocExampleError as exc:
        failure = str(exc)
    finally:
        run.close()
    if failure:
        pytest.fail(failure, pytrace=False)


def test_every_example_runs_or_says_why_not() -> None:
    """A console, shell or Python block is either executed or skipped with a reason in the page."""
    for page in PAGES:
        for block in parse_blocks(page):
            if block.language in EXECUTED and "skip" in block.directives:
                assert len(block.directives["skip"]) > 10, f"{block.where}: say why the example is skipped"


def test_the_pages_are_found() -> None:
    names = {str(p.relative_to(REPO)) for p in PAGES}
    assert {"README.md", "docs/service.md", "docs/tokens.md", "docs/ci.md", "docs/writing-docs.md",
            "examples/issuer/README.md"} <= names
    assert not any(name.startswith(".venv") for name in names)


# The harness itself: it must be able to fail.

def _page(tmp_path: Path, text: str) -> list[Block]:
    page = tmp_path / "page.md"
    page.write_text(text)
    return parse_blocks(page)


def _run(tmp_path: Path, text: str) -> int:
    blocks = _page(tmp_path, text)
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir()
    run = PageRun(tmp_path / "page.md", sandbox)
    try:
        return run.run(blocks)
    finally:
        run.close()


def test_output_matching() -> None:
    assert output_matches("a\nb", "a\nb\n")
    assert not output_matches("a\nb", "a\nc")
    assert output_matches("digest sha256:…  tier finance", "digest sha256:08d7b9a24f86  tier finance")
    assert output_matches("first\n…\nlast", "first\n1\n2\n3\nlast")
    assert output_matches("first\n…\nlast", "first\nlast")
    assert not output_matches("first\n…\nlast", "first\n1\nnot the last")
    assert output_matches('{"allow": true, "id": "…", "tok": "eyJ…"}', '{"allow":true,"id":"x","tok":"eyJhb","n":1}')
    assert not output_matches('{"allow": true}', '{"allow": 1}')
    assert not output_matches('{"matched": ["a"]}', '{"matched": ["a", "b"]}')
    assert not output_matches('{"allow": true}', 'not json')


def test_console_commands_and_exit_codes() -> None:
    block = Block(Path("p.md"), 1, "console",
                  "$ ttlpolicy lint \\\n    policies   # exit 1\nout 1\nout 2\n$ curl -d '{\"a\":\n  1}' x\n{}")
    first, second = console_commands(block)
    assert (first.text.split(), first.exit_code, first.expected) == (["ttlpolicy", "lint", "\\", "policies"], 1,
                                                                   "out 1\nout 2\n")
    assert second.text == "curl -d '{\"a\":\n  1}' x" and second.expected == "{}\n"


def test_a_wrong_output_fails_at_its_line(tmp_path: Path) -> None:
    with pytest.raises(DocExampleError, match=r"page.md:3: `echo hello`.*\n.*\n.*\n.*\n-goodbye\n\+hello"):
        _run(tmp_path, "text\n```console\n$ echo hello\ngoodbye\n```\n")


def test_a_failing_command_fails_and_an_expected_exit_code_passes(tmp_path: Path) -> None:
    with pytest.raises(DocExampleError, match="exited 3, the page expects 0"):
        _run(tmp_path, "```sh\ntrue\n(exit 3)\n```\n")
    assert _run(tmp_path / "b" if (tmp_path / "b").mkdir() is None else tmp_path,
                "```console\n$ ttlpolicy lint nowhere   # exit 2\n…\n```\n") == 1


def test_python_values_are_compared(tmp_path: Path) -> None:
    with pytest.raises(DocExampleError, match=r"page.md:3: the page shows 3, the code gives 2"):
        _run(tmp_path, "```python\nx = 1\nx + 1   # → 3\n```\n")


def test_directives(tmp_path: Path) -> None:
    text = ("<!-- doc-test: file=note.txt -->\n```text\nhello\n```\n"
            "<!-- doc-test: skip=\"would wait forever for a server\" -->\n```sh\nsleep 1000000\n```\n"
            "<!-- doc-test: now=2025-01-11T12:00:00+01:00 setup=\"import datetime\" -->\n```python\n"
            "datetime.datetime.now(datetime.timezone.utc).isoformat()  # → '2025-01-11T11:00:00+00:00'\n"
            "open('note.txt').read()  # → 'hello\\n'\n```\n"
            "```console\n$ sleep 90\n```\n"
            "```python\nstr(datetime.datetime.now(datetime.timezone.utc))  # → '2025-01-11 11:01:30+00:00'\n```\n")
    assert _run(tmp_path, text) == 4
    with pytest.raises(DocExampleError, match="unknown doc-test directive 'skipp'"):
        _page(tmp_path, "<!-- doc-test: skipp=x -->\n```sh\ntrue\n```\n")
