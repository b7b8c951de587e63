"""Where a single dense solve's time goes at the paper's larger sizes, against the floor of
the work it cannot avoid.

For each size of the paper's generator (Tiny, Small, Medium; Large with ``--sizes Large``):

* the wall time of ``solve`` and of ``jax.grad`` of gᵀx* through it (all six leaves, the
  default ``kkt`` strategy), best of ``--repeats``; their difference is the pullback;
* an XLA CPU profile of the gradient call, summed by kind of operation
  (``profile.profile``);
* the floor: the building blocks any method on this data pays at least once, each timed
  alone in one jitted call: the Gram matrix [A; G]ᵀ[A; G] (what the x-update's matrix
  needs), one Cholesky factorisation of order n, and 60 iterations of either two triangular
  solves or one GEMV with an n × n matrix (the per-iteration cost of a factor or of an
  explicit inverse).

Default threading (no thread variables set), float64, default ``Options``.

    python benchmarks/experiments/profile_sizes.py [--sizes Tiny Small Medium] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time

import numpy as np

_THREADS = os.environ.get("OPENBLAS_NUM_THREADS")
if __package__:
    from .. import harness
    from . import profile
else:  # run as a script: the harness is in benchmarks/, one folder up
    sys.path.insert(1, str(pathlib.Path(__file__).resolve().parent.parent))
    import harness
    import profile
if _THREADS is None:  # profile pins one OpenBLAS thread for its own tables; this one runs as a user would
    os.environ.pop("OPENBLAS_NUM_THREADS", None)

import jax
import jax.numpy as jnp
from jax.scipy.linalg import solve_triangular

import altdiff_jax as ad

SIZES = {"Tiny": (1500, 500, 200), "Small": (3000, 1000, 500), "Medium": (5000, 2000, 1000),
         "Large": (10000, 5000, 2000)}  # label: (n, ineq, eq)
ITERATIONS = 60


def best_of(fn, *args, repeats: int) -> float:
    harness.block(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        harness.block(fn(*args))
        times.append(time.perf_counter() - start)
    return min(times)


def floor(problem: dict, repeats: int) -> list:
    n = problem["q"].size
    C = jnp.asarray(np.vstack([problem["A"], problem["G"]]))
    H = jnp.asarray(problem["P"]) + jnp.eye(n)
    v = jnp.ones(n)
    L = jnp.linalg.cholesky(H)

    def solves(L, v):
        def step(_, v):
            return solve_triangular(L, solve_triangular(L, v, lower=True), lower=True, trans=1) / n + v
        return jax.lax.fori_loop(0, ITERATIONS, step, v)

    def products(M, v):
        return jax.lax.fori_loop(0, ITERATIONS, lambda _, v: M @ v / n + v, v)

    blocks = [
        ("Gram [A; G]ᵀ[A; G]", jax.jit(lambda C: C.T @ C), (C,)),
        ("Cholesky of order n", jax.jit(jnp.linalg.cholesky), (H,)),
        (f"{ITERATIONS} × two triangular solves", jax.jit(solves), (L, v)),
        (f"{ITERATIONS} × one GEMV", jax.jit(products), (H, v)),
    ]
    return [[name, best_of(fn, *args, repeats=repeats)] for name, fn, args in blocks]


def one_size(label: str, repeats: int) -> list:
    n, ineq, eq = SIZES[label]
    problem = harness.paper_qp(n, ineq, eq)
    qp = ad.QP(**{k: jnp.asarray(v) for k, v in problem.items()})
    g = jnp.asarray(harness.loss_vector(n))
    options = ad.Options()
    solve = jax.jit(ad.solve)
    gradient = jax.jit(jax.grad(lambda qp, g: ad.solve(qp, options).x @ g))
    solution = harness.block(solve(qp, options))
    forward = best_of(solve, qp, options, repeats=repeats)
    total = best_of(gradient, qp, g, repeats=repeats)
    wall, busy, count = profile.profile(gradient, qp, g, repeats=max(1, repeats - 1))
    note = (f"forward: {int(solution.info.iterations)} ADMM iterations, status "
            f"{ad.Status(int(solution.info.status)).name}, polished {bool(solution.info.polished)}; "
            f"solve {forward:.3f} s, solve + gradient {total:.3f} s (pullback {total - forward:.3f} s)")
    print(label, note, flush=True)
    lines = profile.report(f"{label} (n {n}, {eq} eq, {ineq} ineq): jax.grad of gᵀx*, all six leaves", note,
                           wall, busy, count)
    lines += ["The floor at this size (each block alone, one jitted call, best of the repeats):", "",
              harness.markdown_table(["block", "seconds"], floor(problem, repeats)), ""]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["Tiny", "Small", "Medium"], choices=list(SIZES))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(harness.RESULTS / "profile_sizes.md"))
    args = parser.parse_args()
    lines = []
    for label in args.sizes:
        lines += one_size(label, args.repeats)
    harness.write_markdown(args.out, "Where a single dense solve's time goes, by size", harness.hardware_line(), lines)


if __name__ == "__main__":
    main()
