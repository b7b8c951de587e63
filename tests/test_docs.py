"""The documentation builds, and the README stays a short front door.

``mkdocs build --strict`` turns every warning into a failure: a broken link or anchor, a
page missing from the build, a docstring griffe cannot parse.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README_LIMIT = 6000
# A run of 7 to 40 hex digits with at least one digit and one letter a-f: what an
# abbreviated or full commit hash looks like, and what no ordinary word or number does.
COMMIT_HASH = re.compile(r"\b(?=[0-9a-f]*[0-9])(?=[0-9a-f]*[a-f])[0-9a-f]{7,40}\b")
PAGES = sorted((ROOT / "docs").rglob("*.md"))
SOURCES = sorted((ROOT / "altdiff_jax").glob("*.py"))
FUNCTION_LINE_LIMIT = 60


def test_the_docs_build_without_a_warning(tmp_path):
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"),
         "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    site = tmp_path / "site"
    for page in ("index.html", "api/index.html", "mathematics/index.html", "benchmarks/index.html"):
        assert (site / page).is_file(), page
    # The hook publishes the committed benchmark results beside the pages that link them.
    assert (site / "results" / "speed" / "index.html").is_file()
    assert (site / "results" / "paper_table1.png").is_file()
    # The API reference documents every public name.
    api = (site / "api" / "index.html").read_text(encoding="utf-8")
    import altdiff_jax

    for name in altdiff_jax.__all__:
        assert f'id="altdiff_jax.{name}"' in api, name


def test_the_readme_is_short():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text) <= README_LIMIT, f"README.md has {len(text)} characters, at most {README_LIMIT} allowed"


@pytest.mark.parametrize("path", [ROOT / "README.md", *PAGES], ids=lambda p: str(p.relative_to(ROOT)))
def test_no_commit_hashes(path):
    text = path.read_text(encoding="utf-8")
    found = [match.group(0) for match in COMMIT_HASH.finditer(text)]
    assert not found, f"{path.relative_to(ROOT)} names what look like commit hashes: {found}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_commit_hashes_in_the_sources(path):
    """Docstrings and comments of the package name no commit: the whole text is scanned
    (the pattern spares numbers and words, so the code itself does not trip it)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found = [f"{path.relative_to(ROOT)}:{number}: {match.group(0)}"
             for number, line in enumerate(lines, 1) for match in COMMIT_HASH.finditer(line)]
    assert not found, "what look like commit hashes:\n" + "\n".join(found)


def _docstring_lines(node) -> set[int]:
    """Line numbers of the docstrings of ``node`` and of the functions and classes inside it."""
    lines = set()
    for inner in ast.walk(node):
        if isinstance(inner, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and inner.body:
            first = inner.body[0]
            if (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
                    and isinstance(first.value.value, str)):
                lines.update(range(first.lineno, first.end_lineno + 1))
    return lines


def code_lines(node, lines: list[str]) -> int:
    """A function's lines from ``def`` to its end, less docstrings, blank and comment-only lines."""
    docstrings = _docstring_lines(node)
    return sum(1 for number in range(node.lineno, node.end_lineno + 1)
               if number not in docstrings and lines[number - 1].strip()
               and not lines[number - 1].strip().startswith("#"))


def long_functions(path: Path, limit: int = FUNCTION_LINE_LIMIT) -> list[str]:
    """``file:line name (count)`` for each function (methods and nested ones included) with
    more than ``limit`` lines of code."""
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    return [f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({count} lines of code)"
            for node in ast.walk(ast.parse(text))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and (count := code_lines(node, lines)) > limit]


def test_no_function_is_longer_than_60_lines_of_code():
    """STYLE RULE: every function in ``altdiff_jax/*.py`` has at most 60 lines of code
    (``def`` to end, less its docstring, blank and comment-only lines)."""
    offenders = [entry for path in SOURCES for entry in long_functions(path)]
    assert not offenders, f"functions over {FUNCTION_LINE_LIMIT} lines of code:\n" + "\n".join(offenders)


def test_code_lines_counts_code_only():
    source = '''def f(x):
    """Doc
    string."""

    # a comment
    def g(y):
        """Inner doc."""
        return y  # trailing comment counts

    return g(x)
'''
    node = ast.parse(source).body[0]
    assert code_lines(node, source.splitlines()) == 4  # def f, def g, return y, return g(x)


def test_the_hash_pattern_flags_hashes_and_spares_words():
    assert COMMIT_HASH.findall("fixed in 9a4b658, see b7e3fc2d") == ["9a4b658", "b7e3fc2d"]
    assert COMMIT_HASH.findall("deadbeef facade 1234567 effaced 1e-6 cuda12") == []
