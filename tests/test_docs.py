"""The documentation builds, and the README stays a short front door.

``mkdocs build --strict`` turns every warning into a failure: a broken link or anchor, a
page missing from the build, a docstring griffe cannot parse.
"""

from __future__ import annotations

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


def test_the_hash_pattern_flags_hashes_and_spares_words():
    assert COMMIT_HASH.findall("fixed in 9a4b658, see b7e3fc2d") == ["9a4b658", "b7e3fc2d"]
    assert COMMIT_HASH.findall("deadbeef facade 1234567 effaced 1e-6 cuda12") == []
