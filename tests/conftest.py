"""Shared fixtures: float64, the paper's problems with their Clarabel/KKT references, and
jitted functions shared by all tests so that each shape compiles once per session."""

from __future__ import annotations

import functools
import os

# jaxlib's CPU Cholesky, LU and triangular solves call OpenBLAS, whose threads spin and
# slow those calls 10-100x when the cores are shared (pytest-xdist workers, notebook
# kernels); set before jaxlib loads it. XLA's own kernels keep their threads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
# The suite compiles hundreds of small programs and runs each a few times, so it runs them at
# XLA's backend optimisation level 0, which generates code faster (the trade is measured in
# docs/guides/compile-time.md); the optimised HLO is the same and results agree to round-off. An
# XLA_FLAGS already set, even empty (`XLA_FLAGS= python -m pytest`), is kept instead.
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")

# A script run in its own process by test_sharding.py: importing it (as --doctest-modules
# would) sets 8 simulated devices in XLA_FLAGS for this process and every child it starts.
collect_ignore = ["sharding_checks.py"]

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

import altdiff_jax as ad  # noqa: E402

from reference import clarabel_solve, kkt_gradients, kkt_jacobians, random_qp  # noqa: E402

TIGHT = ad.Options(tol=1e-11, max_iter=100_000)
# With the eigen-factor forced and no polishing, a lane of a vmapped dense batch and the same
# problem solved alone follow exactly the same ADMM trajectory.
LANE_LIKE = ad.Options(tol=1e-11, max_iter=100_000, polish=False, factorization="eigen")

# (seed, n, p, m, singular_p): the shapes the suite compiles for.
PAPER = (0, 120, 30, 60, False)
SMALL = (1, 12, 3, 8, False)
NO_EQUALITIES = (2, 12, 0, 8, False)
NO_INEQUALITIES = (3, 12, 3, 0, False)
SINGULAR_P = (4, 8, 0, 16, True)
CASES = {
    "paper_n120": PAPER,
    "small": SMALL,
    "no_equalities": NO_EQUALITIES,
    "no_inequalities": NO_INEQUALITIES,
    "singular_P": SINGULAR_P,
}


def to_qp(data: dict, dtype=jnp.float64, lb=None, ub=None) -> ad.QP:
    """The QP of ``data`` (NumPy, from ``random_qp``) in ``dtype``, with optional bounds."""
    leaves = {k: None if v is None else jnp.asarray(v, dtype) for k, v in data.items()}
    return ad.QP(**leaves, lb=None if lb is None else jnp.asarray(lb, dtype),
                 ub=None if ub is None else jnp.asarray(ub, dtype))


@functools.lru_cache(maxsize=None)
def case(seed: int, n: int, p: int, m: int, singular_p: bool):
    """Problem data (NumPy), the QP, and the Clarabel solution (x, lam, nu)."""
    data = random_qp(seed, n, p, m, singular_p=singular_p)
    return data, to_qp(data), clarabel_solve(**data)


@functools.lru_cache(maxsize=None)
def reference_gradients(spec: tuple, direction_seed: int = 0):
    data, _, (x, lam, nu) = case(*spec)
    g = np.random.default_rng(direction_seed).standard_normal(x.shape)
    return g, kkt_gradients(**data, x=x, lam=lam, nu=nu, g=g)


@functools.lru_cache(maxsize=None)
def reference_jacobians(spec: tuple):
    data, _, (x, lam, nu) = case(*spec)
    return kkt_jacobians(**data, x=x, lam=lam, nu=nu)


def linear_loss(problem: ad.QP, g: jax.Array, options: ad.Options):
    """gᵀx*, with the solution as auxiliary output."""
    solution = ad.solve(problem, options)
    return solution.x @ g, solution


solve_jit = jax.jit(ad.solve)
value_and_grad_jit = jax.jit(jax.value_and_grad(linear_loss, has_aux=True))
jacobians_jit = jax.jit(ad.jacobians)


def relative_error(actual, expected) -> float:
    actual, expected = np.asarray(actual), np.asarray(expected)
    return float(np.linalg.norm(actual - expected) / max(np.linalg.norm(expected), 1e-300))


def cosine(actual, expected) -> float:
    actual, expected = np.ravel(actual), np.ravel(expected)
    return float(actual @ expected / (np.linalg.norm(actual) * np.linalg.norm(expected)))
