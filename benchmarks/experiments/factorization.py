"""Which factorization for the x-update: the measurement behind ``factorization="auto"``.

Run ``python benchmarks/experiments/factorization.py [--sizes 100 300 1000] [--repeats 5]``; writes
``benchmarks/results/factorization.md``.

The x-update solves H(ρ) x = r with H(ρ) = c(P̂ + σI) + ρC, C = ÂᵀÂ + ĜᵀĜ. Two designs
(``altdiff_jax._xupdate``):

* ``cholesky``: factor H(ρ) once, refactor only at the checkpoints where adaptive ρ
  changes (O(n³/3) each time), two triangular solves per iteration;
* ``eigen``: one generalised eigen-decomposition C V = B V diag(μ), B = P̂ + σI + C
  (about 10× a Cholesky), after which any ρ costs two products with V per iteration;
  independent of c and q, so a batch sharing P, A, G shares one factor and each lane
  keeps its own ρ without refactoring.

``auto`` picks ``eigen`` for a ``jax.vmap`` batch that shares P, A and G (one
factorisation for every lane) or that runs without polishing stops (float32, where the
loop runs long and ρ changes at many checks), and ``cholesky`` otherwise: one problem,
and a float64 batch with its own matrices per lane, whose loop polishing stops after a few
checks (a refactorisation is then paid at the few checks where some lane's ρ changed,
against one eigendecomposition per lane, about 10× a Cholesky). This script times each
choice side by side (best of ``--repeats`` interleaved runs, spread in %) and reports how
far apart the two choices' x are (paper generator with p = n/5, m = n/2):

* ``solve`` of one problem at each size (forward, float64, tol 1e-6);
* issue 8's batch: ``jax.vmap`` of ``jax.grad`` of gᵀx* (solve + the gradient of every
  leaf, default differentiation) over 512 problems with n 50, P, A, G shared and every
  leaf batched, in float64 and float32, at the default options (as in ``speed.py``).

OPENBLAS_NUM_THREADS defaults to 1: jaxlib's CPU Cholesky, eigh and triangular solves
call OpenBLAS, whose spinning threads slow them 10–100× on shared cores.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before jaxlib loads OpenBLAS

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

if __package__:
    from .. import harness
else:  # run as a script: the harness is in benchmarks/, one folder up
    sys.path.insert(1, str(pathlib.Path(__file__).resolve().parent.parent))
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


def _time_choices(timed, solve, data, repeats, tol=1e-6):
    """Interleaved timings of ``timed(data, options)`` for each factorization, and the
    solutions ``solve(data, options)``."""
    calls, solutions = {}, {}
    for choice in CHOICES:
        options = ad.Options(tol=tol, factorization=choice)
        solutions[choice] = harness.block(solve(data, options))
        harness.block(timed(data, options))
        calls[choice] = lambda options=options: timed(data, options)
    return harness.interleaved(calls, repeats=repeats), solutions


def single(n: int, repeats: int):
    qp = _qp(harness.paper_qp(n, n // 2, n // 5, seed=0))
    solve = jax.jit(ad.solve)
    return _row(f"one problem, n {n}, solve", *_time_choices(solve, solve, qp, repeats))


def batch(in_axes, label: str, dtype, repeats: int, size: int = 512, n: int = 50):
    problems = [harness.paper_qp(n, n // 2, n // 5, seed=s) for s in range(size)]
    data = harness.stacked_qp(problems, in_axes, dtype)
    g = jnp.asarray(harness.loss_vector(n), dtype)
    solve = jax.jit(jax.vmap(ad.solve, in_axes=(in_axes, None)))
    gradient = jax.jit(jax.vmap(jax.grad(lambda qp, options: ad.solve(qp, options).x @ g), in_axes=(in_axes, None)))
    name = f"vmap {size} × n {n}, {label}, {jnp.dtype(dtype).name}, solve + gradient"
    return _row(name, *_time_choices(gradient, solve, data, repeats, tol=None))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 300, 1000])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(harness.RESULTS / "factorization.md"))
    args = parser.parse_args()
    rows = [single(n, args.repeats) for n in args.sizes]
    for dtype in (jnp.float64, jnp.float32):
        rows.append(batch(SHARED, "P, A, G shared", dtype, args.repeats))
        rows.append(batch(BATCHED, "every leaf batched", dtype, args.repeats))
    for row in rows:
        print(row, flush=True)
    header = ["case", "cholesky (ms)", "eigen (ms)", "auto (ms)", "cholesky / eigen", "iterations chol/eig",
              "max |x_chol − x_eig| / |x|"]
    body = [harness.markdown_table(header, rows), "",
            "auto = eigen for a vmapped batch that shares P, A, G or runs without polishing stops "
            "(float32), cholesky otherwise (`altdiff_jax._solve._factorization`)."]
    harness.write_markdown(args.out, "x-update factorization: Cholesky vs generalised eigen-factor",
                           harness.hardware_line(), body)


if __name__ == "__main__":
    main()
