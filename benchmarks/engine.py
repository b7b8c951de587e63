"""Iterations and time to tolerance: this engine vs the paper's configuration vs OSQP.

Run ``python benchmarks/engine.py [--tol 1e-6] [--sizes 100 300 1000] [--family-n 30]``.

Two problem sets, measured side by side in one run:

* the scaling family: one QP from the paper's generator with P multiplied by 10^k and
  the constraint rows (A, b, G, h) by 10^j, for k, j in {−3, …, 3};
* the paper's dense-QP generator at the given sizes (p = n/5 equalities, m = n/2
  inequalities).

Engines: ``altdiff_jax`` with its defaults (Ruiz scaling, adaptive ρ, α = 1.6); the
paper's configuration (no scaling, fixed ρ, α = 1) at ρ = 1 and, on the family, at its
best ρ from a grid (chosen per problem, an oracle no user has); and OSQP (the C solver,
``pip install osqp``) with the same tolerances and a termination check every iteration.
Time is the median wall time of 3 jitted calls after compilation, CPU.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

import altdiff_jax as ad  # noqa: E402

PAPER = dict(alpha=1.0, adaptive_rho=False, scaling_iterations=0)
RHO_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3)


def paper_qp(seed: int, n: int, p: int, m: int) -> dict:
    """The paper's generator, made feasible: b = A x0, h = G x0 + U(0, 1)."""
    rng = np.random.default_rng(seed)
    M = rng.standard_normal((n, n))
    A, G, x0 = rng.standard_normal((p, n)), rng.standard_normal((m, n)), rng.standard_normal(n)
    return dict(P=M.T @ M, q=rng.standard_normal(n), A=A, b=A @ x0, G=G, h=G @ x0 + rng.uniform(size=m))


def scaled(data: dict, k: int, j: int) -> dict:
    return dict(P=10.0**k * data["P"], q=data["q"], A=10.0**j * data["A"], b=10.0**j * data["b"],
                G=10.0**j * data["G"], h=10.0**j * data["h"])


_solve = jax.jit(ad.solve)


def run_altdiff(data: dict, options: ad.Options):
    problem = ad.QP(**{k: jnp.asarray(v) for k, v in data.items()})
    solution = jax.block_until_ready(_solve(problem, options))
    times = []
    for _ in range(3):
        start = time.perf_counter()
        jax.block_until_ready(_solve(problem, options))
        times.append(time.perf_counter() - start)
    ok = int(solution.info.status) == ad.Status.SOLVED
    return int(solution.info.iterations), statistics.median(times), ok


def run_osqp(data: dict, tol: float, max_iter: int):
    import osqp
    import scipy.sparse as sp

    n = data["q"].size
    constraint = sp.csc_matrix(np.vstack([data["A"], data["G"]]))
    lower = np.concatenate([data["b"], np.full(data["h"].size, -np.inf)])
    upper = np.concatenate([data["b"], data["h"]])
    solver = osqp.OSQP()
    solver.setup(sp.csc_matrix(np.triu(data["P"])), data["q"], constraint, lower, upper,
                 eps_abs=tol, eps_rel=tol, max_iter=max_iter, check_termination=1,
                 polishing=False, verbose=False)
    times = []
    for _ in range(3):
        solver.warm_start(x=np.zeros(n), y=np.zeros(lower.size))
        start = time.perf_counter()
        result = solver.solve()
        times.append(time.perf_counter() - start)
    return result.info.iter, statistics.median(times), result.info.status_val == 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tol", type=float, default=1e-6)
    parser.add_argument("--max-iter", type=int, default=20_000)
    parser.add_argument("--sizes", type=int, nargs="*", default=[100, 300, 1000])
    parser.add_argument("--family-n", type=int, default=30)
    args = parser.parse_args()
    tol, max_iter = args.tol, args.max_iter
    engine = ad.Options(tol=tol, max_iter=max_iter)
    paper = ad.Options(tol=tol, max_iter=max_iter, rho=1.0, **PAPER)
    try:
        import osqp  # noqa: F401
        have_osqp = True
    except ImportError:
        have_osqp = False

    n = args.family_n
    base = paper_qp(0, n, n // 5, n // 2)
    print(f"Scaling family: n={n}, p={n // 5}, m={n // 2}, tol={tol:g}; iterations (* = not solved)")
    print(f"{'k':>3} {'j':>3} {'engine':>8} {'paper ρ=1':>10} {'paper best ρ':>13} {'best ρ':>7} {'OSQP':>7}")
    rows = []
    for k in range(-3, 4):
        for j in range(-3, 4):
            data = scaled(base, k, j)
            ours = run_altdiff(data, engine)
            fixed = run_altdiff(data, paper)
            tuned = min((run_altdiff(data, ad.Options(tol=tol, max_iter=max_iter, rho=r, **PAPER)) + (r,)
                         for r in RHO_GRID), key=lambda t: (not t[2], t[0]))
            osqp_result = run_osqp(data, tol, max_iter) if have_osqp else (float("nan"), 0, False)
            rows.append((ours[0], fixed[0], tuned[0], osqp_result[0]))

            def cell(r, width):
                return f"{r[0]}{'' if r[2] else '*'}".rjust(width)

            print(f"{k:>3} {j:>3} {cell(ours, 8)} {cell(fixed, 10)} {cell(tuned, 13)} {tuned[3]:>7g} "
                  f"{cell(osqp_result, 7)}")
    ours, fixed, tuned, osqp_iters = (np.array(c, float) for c in zip(*rows))
    print(f"median iterations: engine {np.median(ours):.0f}, paper ρ=1 {np.median(fixed):.0f}, "
          f"paper best ρ {np.median(tuned):.0f}, OSQP {np.median(osqp_iters):.0f}")
    print(f"engine / paper-best-ρ: median {np.median(ours / tuned):.2f}, max {np.max(ours / tuned):.2f}; "
          f"engine / OSQP median iterations: {np.median(ours) / np.median(osqp_iters):.2f}")

    print(f"\nPaper generator (p = n/5, m = n/2), tol={tol:g}: iterations, median seconds")
    print(f"{'n':>5} {'engine':>16} {'paper ρ=1':>16} {'OSQP':>16}")
    for size in args.sizes:
        data = paper_qp(1, size, size // 5, size // 2)
        cells = [run_altdiff(data, engine), run_altdiff(data, paper)]
        cells.append(run_osqp(data, tol, max_iter) if have_osqp else (0, float("nan"), False))
        print(f"{size:>5} " + " ".join(f"{it:>6}{'' if ok else '*'} {t:8.4f}s" for it, t, ok in cells))


if __name__ == "__main__":
    main()
