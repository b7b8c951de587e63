"""Griffe extension: render the Sphinx roles of the docstrings in Markdown.

The package's docstrings name other objects Sphinx-style (:class:`Solution`,
:func:`jvp`). mkdocstrings reads Markdown, where such a role would show as it is
written. This extension rewrites each role, when the API reference is built, into a
link to the named public object (``altdiff_jax.__all__``) or, for anything else, into
inline code. The source files are not touched.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import griffe

_ROLE = re.compile(r":(?:class|func|meth|attr|mod|data|obj|exc):`~?([^`<>]+)`")
_INIT = Path(__file__).resolve().parent.parent / "altdiff_jax" / "__init__.py"


def _public_names() -> set[str]:
    for node in ast.parse(_INIT.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
            return set(ast.literal_eval(node.value))
    return set()


PUBLIC = _public_names()


def _markdown(match: re.Match) -> str:
    target = match.group(1).strip()
    name = target.rsplit(".", 1)[-1]
    if name in PUBLIC and (target == name or target.startswith("altdiff_jax.")):
        return f"[`{name}`][altdiff_jax.{name}]"
    return f"`{name if target.startswith('~') else target}`"


class SphinxRoles(griffe.Extension):
    """Rewrite ``:role:`name``` in every docstring (see the module docstring)."""

    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _ROLE.sub(_markdown, obj.docstring.value)
