"""Alt-Diff gradients of a dense QP, checked against an exact KKT solve, with timings.

Run ``python -m altdiff_jax.demo [--n 100 --p 20 --m 50 --tol 1e-8 --seed 0]``.

It builds a random feasible QP with the paper's generator, solves it by ADMM
(:func:`altdiff_jax.solve`, jitted), and takes ``jax.grad`` of a random linear loss
gᵀx* with respect to all six leaves P, q, A, b, G, h: under ``grad`` the ADMM loop also
carries the Alt-Diff Jacobians of eqs. (5ga)–(5gd). The gradients are compared with the
exact ones of a dense KKT solve on the active set, written out in this file
(:func:`exact_gradients`, independent of the library's KKT code),
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


def exact_gradients(problem: altdiff_jax.QP, sol: altdiff_jax.Solution, g: jax.Array) -> altdiff_jax.QP:
    """The gradient of gᵀx* for all six leaves from one dense KKT solve, written out here
    independently of the library's own KKT code.

    On the active set (the inequalities with s_i <= ν_i), the KKT conditions
    Px + q + Aᵀλ + G_aᵀν_a = 0, Ax = b, G_a x = h_a give, with K the symmetric KKT matrix
    and K w = (g, 0, 0): q̄ = −w_x, b̄ = w_λ, h̄_a = w_ν (0 off the active set), and
    P̄ = (q̄xᵀ + xq̄ᵀ)/2, Ā = λq̄ᵀ − b̄xᵀ, Ḡ = νq̄ᵀ − h̄xᵀ.
    """
    P, A, G = problem.P, problem.A, problem.G
    n, p, m = P.shape[0], A.shape[0], G.shape[0]
    active = (sol.s <= sol.nu).astype(P.dtype)
    G_a = active[:, None] * G  # inactive rows decouple: −w_i = 0
    K = jnp.block([
        [0.5 * (P + P.T), A.T, G_a.T],
        [A, jnp.zeros((p, p)), jnp.zeros((p, m))],
        [G_a, jnp.zeros((m, p)), -jnp.diag(1.0 - active)],
    ])
    w = jnp.linalg.solve(K, jnp.concatenate([g, jnp.zeros(p + m)]))
    q_bar, b_bar, h_bar = -w[:n], w[n:n + p], active * w[n + p:]
    x, lam, nu = sol.x, sol.lam, sol.nu
    return altdiff_jax.QP(
        P=0.5 * (jnp.outer(q_bar, x) + jnp.outer(x, q_bar)), q=q_bar,
        A=jnp.outer(lam, q_bar) - jnp.outer(b_bar, x), b=b_bar,
        G=jnp.outer(nu, q_bar) - jnp.outer(h_bar, x), h=h_bar,
    )


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
    # The paper's strategy, explicitly: the default ("auto") would pick the adjoint here.
    options = altdiff_jax.Options(tol=args.tol, differentiation="altdiff")

    solve = jax.jit(lambda problem: altdiff_jax.solve(problem, options))

    def loss(problem):
        sol = altdiff_jax.solve(problem, options)
        return g @ sol.x, sol.info

    # The solve under grad carries the Jacobians, so it reports its own info.
    altdiff_grad = jax.jit(jax.grad(loss, has_aux=True))

    kkt_grad = jax.jit(exact_gradients)
    sol, *solve_times = timed(solve, problem)
    (grads, grad_info), *grad_times = timed(altdiff_grad, problem)
    reference, *kkt_times = timed(kkt_grad, problem, sol, g)

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
    for name in ("P", "q", "A", "b", "G", "h"):
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
