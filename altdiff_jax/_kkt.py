"""Exact derivatives of a QP solution by a dense KKT solve on the active set.

The reference Alt-Diff converges to (math note §4), computed the way OptNet does: one
LU solve of the symmetric, indefinite KKT matrix restricted to the active constraints.
Shapes stay fixed so that it runs under ``jit`` and ``vmap``: an inactive inequality is
not removed, its row is replaced by ``d_ν_i = 0``, which decouples it from the rest.

Active set: inequality i is active iff ``s_i <= ν_i``. This is the tie-break of the
Alt-Diff recursion (eq. 5gb), which treats a weakly active constraint (``s_i = ν_i = 0``)
as active.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import jax
import jax.numpy as jnp

from ._problem import Constraints


def _kkt_system(
    P: jax.Array, constraints: Constraints, s: jax.Array, nu: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """The fixed-shape KKT matrix and the 0/1 mask of active inequalities.

    Returns:
        ``(K, active)``: ``K`` of shape ``(n + p + m, n + p + m)``,

            [ P    Aᵀ   G_aᵀ     ]
            [ A    0    0        ]      G_a = diag(active) G,
            [ G_a  0    diag(1−a)]

        symmetric, and ``active`` of shape ``(m,)`` as a float mask.
    """
    A, _, G, _ = constraints
    (p, n), (m, _) = A.shape, G.shape
    active = (s <= nu).astype(P.dtype)
    G_active = active[:, None] * G
    K = jnp.block(
        [
            [0.5 * (P + P.T), A.T, G_active.T],
            [A, jnp.zeros((p, p + m), P.dtype)],
            [G_active, jnp.zeros((m, p), P.dtype), jnp.diag(1.0 - active)],
        ]
    )
    return K, active


def kkt_jacobians(
    P: jax.Array,
    q: jax.Array,
    constraints: Constraints,
    x: jax.Array,
    lam: jax.Array,
    nu: jax.Array,
    s: jax.Array,
) -> dict[str, jax.Array]:
    """Exact Jacobians of x* with respect to q, b and h.

    Args:
        P: ``(n, n)`` quadratic cost (used through ``(P + Pᵀ)/2``).
        q: ``(n,)`` linear cost (the Jacobians do not depend on it).
        constraints: ``Constraints(A (p, n), b (p,), G (m, n), h (m,))``; an absent
            block has zero rows.
        x: ``(n,)`` solution (the Jacobians do not depend on it).
        lam: ``(p,)`` equality multipliers (unused; kept for a uniform signature).
        nu: ``(m,)`` inequality multipliers.
        s: ``(m,)`` slack ``h − Gx`` of the solver.

    Returns:
        ``{"q": (n, n), "b": (n, p), "h": (n, m)}``: dx*/dq, dx*/db, dx*/dh; the columns
        of inactive inequalities are zero.
    """
    del q, x, lam
    K, active = _kkt_system(P, constraints, s, nu)
    n, p, m = P.shape[0], constraints.b.shape[0], constraints.h.shape[0]
    # Differentiating the KKT conditions: K [dx; dλ; dν] = [−dq; db; active · dh].
    rhs = jax.scipy.linalg.block_diag(
        -jnp.eye(n, dtype=P.dtype), jnp.eye(p, dtype=P.dtype), jnp.diag(active)
    )
    dx = jnp.linalg.solve(K, rhs)[:n]
    return {"q": dx[:, :n], "b": dx[:, n : n + p], "h": dx[:, n + p :]}


def kkt_vjp(
    P: jax.Array,
    q: jax.Array,
    constraints: Constraints,
    x: jax.Array,
    lam: jax.Array,
    nu: jax.Array,
    s: jax.Array,
    cotangents: Sequence[Optional[jax.Array]],
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Pull cotangents of the solution (x, s, λ, ν) back to q, b and h by one adjoint solve.

    The outputs are linear in (dq, db, dh): ``K [dx; dλ; dν] = [−dq; db; active · dh]``
    and ``ds = (1 − active) · (dh − G dx)`` (zero on active rows, as in eq. 5gb). So
    one solve ``K w = [x̄ − Gᵀ((1 − active) s̄); λ̄; ν̄]`` gives every parameter's
    cotangent. Gradients for P, A and G follow by :func:`data_gradients`.

    Args:
        P, q, constraints, x, lam, nu, s: as in :func:`kkt_jacobians`.
        cotangents: ``(x̄ (n,), s̄ (m,), λ̄ (p,), ν̄ (m,))``, e.g. an
            ``_admm.Iterate``; None stands for zero.

    Returns:
        ``(q̄ (n,), b̄ (p,), h̄ (m,))``.
    """
    del q, x, lam
    K, active = _kkt_system(P, constraints, s, nu)
    n, p, m = P.shape[0], constraints.b.shape[0], constraints.h.shape[0]
    x_bar, s_bar, lam_bar, nu_bar = (
        jnp.zeros(size, P.dtype) if bar is None else bar
        for bar, size in zip(cotangents, (n, m, p, m))
    )
    inactive_s_bar = (1.0 - active) * s_bar
    rhs = jnp.concatenate([x_bar - constraints.G.T @ inactive_s_bar, lam_bar, nu_bar])
    w = jnp.linalg.solve(K, rhs)  # K is symmetric: its transpose solve is itself
    w_x, w_lam, w_nu = jnp.split(w, [n, n + p])
    return -w_x, w_lam, active * w_nu + inactive_s_bar
