"""A dense Cholesky factor solved by blocks against LAPACK's whole-matrix calls: the measurement
behind ``altdiff_jax._linalg.Cholesky``'s ``BLOCKED_SOLVE_FROM`` and ``SOLVE_BLOCK``.

Run ``python benchmarks/experiments/blocked_cholesky.py [--sizes 300 384 512 1000 1500 3000]
[--repeats 9]``; writes ``benchmarks/results/blocked_cholesky.md``.

Each case is what the x-update of one problem does between two changes of ρ: factor a
symmetric positive definite n × n matrix once, then solve with it 36 times in a
``lax.fori_loop`` (Tiny's 40 ADMM iterations run 36 solves with their factors), all in one
jitted function, float64. Three designs, timed side by side (best of ``--repeats``
interleaved runs):

* ``whole``: LAPACK's Cholesky of the whole matrix (``_linalg._cholesky``) and, per solve,
  LAPACK's two triangular solves with the whole factor;
* ``kept by blocks`` (the library's, ``_linalg.Cholesky.factor``): LAPACK's Cholesky of the
  whole matrix, kept by column blocks for the solves: per solve, a small triangular solve
  per block, the rest matrix–vector products, which XLA runs on every core;
* ``factored by blocks``: the same blocks computed left-looking (one matrix product per
  block brings its column up to date, then a small Cholesky gives L_kk and a triangular
  solve the panel), with the same solves.

All run under the threading a user has (no thread variable set here): set
``OPENBLAS_NUM_THREADS`` before running to see another (the machine line records it).

Also reported: each design's solution error against NumPy's ``solve`` on a matrix with a
chosen condition number, relative to ‖x‖∞.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

if __package__:
    from .. import harness
else:  # run as a script: the harness is in benchmarks/, one folder up
    sys.path.insert(1, str(pathlib.Path(__file__).resolve().parent.parent))
    import harness

from altdiff_jax import _linalg  # noqa: E402

SOLVES = 36


def _matrix(n: int, condition: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    M = (Q * np.logspace(0, -np.log10(condition), n)) @ Q.T
    return 0.5 * (M + M.T)


def _factor_and_solves(factor):
    def run(M, r):
        F = factor(M)
        return jax.lax.fori_loop(0, SOLVES, lambda i, x: F.solve(x + r) * 1e-3, r)

    return jax.jit(run)


def _factored_by_blocks(matrix: jax.Array) -> _linalg.Cholesky:
    # Block column k of the factor: [L_kk; panel_k] = [M_kk; M_below,k] − L[s_k:, :s_k] L[s_k:e_k, :s_k]ᵀ,
    # then L_kk = chol(its top block), panel_k = (its rows below) L_kk⁻ᵀ.
    n = matrix.shape[-1]
    edges = _linalg._block_edges(n)
    diagonal, panels = [], []
    for k, (s, e) in enumerate(edges):
        column = matrix[s:e, s:].T  # = matrix[s:, s:e] (symmetric): a row slab, contiguous
        if k:
            left = jnp.concatenate([panels[j][s - edges[j][1]:] for j in range(k)], axis=1)
            column = column - left @ left[: e - s].T
        diagonal.append(_linalg._cholesky(column[: e - s]))
        if e < n:
            panels.append(jax.lax.linalg.triangular_solve(
                diagonal[-1], column[e - s:], left_side=False, lower=True, transpose_a=True))
    return _linalg.Cholesky(None, tuple(diagonal), tuple(map(_linalg.column_major, panels)))


# The blocked designs below BLOCKED_SOLVE_FROM too, to show the threshold.
DESIGNS = {
    "whole": lambda M: _linalg.Cholesky(_linalg._cholesky(M)),
    "kept by blocks": lambda M: _linalg.Cholesky.by_blocks(_linalg._cholesky(M)),
    "factored by blocks": _factored_by_blocks,
}


def case(n: int, repeats: int) -> list:
    M = jnp.asarray(_matrix(n, 1e4))
    r = jnp.asarray(np.random.default_rng(1).standard_normal(n))
    compiled = {name: _factor_and_solves(factor).lower(M, r).compile() for name, factor in DESIGNS.items()}
    timings = harness.interleaved({name: (lambda f=f: f(M, r)) for name, f in compiled.items()},
                                  repeats=repeats, warmup=True)
    blocks = len(_linalg._block_edges(n))
    errors = []
    for condition in (1e2, 1e8, 1e12):
        A = _matrix(n, condition)
        x_ref = np.linalg.solve(A, np.asarray(r))
        for factor in DESIGNS.values():
            x = jax.jit(lambda A, r, factor=factor: factor(A).solve(r))(jnp.asarray(A), r)
            errors.append(float(np.max(np.abs(np.asarray(x) - x_ref)) / np.max(np.abs(x_ref))))
    whole, kept, factored = (timings[name] for name in DESIGNS)
    return [n, blocks, f"{1e3 * whole.best:.2f}", f"{kept.best / whole.best:.2f}", f"{factored.best / whole.best:.2f}",
            f"{100 * max(t.spread for t in (whole, kept, factored)):.0f}%",
            *[" / ".join(f"{e:.1e}" for e in errors[i:i + 3]) for i in range(0, len(errors), 3)]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[300, 384, 512, 1000, 1500, 3000])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--out", default=str(harness.RESULTS / "blocked_cholesky.md"))
    args = parser.parse_args()
    jax.config.update("jax_enable_x64", True)
    rows = []
    for n in args.sizes:
        rows.append(case(n, args.repeats))
        print(rows[-1], flush=True)
    header = ["n", "blocks", f"whole: factor + {SOLVES} solves (ms)", "kept by blocks / whole",
              "factored by blocks / whole", "spread", "error, cond 1e2 (whole / kept / factored)", "cond 1e8",
              "cond 1e12"]
    body = [harness.markdown_table(header, rows), "",
            f"`altdiff_jax._linalg`: kept by blocks from n {_linalg.BLOCKED_SOLVE_FROM}, of at least "
            f"{_linalg.SOLVE_BLOCK} columns and at most {_linalg.MAX_SOLVE_BLOCKS} blocks; this table runs the "
            "blocked designs below that order too. Spread: the largest (worst − best) / best of the three. "
            "Errors: max |x − x_NumPy| / max |x_NumPy|."]
    harness.write_markdown(args.out, "Cholesky by blocks against LAPACK's whole-matrix Cholesky",
                           harness.hardware_line(), body)


if __name__ == "__main__":
    main()
