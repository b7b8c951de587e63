"""Problems: the paper's dense QP generator, a vmapped batch of them, the loss vector g."""

from __future__ import annotations

from typing import Mapping, Sequence

import jax.numpy as jnp
import numpy as np

QP_KEYS = ("P", "q", "A", "b", "G", "h")


def paper_qp(n: int, ineq: int, eq: int, seed: int = 0) -> dict:
    """The paper's dense QP (section 5.1), made feasible.

    P = MᵀM with M standard Gaussian (n, n); q, A (eq, n), G (ineq, n) standard Gaussian;
    b = A x0 and h = G x0 + U(0, 1) for a Gaussian x0. NumPy float64 arrays by name.
    """
    rng = np.random.default_rng(seed)
    M = rng.standard_normal((n, n))
    P = M.T @ M
    del M
    q = rng.standard_normal(n)
    A, G, x0 = rng.standard_normal((eq, n)), rng.standard_normal((ineq, n)), rng.standard_normal(n)
    return dict(P=P, q=q, A=A, b=A @ x0, G=G, h=G @ x0 + rng.uniform(size=ineq))


def paper_qp_of_size(n: int, seed: int = 0) -> dict:
    """:func:`paper_qp` at n variables as the first-call benchmarks pose it: the paper's Tiny
    (500 inequalities, 200 equalities) at n 1500, else n/2 inequalities and n/5 equalities."""
    return paper_qp(1500, 500, 200, seed=seed) if n == 1500 else paper_qp(n, n // 2, n // 5, seed=seed)


def stacked_qp(problems: Sequence[Mapping[str, np.ndarray]], in_axes, dtype=jnp.float64):
    """The ``altdiff_jax.QP`` of a vmapped batch: leaves whose ``in_axes`` entry is None
    from the first problem, the others stacked along a new leading axis."""
    import altdiff_jax as ad

    leaves = {}
    for k in QP_KEYS:
        stacked = np.stack([pr[k] for pr in problems])
        leaves[k] = jnp.asarray(stacked[0] if getattr(in_axes, k) is None else stacked, dtype)
    return ad.QP(**leaves)


def loss_vector(n: int, seed: int = 1) -> np.ndarray:
    """g ~ N(0, I) of the linear loss gᵀx*."""
    return np.random.default_rng(seed).standard_normal(n)
