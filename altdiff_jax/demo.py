"""Alt-Diff gradients of a dense QP, checked against an exact KKT solve, with timings.

Run ``python -m altdiff_jax.demo [--n 100 --p 20 --m 50 --tol 1e-8 --seed 0]``.

It builds a random feasible QP with the paper's generator, solves it by ADMM
(:func:`altdiff_jax.solve`, jitted), and takes ``jax.grad`` of a random linear loss
gᵀx* with respect to all six leaves P, q, A, b, G, h: under ``grad`` the ADMM loop also
carries the Alt-Diff Jacobians of eqs. (5ga)–(5gd). The gradients are compared with the
exact ones of a dense KKT solve on the active set (``_kkt.kkt_vjp`` + math note §5),
then the three computations are timed. Needs only JAX.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp

import altdiff_jax
from altdiff_jax._kkt import kkt_vjp
from altdiff_jax._problem import data_gradients, validate_qp


def random_qp(key: jax.Array, n: int, p: int, m: int) -> altdiff_jax.QP:
    """The paper's dense QP: P = MᵀM, Gaussian q, A, G, feasible at a Gaussian point x0.

    Returns:
        :class:`altdiff_jax.QP` with P ``(n, n)``, q ``(n,)``, A ``(p, n)``, b ``(p,)``,
        G ``(m, n)``, h ``(m,)``; h has a uniform(0, 1) margin at x0.
    """
    k_M, k_q, k_A, k_G, k_x0, k_margin = jax.random.split(key, 6)
    M = jax.random.normal(k_M, (n, n))
    A = jax.random.normal(k_A, (p, n))
    G = jax.random.normal(k_G, (m, n))
    x0 = jax.random.normal(k_x0, (n,))
    h = G @ x0 + jax.random.uniform(k_margin, (m,))
    return altdiff_jax.QP(M.T @ M, jax.random.normal(k_q, (n,)), A, A @ x0, G, h)


def timed(fn: Callable, *args) -> tuple[Any, float, float]:
    """``fn(*args)``, the seconds of that first call (compile included) and the median of 5 more."""
    seconds = []
    for _ in range(6):
        start = time.perf_counter()
        result = jax.block_until_ready(fn(*args))
        seconds.append(time.perf_counter() - start)
    return result, seconds[0], statistics.median(seconds[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100, help="variables")
    parser.add_argument("--p", type=int, default=20, help="equality constraints")
    parser.add_argument("--m", type=int, default=50, help="inequality constraints")
    parser.add_argument("--tol", type=float, default=1e-8, help="Options.tol")
    parser.add_argument("--seed", type=int, default=0, help="PRNG seed")
    args = parser.parse_args()
    # Here, not at import: importing the module (e.g. by doctest collection) changes nothing.
    jax.config.update("jax_enable_x64", True)

    key_problem, key_loss = jax.random.split(jax.random.PRNGKey(args.seed))
    problem = random_qp(key_problem, args.n, args.p, args.m)
    g = jax.random.normal(key_loss, (args.n,))
    options = altdiff_jax.Options(tol=args.tol)

    solve = jax.jit(lambda problem: altdiff_jax.solve(problem, options))

    def loss(problem):
        sol = altdiff_jax.solve(problem, options)
        return g @ sol.x, sol.info

    # The solve under grad carries the Jacobians, so it reports its own info.
    altdiff_grad = jax.jit(jax.grad(loss, has_aux=True))

    @jax.jit
    def kkt_grad(problem, sol):
        P, q, constraints = validate_qp(problem)
        bars = kkt_vjp(P, q, constraints, sol.x, sol.lam, sol.nu, sol.s, (g, None, None, None))
        return data_gradients(sol.x, sol.lam, sol.nu, *bars)

    sol, *solve_times = timed(solve, problem)
    (grads, grad_info), *grad_times = timed(altdiff_grad, problem)
    reference, *kkt_times = timed(kkt_grad, problem, sol)

    print(f"Dense QP n={args.n}, p={args.p}, m={args.m}, seed={args.seed}, tol={args.tol:g}")
    print(
        f"solve: {altdiff_jax.Status(int(sol.info.status)).name}, "
        f"{int(sol.info.iterations)} iterations, primal residual "
        f"{float(sol.info.primal_residual):.1e}, dual residual {float(sol.info.dual_residual):.1e}"
    )
    print(f"active inequalities (s <= nu): {int(jnp.sum(sol.s <= sol.nu))} of {args.m}")
    print(
        f"solve under grad: {altdiff_jax.Status(int(grad_info.status)).name}, "
        f"{int(grad_info.iterations)} iterations, "
        f"Jacobian change {float(grad_info.jacobian_change):.1e}"
    )

    print("\nAlt-Diff gradient of gᵀx* vs exact KKT gradient")
    print(f"{'leaf':>4}  {'shape':>10}  {'cosine':>12}  {'rel. error':>10}")
    for name in altdiff_jax.QP._fields:
        ours, exact = getattr(grads, name).ravel(), getattr(reference, name).ravel()
        cosine = ours @ exact / (jnp.linalg.norm(ours) * jnp.linalg.norm(exact))
        error = jnp.linalg.norm(ours - exact) / jnp.linalg.norm(exact)
        shape = "x".join(map(str, getattr(grads, name).shape))
        print(f"{name:>4}  {shape:>10}  {float(cosine):12.9f}  {float(error):10.1e}")

    print("\nTimings (s): first call (with compile), median of 5 later calls")
    for label, (first, steady) in (
        ("solve only", solve_times),
        ("solve + grad (Alt-Diff)", grad_times),
        ("KKT gradient at the solution", kkt_times),
    ):
        print(f"{label:>29}: {first:8.3f}  {steady:8.4f}")


if __name__ == "__main__":
    main()
