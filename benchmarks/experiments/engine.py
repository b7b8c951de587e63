"""Iterations and time to tolerance: this engine vs the paper's configuration vs OSQP.

Run ``python benchmarks/experiments/engine.py [--tol 1e-6] [--sizes 100 300 1000] [--family-n 30]``.

Two problem sets, measured side by side in one run:

* the scaling family: one QP from the paper's generator with P multiplied by 10^k and
  the constraint rows (A, b, G, h) by 10^j, for k, j in {−3, …, 3} (iterations only);
* the paper's dense-QP generator at the given sizes (p = n/5 equalities, m = n/2
  inequalities): iterations and time.

Engines: ``altdiff_jax`` with its defaults (Ruiz scaling, adaptive ρ, α = 1.6); the
paper's configuration (no scaling, fixed ρ, α = 1) at ρ = 1 and, on the family, at its
best ρ from a grid (chosen per problem, an oracle no user has); and OSQP (the C solver,
``pip install osqp``) with the same tolerances and a termination check every iteration.
Time is the best wall time of ``--repeats`` jitted calls after compilation, the three
engines interleaved, CPU.
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

import altdiff_jax as ad  # noqa: E402

PAPER = dict(alpha=1.0, adaptive_rho=False, scaling_iterations=0)
RHO_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3)


def scaled(data: dict, k: int, j: int) -> dict:
    return dict(P=10.0**k * data["P"], q=data["q"], A=10.0**j * data["A"], b=10.0**j * data["b"],
                G=10.0**j * data["G"], h=10.0**j * data["h"])


_solve = jax.jit(ad.solve)


def altdiff_engine(data: dict, options: ad.Options):
    """(iterations, solved, call) of altdiff_jax on the problem (compiled by this first call)."""
    problem = ad.QP(**{k: jnp.asarray(v) for k, v in data.items()})
    solution = jax.block_until_ready(_solve(problem, options))
    return int(solution.info.iterations), int(solution.info.status) == ad.Status.SOLVED, lambda: _solve(problem, options)


def osqp_engine(data: dict, tol: float, max_iter: int):
    """(iterations, solved, call) of OSQP warm-started at zero on each call (setup excluded)."""
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

    def call():
        solver.warm_start(x=np.zeros(n), y=np.zeros(lower.size))
        return solver.solve()

    result = call()
    return result.info.iter, result.info.status_val == 1, call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tol", type=float, default=1e-6)
    parser.add_argument("--max-iter", type=int, default=20_000)
    parser.add_argument("--sizes", type=int, nargs="*", default=[100, 300, 1000])
    parser.add_argument("--family-n", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    tol, max_iter = args.tol, args.max_iter
    engine = ad.Options(tol=tol, max_iter=max_iter)
    paper = ad.Options(tol=tol, max_iter=max_iter, rho=1.0, **PAPER)
    have_osqp = harness.package_version("osqp") is not None
    print(harness.hardware_line(("osqp",)))
    if not have_osqp:
        print("note: osqp is not installed: its column is left out (`pip install osqp` adds it)")
    missing = (float("nan"), False, None)

    n = args.family_n
    base = harness.paper_qp(n, n // 2, n // 5)
    print(f"Scaling family: n={n}, p={n // 5}, m={n // 2}, tol={tol:g}; iterations (* = not solved)")
    print(f"{'k':>3} {'j':>3} {'engine':>8} {'paper ρ=1':>10} {'paper best ρ':>13} {'best ρ':>7} {'OSQP':>7}")
    rows = []

    def cell(result, width):
        return f"{result[0]}{'' if result[1] else '*'}".rjust(width)

    for k in range(-3, 4):
        for j in range(-3, 4):
            data = scaled(base, k, j)
            ours, fixed = altdiff_engine(data, engine), altdiff_engine(data, paper)
            tuned = min((altdiff_engine(data, ad.Options(tol=tol, max_iter=max_iter, rho=r, **PAPER))[:2] + (r,)
                         for r in RHO_GRID), key=lambda t: (not t[1], t[0]))
            reference = osqp_engine(data, tol, max_iter) if have_osqp else missing
            rows.append((ours[0], fixed[0], tuned[0], reference[0]))
            print(f"{k:>3} {j:>3} {cell(ours, 8)} {cell(fixed, 10)} {cell(tuned, 13)} {tuned[2]:>7g} "
                  f"{cell(reference, 7)}")
    ours, fixed, tuned, osqp_iters = (np.array(c, float) for c in zip(*rows))
    print(f"median iterations: engine {np.median(ours):.0f}, paper ρ=1 {np.median(fixed):.0f}, "
          f"paper best ρ {np.median(tuned):.0f}, OSQP {np.median(osqp_iters):.0f}")
    print(f"engine / paper-best-ρ: median {np.median(ours / tuned):.2f}, max {np.max(ours / tuned):.2f}; "
          f"engine / OSQP median iterations: {np.median(ours) / np.median(osqp_iters):.2f}")

    print(f"\nPaper generator (p = n/5, m = n/2), tol={tol:g}: iterations, best seconds of {args.repeats} "
          "interleaved calls")
    print(f"{'n':>5} {'engine':>16} {'paper ρ=1':>16} {'OSQP':>16}")
    for size in args.sizes:
        data = harness.paper_qp(size, size // 2, size // 5, seed=1)
        results = {"engine": altdiff_engine(data, engine), "paper": altdiff_engine(data, paper),
                   "OSQP": osqp_engine(data, tol, max_iter) if have_osqp else missing}
        times = harness.interleaved({name: r[2] for name, r in results.items() if r[2]}, args.repeats)
        print(f"{size:>5} " + " ".join(
            f"{it:>6}{'' if ok else '*'} {times[name].best if name in times else float('nan'):8.4f}s"
            for name, (it, ok, _) in results.items()))


if __name__ == "__main__":
    main()
