"""Which LAPACK calls of a compiled XLA CPU program can run at the same time.

Why it matters: jaxlib 0.10 runs a batched LAPACK kernel (the Cholesky, triangular solve,
eigendecomposition or LU of a ``vmap``) whose work passes a threshold in chunks on XLA's
CPU thread pool, and blocks the pool thread that called it until the chunks are done.
When as many such kernels run at once as the pool has threads (two on a 2-core
machine), every thread waits for chunks that no thread is free to run, and the program
hangs (``benchmarks/results/batched_lapack.md``: four independent vmapped triangular
solves of 512 × 50 × 50 in one jitted function, jaxlib 0.10.2, 2 cores). XLA runs two
operations of one program at once only when neither depends on the other, so a program
in which every pair of LAPACK calls is ordered by its data dependencies cannot hang this
way *while it runs alone*. Two runs at once can: the same ordered program called from two
Python threads, or run on each of two CPU devices, hangs too (the same results file).

:func:`concurrent_lapack_calls` reads that from the optimised HLO text
(``jax.jit(f).lower(...).compile().as_text()``): in each computation, it finds the
instructions that call LAPACK (directly, or inside the loops, conditionals and calls they
run) and reports every pair with no path of operands between them. Control edges are
not counted as an order: XLA's CPU runtime orders operations by the buffers they share.
It raises if it did not find every LAPACK call of the text or every computation called.

:data:`cpu_only` marks the tests that read XLA's CPU programs (their LAPACK calls, their
layouts, :func:`output_layouts`): other backends have neither, and skip them.
:data:`reads_pinned_layouts` marks those that read a pinned layout off a jit's output.
"""

from __future__ import annotations

import re

import jax
import pytest

cpu_only = pytest.mark.skipif(
    jax.default_backend() != "cpu",
    reason="reads XLA's CPU program (LAPACK custom calls, CPU layouts); other backends have neither")

_COMPUTATION = re.compile(r"^(?:ENTRY )?%([\w.\-]+) \(.*\{\s*$")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%([\w.\-]+) = (.*)$")
_LAPACK = re.compile(r'custom_call_target="(lapack_\w+)"')
_CALLED = re.compile(r"(?:body|condition|to_apply|calls|branch_computations|called_computations|"
                     r"true_computation|false_computation)=\{?(%[\w.\-]+(?:, %[\w.\-]+)*)")
_CONTROL = re.compile(r"control-predecessors=\{[^}]*\}")
_NAME = re.compile(r"%([\w.\-]+)")


def _computations(hlo: str) -> dict[str, list[tuple[str, str]]]:
    """``{computation: [(instruction, its text after '='), ...]}`` in program order."""
    computations: dict[str, list[tuple[str, str]]] = {}
    current = None
    for line in hlo.splitlines():
        if current is None:
            match = _COMPUTATION.match(line)
            if match:
                current = match.group(1)
                computations[current] = []
        elif line.strip() == "}":
            current = None
        else:
            match = _INSTRUCTION.match(line)
            if match:
                computations[current].append(match.groups())
    return computations


def concurrent_lapack_calls(hlo: str) -> list[tuple[str, str, str]]:
    """Pairs of LAPACK-calling instructions that XLA may run at the same time.

    Args:
        hlo: the text of an optimised HLO module.

    Returns:
        ``(computation, instruction, instruction)`` for every unordered pair; empty when
        the program's LAPACK calls are totally ordered.
    """
    computations = _computations(hlo)
    parsed = sum(bool(_LAPACK.search(text)) for instructions in computations.values() for _, text in instructions)
    in_text = hlo.count('custom_call_target="lapack_')
    if parsed != in_text:
        raise ValueError(f"parsed {parsed} of the {in_text} LAPACK calls in the text")
    calls_lapack: dict[str, bool] = {}

    def computation_calls_lapack(name: str) -> bool:
        if name not in computations:
            raise ValueError(f"computation {name} is called but was not parsed")
        if name not in calls_lapack:
            calls_lapack[name] = False  # HLO has no recursion; this only guards against a loop here
            calls_lapack[name] = any(instruction_calls_lapack(text) for _, text in computations[name])
        return calls_lapack[name]

    def instruction_calls_lapack(text: str) -> bool:
        return bool(_LAPACK.search(text)) or any(
            computation_calls_lapack(called) for group in _CALLED.findall(text) for called in _NAME.findall(group))

    pairs = []
    for computation, instructions in computations.items():
        names = {name for name, _ in instructions}
        ancestors: dict[str, set[str]] = {}
        for name, text in instructions:  # operands come before their users
            operands = set(_NAME.findall(_CONTROL.sub("", text))) & names - {name}
            ancestors[name] = set(operands).union(*(ancestors.get(op, set()) for op in operands))
        lapack = [name for name, text in instructions if instruction_calls_lapack(text)]
        for i, first in enumerate(lapack):
            for second in lapack[i + 1:]:
                if first not in ancestors[second] and second not in ancestors[first]:
                    pairs.append((computation, first, second))
    return pairs


def lapack_call_depths(hlo: str) -> list[int]:
    """How many while loops enclose each LAPACK call of an optimised HLO module (0: the
    entry computation runs it once; 2: the body of a loop inside the body of a loop)."""
    computations = _computations(hlo)
    entry = re.search(r"^ENTRY %([\w.\-]+)", hlo, re.MULTILINE).group(1)
    depths = []

    def visit(name: str, depth: int) -> None:
        for _, text in computations[name]:
            if _LAPACK.search(text):
                depths.append(depth)
            loop = text.split("(", 1)[0].endswith(" while") or " while(" in text
            for group in _CALLED.findall(text):
                for called in _NAME.findall(group):
                    visit(called, depth + (loop and f"body=%{called}" in text))

    visit(entry, 0)
    return depths


def pinned_layouts_are_reported() -> bool:
    """Whether this JAX reports the layout that ``with_layout_constraint`` pins on a jit's
    output (JAX 0.10; JAX 0.7 to 0.9 report XLA's default there, so the pin cannot be
    read from :func:`output_layouts`). Asked of JAX's API itself, not of the library."""
    try:
        from jax.experimental.layout import Layout, with_layout_constraint

        pin = lambda M: with_layout_constraint(M + 1.0, Layout(major_to_minor=(1, 0)))  # noqa: E731
        return output_layouts(pin, jax.numpy.ones((4, 4))) == [(1, 0)]
    except (ImportError, TypeError, AttributeError):  # no such API in this JAX
        return False


def output_layouts(fn, *args) -> list:
    """``major_to_minor`` of each output of ``jax.jit(fn)`` as compiled for ``args``
    (``(1, 0)``: a column-major matrix; XLA's default is row-major, ``(0, 1)``)."""
    formats = jax.jit(fn).lower(*args).compile().output_formats
    return [leaf.layout.major_to_minor for leaf in jax.tree_util.tree_leaves(formats)]


reads_pinned_layouts = pytest.mark.skipif(
    jax.default_backend() != "cpu" or not pinned_layouts_are_reported(),
    reason="this JAX does not report a pinned layout on a jit's output (JAX < 0.10), or not on CPU")
