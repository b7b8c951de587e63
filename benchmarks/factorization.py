"""Cholesky refactoring vs the generalised eigen-factor for the ADMM x-update.

Run ``python benchmarks/factorization.py [--sizes 100 300 1000]`` (float64, CPU).

The x-update solves H(ρ) x = r, H(ρ) = P + ρC, C = AᵀA + GᵀG, on the paper's dense QP
(P = MᵀM, Gaussian A (p, n), G (m, n), p = n/5, m = n/2). Two designs:

* chol: L = chol(P + ρC), x = cho_solve(L, r); refactor whenever ρ changes;
* eig:  ``QuadraticObjective.factor`` (B = P + C, generalised eigh, V, μ), then
  x = V (w ⊙ (Vᵀ r)), w = 1 / (1 + (ρ − 1)μ), for any ρ.

Rows: one factorisation (chol given a cached C; eig from P, A, G as the library does it),
one solve with a vector, one solve with k = n + p + m columns (the Alt-Diff Jacobian
step), and a vmapped batch of 8 independent problems over 200 iterations whose per-lane
ρ changes every 10 iterations: eig factor once + 200 solves; chol every 10 iterations
(20 factorisations, nested fori_loops) + 200 cho_solves; chol every iteration. Both loop
designs form C inside the timed call. Times: median of jitted calls after a warm-up
(fewer, down to one, once they add up to 20 s).

OPENBLAS_NUM_THREADS defaults to 1 here: jaxlib's CPU Cholesky, eigh and triangular
solves call scipy's OpenBLAS, whose threads spin and slow down 10-100x when the cores
are shared (eig factor at n = 300: 36 ms single-threaded vs 0.6-4.6 s threaded under
load). XLA's own matrix products stay multithreaded. Override by exporting the variable.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before jaxlib loads OpenBLAS

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax import lax  # noqa: E402
from jax.scipy.linalg import cho_solve  # noqa: E402

jax.config.update("jax_enable_x64", True)

from altdiff_jax._objective import QuadraticObjective  # noqa: E402
from altdiff_jax._problem import Constraints  # noqa: E402

BATCH, ITERS, EVERY = 8, 200, 10


def paper_data(seed: int, n: int):
    rng = np.random.default_rng(seed)
    p, m = n // 5, n // 2
    M = rng.standard_normal((n, n))
    return tuple(jnp.asarray(a) for a in (M.T @ M, rng.standard_normal((p, n)),
                                          rng.standard_normal((m, n)), rng.standard_normal(n)))


def eig_factor(P, A, G):
    z = jnp.zeros
    obj = QuadraticObjective.factor(P, z(P.shape[0]), Constraints(A, z(A.shape[0]), G, z(G.shape[0])))
    return obj.V, obj.mu


def eig_solve(V, mu, rho, r):
    w = 1.0 / (1.0 + (rho - 1.0) * mu)
    return V @ ((w[:, None] if r.ndim == 2 else w) * (V.T @ r))


def chol_factor(P, C, rho):
    return jnp.linalg.cholesky(P + rho * C)


def chol_solve(L, r):
    return cho_solve((L, True), r)


def rho_at(rho0, i):  # per-lane ρ, changing every EVERY iterations
    return rho0 * 4.0 ** ((i // EVERY) % 3 - 1)


def loop_eig(P, A, G, q, rho0):
    V, mu = eig_factor(P, A, G)
    body = lambda i, x: eig_solve(V, mu, rho_at(rho0, i), q + 1e-3 * x)
    return lax.fori_loop(0, ITERS, body, jnp.zeros_like(q))


def loop_chol(P, A, G, q, rho0, every):
    C = A.T @ A + G.T @ G

    def outer(j, x):
        L = chol_factor(P, C, rho_at(rho0, j * every))
        inner = lambda i, x: chol_solve(L, q + 1e-3 * x)
        return lax.fori_loop(0, every, inner, x)

    return lax.fori_loop(0, ITERS // every, outer, jnp.zeros_like(q))


def timed(f, *args):
    """Median wall time: up to 25 calls within 3 s, at least 3 unless they pass 20 s."""
    jax.block_until_ready(f(*args))  # compile + warm-up
    times = []
    while not times or (len(times) < 3 and sum(times) < 20) or (len(times) < 25 and sum(times) < 3):
        t = time.perf_counter()
        jax.block_until_ready(f(*args))
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(sizes):
    jf_eig, jf_chol = jax.jit(eig_factor), jax.jit(chol_factor)
    js_eig, js_chol = jax.jit(eig_solve), jax.jit(chol_solve)
    loops = {"eig once": jax.jit(jax.vmap(loop_eig)),
             f"chol every {EVERY}": jax.jit(jax.vmap(lambda *a: loop_chol(*a, EVERY))),
             "chol every 1": jax.jit(jax.vmap(lambda *a: loop_chol(*a, 1)))}
    print("| n | ρ | ‖x_chol − x_eig‖/‖x_chol‖ | ‖Hx−r‖/‖r‖ chol | ‖Hx−r‖/‖r‖ eig |\n|---:|---:|---:|---:|---:|")
    for n in sizes:
        P, A, G, q = paper_data(0, n)
        C, V_mu = A.T @ A + G.T @ G, jf_eig(P, A, G)
        for rho in (1e-3, 1.0, 1e3):
            xc, xe = js_chol(jf_chol(P, C, rho), q), js_eig(*V_mu, rho, q)
            rel = [jnp.linalg.norm(v) / jnp.linalg.norm(w) for v, w in
                   ((xc - xe, xc), ((P + rho * C) @ xc - q, q), ((P + rho * C) @ xe - q, q))]
            print(f"| {n} | {rho:.0e} | " + " | ".join(f"{float(v):.1e}" for v in rel) + " |")
    print("\n| n | operation | Cholesky (ms) | eigen-factor (ms) | chol / eig |\n|---:|---|---:|---:|---:|")
    row = lambda n, op, tc, te: print(f"| {n} | {op} | {1e3 * tc:.3g} | {1e3 * te:.3g} | {tc / te:.3g} |", flush=True)
    for n in sizes:
        P, A, G, q = paper_data(0, n)
        C, (V, mu) = A.T @ A + G.T @ G, jf_eig(P, A, G)
        L, k = jf_chol(P, C, 1.0), n + A.shape[0] + G.shape[0]
        R = jnp.asarray(np.random.default_rng(1).standard_normal((n, k)))
        row(n, "factor", timed(jf_chol, P, C, 1.0), timed(jf_eig, P, A, G))
        row(n, "solve, 1 rhs", timed(js_chol, L, q), timed(js_eig, V, mu, 1.0, q))
        row(n, f"solve, k={k} rhs", timed(js_chol, L, R), timed(js_eig, V, mu, 1.0, R))
        batch = [paper_data(s, n) for s in range(BATCH)]
        args = [jnp.stack(a) for a in zip(*batch)] + [jnp.logspace(-2, 2, BATCH)]
        t_eig = timed(loops["eig once"], *args)
        for name in list(loops)[1:]:
            row(n, f"vmap {BATCH}×{ITERS} it: {name}", timed(loops[name], *args), t_eig)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 300, 1000])
    main(parser.parse_args().sizes)
