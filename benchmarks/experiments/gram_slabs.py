"""A large Gram matrix MᵀM by row slabs against the whole product: the measurement behind
``altdiff_jax._linalg``'s ``GRAM_SLABS`` and ``GRAM_SLABS_FROM``.

Run ``python benchmarks/experiments/gram_slabs.py [--slabs 1 3 4 6 8] [--repeats 7]``;
writes ``benchmarks/results/gram_slabs.md``.

Each case is the Gram matrix of the paper's constraint rows [A; G] (``(p + m) × n``, dense)
at Tiny, Small and Medium, as the x-update and polishing form it, in one jitted function,
float64, under the default threading. ``_linalg.symmetric_transpose_times`` with s slabs
multiplies only the row slabs on and above the diagonal (s matrix products, about
(1 + 1/s)/2 of the flops) and transposes them into the rest; 1 slab is the whole product.
Timed side by side, best of ``--repeats`` interleaved runs; the largest difference from the
whole product is reported too.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np

if __package__:
    from .. import harness
else:  # run as a script: the harness is in benchmarks/, one folder up
    sys.path.insert(1, str(pathlib.Path(__file__).resolve().parent.parent))
    import harness

from altdiff_jax import _linalg  # noqa: E402

SIZES = {"Tiny": (1500, 700), "Small": (3000, 1500), "Medium": (5000, 3000)}


def _by_slabs(slabs: int):
    def gram(M):
        if slabs == 1:
            return _linalg.transpose_times(M, M)
        default = _linalg.GRAM_SLABS
        _linalg.GRAM_SLABS = slabs  # read at trace time
        try:
            return _linalg.symmetric_transpose_times(M, M)
        finally:
            _linalg.GRAM_SLABS = default

    return jax.jit(gram)


def case(name: str, slabs: list, repeats: int) -> list:
    n, rows = SIZES[name]
    M = jnp.asarray(np.random.default_rng(0).standard_normal((rows, n)))
    compiled = {s: _by_slabs(s).lower(M).compile() for s in slabs}
    timings = harness.interleaved({s: (lambda f=f: f(M)) for s, f in compiled.items()}, repeats=repeats, warmup=True)
    whole = compiled[1](M)
    difference = max(float(jnp.max(jnp.abs(f(M) - whole))) for f in compiled.values())
    base = timings[1].best
    return [name, f"{n} / {rows}", f"{1e3 * base:.1f}", *[f"{timings[s].best / base:.2f}" for s in slabs[1:]],
            f"{100 * max(t.spread for t in timings.values()):.0f}%", f"{difference:.1e}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slabs", type=int, nargs="+", default=[1, 3, 4, 6, 8])
    parser.add_argument("--sizes", nargs="+", default=list(SIZES))
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default=str(harness.RESULTS / "gram_slabs.md"))
    args = parser.parse_args()
    slabs = sorted(set(args.slabs) | {1})
    rows = []
    for name in args.sizes:
        rows.append(case(name, slabs, args.repeats))
        print(rows[-1], flush=True)
    header = ["size", "n / rows", "whole product (ms)", *[f"{s} slabs / whole" for s in slabs[1:]], "spread",
              "largest difference"]
    body = [harness.markdown_table(header, rows), "",
            f"`altdiff_jax._linalg`: {_linalg.GRAM_SLABS} slabs from n {_linalg.GRAM_SLABS_FROM}. Spread: the largest "
            "(worst − best) / best of the designs."]
    harness.write_markdown(args.out, "A Gram matrix by row slabs against the whole product", harness.hardware_line(),
                           body)


if __name__ == "__main__":
    main()
