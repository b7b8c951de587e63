"""MkDocs hook: publish the committed benchmark results with the documentation.

The results live in ``benchmarks/results/`` (Markdown tables and PNG plots written by the
scripts in ``benchmarks/``). MkDocs only reads files under ``docs/``, so this hook adds
them to the build as if they were in ``docs/results/``: the Markdown files become pages,
the plots and text files are copied as they are. Nothing is written into the source tree,
and links such as ``results/speed.md`` from a page in ``docs/`` are checked by
``mkdocs build --strict`` like any other.

A results file is written for the repository, not for the site: a relative link in it to
something the site does not hold (a script in ``benchmarks/``, say) is shown as its text
instead of failing the strict build.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

from mkdocs.structure.files import File, Files

RESULTS = Path(__file__).resolve().parent.parent / "benchmarks" / "results"
SUFFIXES = {".md", ".png", ".txt"}
_LINK = re.compile(r"(!?)\[([^\]]*)\]\(([^)\s]+)\)")


def on_files(files: Files, config) -> Files:
    for path in sorted(RESULTS.rglob("*")):
        if path.is_file() and path.suffix in SUFFIXES:
            uri = "results/" + path.relative_to(RESULTS).as_posix()
            files.append(File.generated(config, uri, abs_src_path=str(path)))
    return files


def on_page_markdown(markdown: str, page, config, files: Files) -> str:
    if not page.file.src_uri.startswith("results/"):
        return markdown
    here = posixpath.dirname(page.file.src_uri)

    def keep_or_unlink(match: re.Match) -> str:
        target = match.group(3)
        if "://" in target or target.startswith(("#", "mailto:")):
            return match.group(0)
        path = posixpath.normpath(posixpath.join(here, target.split("#", 1)[0]))
        return match.group(0) if files.get_file_from_path(path) is not None else match.group(2)

    return _LINK.sub(keep_or_unlink, markdown)
