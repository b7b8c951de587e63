"""A large Gram matrix MᵀM by row slabs against the whole product: the measurement behind
``altdiff_jax._linalg``'s ``GRAM_SLABS`` and ``GRAM_SLABS_FROM``.

Run ``python benchmarks/experiments/gram_slabs.py [--slabs 0 1 3 4 6 8] [--repeats 7]``;
writes ``benchmarks/results/gram_slabs.md``.

Each case is the Gram matrix of the paper's constraint rows [A; G] (``(p + m) × n``, dense)
at n 300, 500 and 1000 and at Tiny, Small and Medium, as the x-update and polishing form it, in one jitted function,
float64, under the default threading. ``_linalg.symmetric_transpose_times`` with s slabs
multiplies only the row slabs on and above the diagonal (s matrix products, about
(1 + 1/s)/2 of the flops) and transposes them into the rest; 1 slab is the whole product
contracted along the matrices' first axes, 0 slabs the whole product of transposed copies
(``TRANSPOSED_GRAM_FROM``).
Timed side by side, best of ``--repeats`` interleaved runs; the largest difference from the
whole product is reported too.

The slabs are more operations in the compiled program: ``--compile`` also times, in fresh
processes (``--compile-rounds`` rounds, interleaved, best of each), tracing and compiling
``jit(value_and_grad)`` of the whole solve + gradient of all six leaves (``--compile-sizes``,
default Tiny and Small)
with ``GRAM_SLABS`` slabs for every Gram matrix and with the whole product everywhere (the
library's ``GRAM_SLABS_FROM`` set aside), and its first run.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

if __package__:
    from .. import harness
else:  # run as a script: the harness is in benchmarks/, one folder up
    sys.path.insert(1, str(pathlib.Path(__file__).resolve().parent.parent))
    import harness

from altdiff_jax import _linalg  # noqa: E402

SIZES = {"n 300": (300, 100, 40), "n 500": (500, 167, 67), "n 1000": (1000, 333, 133),
         "Tiny": (1500, 500, 200), "Small": (3000, 1000, 500), "Medium": (5000, 2000, 1000)}  # n, m, p


def _by_slabs(slabs: int):
    def gram(M):
        if slabs == 1:
            return _linalg.transpose_times(M, M)
        if slabs == 0:  # the whole product of transposed copies
            defaults = _linalg.TRANSPOSED_GRAM_FROM, _linalg.GRAM_SLABS_FROM
            _linalg.TRANSPOSED_GRAM_FROM, _linalg.GRAM_SLABS_FROM = 0, sys.maxsize
            try:
                return _linalg.symmetric_transpose_times(M, M)
            finally:
                _linalg.TRANSPOSED_GRAM_FROM, _linalg.GRAM_SLABS_FROM = defaults
        defaults = _linalg.GRAM_SLABS, _linalg.GRAM_SLABS_FROM
        _linalg.GRAM_SLABS, _linalg.GRAM_SLABS_FROM = slabs, 0  # read at trace time; slabs at every size
        try:
            return _linalg.symmetric_transpose_times(M, M)
        finally:
            _linalg.GRAM_SLABS, _linalg.GRAM_SLABS_FROM = defaults

    return jax.jit(gram)


def case(name: str, slabs: list, repeats: int) -> list:
    n, m, p = SIZES[name]
    rows = m + p
    M = jnp.asarray(np.random.default_rng(0).standard_normal((rows, n)))
    compiled = {s: _by_slabs(s).lower(M).compile() for s in slabs}
    timings = harness.interleaved({s: (lambda f=f: f(M)) for s, f in compiled.items()}, repeats=repeats, warmup=True)
    whole = compiled[1](M)
    difference = max(float(jnp.max(jnp.abs(f(M) - whole))) for f in compiled.values())
    base = timings[1].best
    return [name, f"{n} / {rows}", f"{1e3 * base:.1f}", *[f"{timings[s].best / base:.2f}" for s in slabs if s != 1],
            f"{100 * max(t.spread for t in timings.values()):.0f}%", f"{difference:.1e}"]


def compile_child(size: str, slabs: int) -> None:
    """In a fresh process: trace, compile and first run of solve + gradient at ``size``,
    printed as JSON."""
    import altdiff_jax as ad

    _linalg.GRAM_SLABS_FROM = sys.maxsize if slabs == 1 else 0  # the slabs at every size, or nowhere
    if slabs > 1:
        _linalg.GRAM_SLABS = slabs
    problem = harness.paper_qp(*SIZES[size])
    n = SIZES[size][0]
    qp = ad.QP(**{k: jnp.asarray(v) for k, v in problem.items()})
    g = jnp.asarray(harness.loss_vector(n))
    function = jax.jit(jax.value_and_grad(lambda qp, g: ad.solve(qp).x @ g))
    start = time.perf_counter()
    lowered = function.lower(qp, g)
    traced = time.perf_counter()
    compiled = lowered.compile()
    done = time.perf_counter()
    jax.block_until_ready(compiled(qp, g))
    print(json.dumps({"trace": traced - start, "compile": done - traced, "run": time.perf_counter() - done}))


def compile_rows(sizes: list, rounds: int) -> list:
    designs = {f"{_linalg.GRAM_SLABS} slabs": _linalg.GRAM_SLABS, "whole products": 1}
    best = {}
    for _ in range(rounds):
        for size in sizes:
            for label, slabs in designs.items():
                out = subprocess.run([sys.executable, __file__, "--child", size, str(slabs)], capture_output=True,
                                     text=True, check=True, env={**os.environ, "JAX_ENABLE_X64": "1"})
                result = json.loads(out.stdout.strip().splitlines()[-1])
                key = (size, label)
                best[key] = {k: min(v, best.get(key, result)[k]) for k, v in result.items()}
    return [[size, label, f"{r['trace']:.2f}", f"{r['compile']:.2f}", f"{r['run']:.3f}"]
            for (size, label), r in best.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slabs", type=int, nargs="+", default=[0, 1, 3, 4, 6, 8])
    parser.add_argument("--sizes", nargs="+", default=list(SIZES))
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default=str(harness.RESULTS / "gram_slabs.md"))
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--compile-rounds", type=int, default=2)
    parser.add_argument("--compile-sizes", nargs="+", default=["Tiny", "Small"])
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        jax.config.update("jax_enable_x64", True)
        return compile_child(args.child[0], int(args.child[1]))
    slabs = sorted(set(args.slabs) | {1})
    rows = []
    for name in args.sizes:
        rows.append(case(name, slabs, args.repeats))
        print(rows[-1], flush=True)
    header = ["size", "n / rows", "whole product (ms)", *[("transposed copies" if s == 0 else f"{s} slabs") + " / whole" for s in slabs if s != 1], "spread",
              "largest difference"]
    body = [harness.markdown_table(header, rows), "",
            f"`altdiff_jax._linalg`: transposed copies from n {_linalg.TRANSPOSED_GRAM_FROM}, "
            f"{_linalg.GRAM_SLABS} slabs from n {_linalg.GRAM_SLABS_FROM}. Spread: the largest "
            "(worst − best) / best of the designs."]
    if args.compile:
        body += ["", "## The whole solve + gradient: trace, compile and first run, fresh processes", "",
                 f"Best of {args.compile_rounds} interleaved rounds (seconds).", "",
                 harness.markdown_table(["size", "Gram matrices", "trace", "compile", "first run"],
                                        compile_rows(args.compile_sizes, args.compile_rounds))]
    harness.write_markdown(args.out, "A Gram matrix by row slabs against the whole product", harness.hardware_line(),
                           body)


if __name__ == "__main__":
    main()
