"""Problem generators: sparse QPs of the kinds the sparse path is for.

:func:`mpc_qp` builds the model-predictive-control QP of a double integrator over a
horizon: banded dynamics as sparse equality rows, box constraints as bounds, a diagonal
cost. Its initial state and cost weights may be traced values (for ``jax.grad``); the
sparsity pattern depends only on the horizon.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jax.experimental import sparse

from ._problem import QP


def double_integrator(dt: float) -> tuple[np.ndarray, np.ndarray]:
    """The discrete-time double integrator x⁺ = F x + g u, state (position, velocity)."""
    F = np.array([[1.0, dt], [0.0, 1.0]])
    g = np.array([0.5 * dt**2, dt])
    return F, g


def mpc_qp(horizon: int, x0, weights, dt: float = 0.1, position_bound: float = 10.0, velocity_bound: float = 2.0,
           input_bound: float = 1.0, dtype=jnp.float64) -> QP:
    """The MPC QP of a double integrator steered to the origin over ``horizon`` steps.

    Variables, per step t = 0 … T−1: the input u_t, then the state x_{t+1} (n = 3T):

        min  Σ_t  w_u u_t² + w_p p_{t+1}² + w_v v_{t+1}²
        s.t. x_{t+1} = F x_t + g u_t   (x_0 given: the first rows' right-hand side is F x_0)
             |p| <= position_bound, |v| <= velocity_bound, |u| <= input_bound.

    Args:
        horizon: T.
        x0: ``(2,)`` the initial state (position, velocity).
        weights: ``(3,)`` (w_u, w_p, w_v) > 0, the cost's diagonal per step (times 2: the
            cost is ½ zᵀPz).
        dt: the time step.
        position_bound, velocity_bound, input_bound: the boxes.
        dtype: float32 or float64.

    Returns:
        A :class:`QP` with ``P`` (diagonal) and ``A`` (``(2T, 3T)``, at most 4 entries a row)
        as ``jax.experimental.sparse.BCOO`` matrices, ``q = 0``, and bounds.
    """
    T = int(horizon)
    n, p = 3 * T, 2 * T
    F, g = double_integrator(dt)
    x0 = jnp.asarray(x0, dtype)
    weights = jnp.asarray(weights, dtype)
    P = sparse.BCOO((2.0 * jnp.tile(weights, T), np.repeat(np.arange(n), 2).reshape(n, 2).astype(np.int32)),
                    shape=(n, n))
    # Row pair t: x_{t+1} − g u_t − F x_t = 0 (x_t's columns only from t = 1 on).
    rows, columns, values = [], [], []
    t = np.arange(T)
    u, x_next = 3 * t, 3 * t + 1  # columns of u_t and of x_{t+1}'s first entry
    for i in range(2):
        row = 2 * t + i
        rows += [row, row]
        columns += [x_next + i, u]
        values += [np.ones(T), np.full(T, -g[i])]
        for j in range(2):
            if F[i, j] != 0.0:
                rows.append(row[1:])
                columns.append(x_next[:-1] + j)
                values.append(np.full(T - 1, -F[i, j]))
    indices = np.stack([np.concatenate(rows), np.concatenate(columns)], axis=1).astype(np.int32)
    A = sparse.BCOO((jnp.asarray(np.concatenate(values), dtype), indices), shape=(p, n))
    b = jnp.zeros((p,), dtype).at[:2].set(jnp.asarray(F, dtype) @ x0)
    box = jnp.tile(jnp.asarray([input_bound, position_bound, velocity_bound], dtype), T)
    return QP(P=P, q=jnp.zeros((n,), dtype), A=A, b=b, lb=-box, ub=box)


def dense_qp(problem: QP) -> QP:
    """The same problem with every ``BCOO`` matrix made dense (for checks on small ones)."""
    return QP(*(leaf.todense() if isinstance(leaf, sparse.BCOO) else leaf for leaf in problem))


__all__ = ["mpc_qp", "dense_qp", "double_integrator"]
