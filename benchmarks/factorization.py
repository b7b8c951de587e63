"""Which factorization for the x-update: the measurement behind ``factorization="auto"``.

Run ``python benchmarks/factorization.py [--sizes 100 300 1000] [--repeats 5]``; writes
``benchmarks/results/factorization.md``.

The x-update solves H(ρ) x = r with H(ρ) = c(P̂ + σI) + ρC, C = ÂᵀÂ + ĜᵀĜ. Two designs
(``altdiff_jax._objective``):

* ``cholesky``: factor H(ρ) once, refactor only at the checkpoints where adaptive ρ
  changes (O(n³/3) each time), two triangular solves per iteration;
* ``eigen``: one generalised eigen-decomposition C V = B V diag(μ), B = P̂ + σI + C
  (about 10× a Cholesky), after which any ρ costs two products with V per iteration;
  independent of c and q, so a batch sharing P, A, G shares one factor and each lane
  keeps its own ρ without refactoring.

``auto`` picks ``eigen`` under ``jax.vmap`` and ``cholesky`` otherwise. This script times
``solve`` (forward, tol 1e-6, float64, paper generator with p = n/5, m = n/2) with each
choice side by side (best of ``--repeats`` interleaved runs, spread in %), and checks that
both give the same x to 1e-9:

* one problem at each size;
* a ``vmap`` batch of 64 problems with n 50, P, A, G shared and every leaf batched.

OPENBLAS_NUM_THREADS defaults to 1: jaxlib's CPU Cholesky, eigh and triangular solves
call OpenBLAS, whose spinning threads slow them 10–100× on shared cores.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before jaxlib loads OpenBLAS

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

if __package__:
    from . import harness
else:
    import harness

import altdiff_jax as ad  # noqa: E402

CHOICES = ("cholesky", "eigen", "auto")
SHARED = ad.QP(P=None, q=0, A=None, b=0, G=None, h=0)
BATCHED = ad.QP(P=0, q=0, A=0, b=0, G=0, h=0)


def _qp(problem) -> ad.QP:
    return ad.QP(**{k: jnp.asarray(problem[k]) for k in harness.QP_KEYS})


def _row(case, timings, solutions):
    best = {k: timings[k].best for k in CHOICES}
    x = {k: np.asarray(solutions[k].x) for k in CHOICES}
    difference = np.abs(x["cholesky"] - x["eigen"]).max() / max(np.abs(x["cholesky"]).max(), 1e-300)
    iterations = "/".join(str(int(np.max(solutions[k].info.iterations))) for k in ("cholesky", "eigen"))
    return [case, *(f"{1e3 * best[k]:.3g} ±{100 * timings[k].spread:.0f}%" for k in CHOICES),
            f"{best['cholesky'] / best['eigen']:.2f}", iterations, f"{difference:.1e}"]


def _time_choices(solve, data, repeats):
    """Interleaved timings of ``solve(data, options)`` for each factorization, and the solutions."""
    calls, solutions = {}, {}
    for choice in CHOICES:
        options = ad.Options(tol=1e-6, factorization=choice)
        solutions[choice] = harness.block(solve(data, options))
        calls[choice] = lambda options=options: solve(data, options)
    return harness.interleaved(calls, repeats=repeats), solutions


def single(n: int, repeats: int):
    qp = _qp(harness.paper_qp(n, n // 2, n // 5, seed=0))
    return _row(f"one problem, n {n}", *_time_choices(jax.jit(ad.solve), qp, repeats))


def batch(in_axes, label: str, repeats: int, size: int = 64, n: int = 50):
    problems = [harness.paper_qp(n, n // 2, n // 5, seed=s) for s in range(size)]
    data = harness.stacked_qp(problems, in_axes)
    solve = jax.jit(jax.vmap(ad.solve, in_axes=(in_axes, None)))
    return _row(f"vmap {size} × n {n}, {label}", *_time_choices(solve, data, repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 300, 1000])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(harness.RESULTS / "factorization.md"))
    args = parser.parse_args()
    rows = [single(n, args.repeats) for n in args.sizes]
    rows.append(batch(SHARED, "P, A, G shared", args.repeats))
    rows.append(batch(BATCHED, "every leaf batched", args.repeats))
    for row in rows:
        print(row, flush=True)
    header = ["case", "cholesky (ms)", "eigen (ms)", "auto (ms)", "cholesky / eigen", "iterations chol/eig",
              "max |x_chol − x_eig| / |x|"]
    body = [harness.markdown_table(header, rows), "",
            "auto = eigen under vmap, cholesky otherwise (`altdiff_jax._solve._factorization`)."]
    harness.write_markdown(args.out, "x-update factorization: Cholesky vs generalised eigen-factor",
                           harness.hardware_line(), body)


if __name__ == "__main__":
    main()
