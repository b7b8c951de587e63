"""Alt-Diff's own product: the Jacobian dx*/db of the paper's Table 1, by ``jacobians(wrt=("b",))``.

For each size of the paper's dense generator (default: n 500 and Tiny, n 1500 / 200 eq /
500 ineq) and ``tol`` (default 1e-3, the paper's setting for its Jacobian timings):

* ``auto``: the default; a polished solution's Jacobian is solved exactly on its active set;
* ``altdiff``: the carried Jacobian, truncated by the tolerance as in the paper, with the
  x-update's explicit inverse applied to all columns as one matrix product;
* ``altdiff, factor``: the same with the Cholesky factor's two triangular solves per
  iteration instead (the engine below ``EXPLICIT_INVERSE_COLUMNS`` columns);
* ``jvp`` rows: one column (a tangent of b), factor against explicit inverse, the other end
  of that constant's range.

Each time is the best of interleaved runs after the first call; the error is relative
(Frobenius) to dx*/db from the dense KKT system on the active set of Clarabel's solution.

    python benchmarks/jacobians.py [--sizes 500 1500] [--tol 1e-3] [--repeats 5]
"""

from __future__ import annotations

import argparse
import contextlib
import sys

import numpy as np

try:
    from benchmarks import harness
except ImportError:  # run as a script
    import harness

import jax
import jax.numpy as jnp

import altdiff_jax as ad
from altdiff_jax import _solve

SIZES = {500: (500, 167, 67), 1500: (1500, 500, 200)}  # n: (n, ineq, eq), the paper's ratios


@contextlib.contextmanager
def explicit_inverse_from(columns: int):
    saved = _solve.EXPLICIT_INVERSE_COLUMNS
    _solve.EXPLICIT_INVERSE_COLUMNS = columns
    try:
        yield
    finally:
        _solve.EXPLICIT_INVERSE_COLUMNS = saved


def exact_jacobian(problem: dict) -> np.ndarray:
    reference = harness._tests_reference()
    x, lam, nu = reference.clarabel_solve(*(problem[k] for k in harness.QP_KEYS))
    return reference.kkt_jacobians(*(problem[k] for k in harness.QP_KEYS), x=x, lam=lam, nu=nu)["b"]


def contenders(qp: ad.QP, tol: float) -> dict:
    """name -> (compiled callable returning (solution, dx*/db or dx along a tangent))."""
    calls = {}
    for name, differentiation, threshold in (("auto", "auto", None), ("altdiff", "altdiff", None),
                                             ("altdiff, factor", "altdiff", 1 << 30)):
        options = ad.Options(tol=tol, differentiation=differentiation)
        with explicit_inverse_from(threshold or _solve.EXPLICIT_INVERSE_COLUMNS):
            function = jax.jit(lambda problem, options=options: ad.jacobians(problem, options, wrt=("b",))).lower(
                qp).compile()
        calls[name] = lambda function=function: function(qp)
    tangent = ad.QP(P=None, q=None, b=jnp.ones_like(qp.b))
    for name, threshold in (("jvp altdiff, factor", 1 << 30), ("jvp altdiff, explicit inverse", 1)):
        options = ad.Options(tol=tol, differentiation="altdiff")
        with explicit_inverse_from(threshold):
            function = jax.jit(lambda problem, options=options: ad.jvp(problem, tangent, options)).lower(qp).compile()
        calls[name] = lambda function=function: function(qp)
    return calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=sorted(SIZES), choices=sorted(SIZES))
    parser.add_argument("--tol", type=float, default=1e-3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(harness.RESULTS / "jacobians.md"))
    args = parser.parse_args()
    header = harness.hardware_line()
    body = []
    for size in args.sizes:
        n, ineq, eq = SIZES[size]
        problem = harness.paper_qp(n, ineq, eq)
        qp = ad.QP(**{k: jnp.asarray(v) for k, v in problem.items()})
        exact = exact_jacobian(problem)
        calls = contenders(qp, args.tol)
        outputs = {name: call() for name, call in calls.items()}
        timings = harness.interleaved(calls, repeats=args.repeats)
        rows = []
        for name, (solution, derivative) in outputs.items():
            expected = exact if not name.startswith("jvp") else exact @ np.ones(eq)
            actual = np.asarray(derivative["b"] if isinstance(derivative, dict) else derivative)
            error = np.linalg.norm(actual - expected) / np.linalg.norm(expected)
            info = solution.info
            rows.append([name, timings[name].best, f"{100 * timings[name].spread:.0f}%", f"{error:.1e}",
                         int(info.iterations), ad.Status(int(info.status)).name, bool(info.polished)])
            print(size, rows[-1], file=sys.stderr)
        body += [f"## n {n}, {eq} eq, {ineq} ineq: dx*/db ({n} × {eq}), tol {args.tol:g}", "",
                 harness.markdown_table(["method", "best (s)", "spread", "rel. error", "iterations", "status",
                                         "polished"], rows), ""]
    body += ["`jacobians` carries only the columns of `wrt`. With the default differentiation a polished "
             "solution's Jacobian is the fixed point of the Alt-Diff recursion on its active set, solved with "
             "the polish's factor; `altdiff` returns the carried, truncated Jacobian. The `factor` rows show the "
             "cost of the carried loop with triangular solves instead of one product with H(ρ)⁻¹ "
             "(`EXPLICIT_INVERSE_COLUMNS`)."]
    harness.write_markdown(args.out, "Alt-Diff Jacobians: dx*/db at the paper's sizes", header, body)


if __name__ == "__main__":
    main()
