"""Ruiz equilibration of the problem data, and the maps back to the user's scaling.

The loop runs on the scaled problem

    x = D x̃,   P̃ = c D P D,   q̃ = c D q,   Ã = E_A A D,  b̃ = E_A b,   G̃ = E_G G D,  h̃ = E_G h,
    l̃b = lb / D,   ũb = ub / D,

so s = s̃ / E_G, λ = E_A λ̃ / c, ν = E_G ν̃ / c, and for the bound block z = D z̃,
μ = μ̃ / (c D) (bound rows are the identity in both scalings). The change of variables is
linear and independent of the parameters' values along a derivative, so the Jacobian
recursion runs in scaled space with scaled seeds (∂q̃/∂q = cD, ∂b̃/∂b = E_A,
∂h̃/∂h = E_G, ∂l̃b/∂lb = ∂ũb/∂ub = 1/D) and is un-scaled once at the end with the
same maps as the iterates.

D and E depend on P, A and G only (c also on q), so a batch that shares P, A, G shares
the equilibrated matrices and the factorisation of the x-update.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from ._iterate import Iterate, Seeds
from ._linalg import Dense, max_over
from ._problem import Constraints

_CLIP = (1e-4, 1e4)  # bounds on one Ruiz step, as in OSQP


def bound_scale(D: jax.Array, bound_block: jax.Array) -> jax.Array:
    """The variables' scale D on the rows of the bound block that ``bound_block`` (a
    vector or columns of it) belongs to: D itself, or ``(0,)`` for a problem without bounds."""
    return D[: bound_block.shape[0]]


class Scaling(NamedTuple):
    """Diagonal scalings: D ``(n,)``, E_A ``(p,)``, E_G ``(m,)`` and the cost factor c ``()``."""

    D: jax.Array
    E_A: jax.Array
    E_G: jax.Array
    c: jax.Array

    def _col(self, like):
        return (lambda v: v) if like.ndim == 1 else (lambda v: v[:, None])

    def unscale(self, z: Iterate) -> Iterate:
        """Scaled iterate (or Jacobian, with a trailing column axis) -> user's scaling."""
        col = self._col(z.x)
        D, D_B = col(self.D), col(bound_scale(self.D, z.z))
        return Iterate(
            D * z.x,
            z.s / col(self.E_G),
            col(self.E_A) * z.lam / self.c,
            col(self.E_G) * z.nu / self.c,
            D_B * z.z,
            z.mu / (self.c * D_B),
        )

    def scale(self, z: Iterate) -> Iterate:
        """User's scaling -> scaled iterate: the inverse of :meth:`unscale`."""
        D_B = bound_scale(self.D, z.z)
        return Iterate(
            z.x / self.D,
            z.s * self.E_G,
            self.c * z.lam / self.E_A,
            self.c * z.nu / self.E_G,
            z.z / D_B,
            self.c * D_B * z.mu,
        )

    def scale_seeds(self, seeds: Seeds) -> Seeds:
        """Seeds of the user's parameters expressed in scaled data."""
        inverse_D = (1.0 / bound_scale(self.D, seeds.lb))[:, None]
        return Seeds(
            (self.c * self.D)[:, None] * seeds.grad,
            self.E_A[:, None] * seeds.b,
            self.E_G[:, None] * seeds.h,
            inverse_D * seeds.lb,
            inverse_D * seeds.ub,
        )

    def parameter_cotangents(self, sigma_bar: Seeds) -> Seeds:
        """Cotangents of the scaled seeds (vectors) -> cotangents of the user's
        (q, b, h, lb, ub): the transpose of :meth:`scale_seeds` for one column."""
        D_B = bound_scale(self.D, sigma_bar.lb)
        return Seeds(
            self.c * self.D * sigma_bar.grad,
            self.E_A * sigma_bar.b,
            self.E_G * sigma_bar.h,
            sigma_bar.lb / D_B,
            sigma_bar.ub / D_B,
        )


def unit_scaling(n: int, p: int, m: int, dtype) -> Scaling:
    """The identity scaling (no equilibration)."""
    return Scaling(jnp.ones(n, dtype), jnp.ones(p, dtype), jnp.ones(m, dtype), jnp.ones((), dtype))


def _cost_factor(column_norms: jax.Array, gradient: jax.Array) -> jax.Array:
    """c = 1 / max(mean column norm of ∇²f, ‖∇f‖∞), clipped as a Ruiz step: the cost
    scaling of :func:`ruiz_equilibrate` (and, on its own, of :func:`cost_scaling`)."""
    dtype = gradient.dtype
    tiny = jnp.finfo(dtype).tiny ** 0.25
    norm = jnp.maximum(jnp.mean(column_norms), max_over(jnp.abs(gradient)))
    return jnp.where(norm > 0, jnp.clip(1.0 / jnp.maximum(norm, tiny), *_CLIP), jnp.ones((), dtype))


def cost_scaling(hessian, gradient: jax.Array, p: int, m: int) -> Scaling:
    """The scaling of structured data and smooth objectives: only the cost factor c (from
    ∇²f and ∇f at the starting point), so that ρ and the tolerances meet a cost of unit
    size; D = E = 1 keep the operators' structure (a diagonal P stays diagonal, 1ᵀ stays 1ᵀ).

    Args:
        hessian: ``(n, n)`` operator, ∇²f (P for a QP).
        gradient: ``(n,)`` ∇f at the start (q for a QP).
        p, m: rows of the equality and inequality blocks.
    """
    n, dtype = gradient.shape[0], gradient.dtype
    return unit_scaling(n, p, m, dtype)._replace(c=_cost_factor(hessian.column_norms(), gradient))


def _step_factor(norms: jax.Array) -> jax.Array:
    """One Ruiz step's factor per row or column, 1/√norm clipped; an all-zero column (a
    variable in no constraint and with no curvature) or row keeps its scale."""
    tiny = jnp.finfo(norms.dtype).tiny ** 0.25
    return jnp.where(norms > 0, jnp.clip(1.0 / jnp.sqrt(jnp.maximum(norms, tiny)), *_CLIP), 1.0)


def _equilibrated(P_hat, P_hat_column_norms, q: jax.Array, constraints: Constraints, iterations: int, scales):
    """The four values of :func:`ruiz_equilibrate` from the Ruiz scales ``(D, E_A, E_G)``
    and P̂ = DPD with its column norms: the cost factor c and the scaled constraints."""
    A, b, G, h, lb, ub = constraints
    D, E_A, E_G = scales
    c = _cost_factor(P_hat_column_norms, D * q) if iterations else jnp.asarray(1.0, q.dtype)
    D_B = bound_scale(D, lb)
    scaled = Constraints(A.scale(E_A, D), E_A * b, G.scale(E_G, D), E_G * h, lb / D_B, ub / D_B)
    return P_hat, c * D * q, scaled, Scaling(D, E_A, E_G, c)


def ruiz_equilibrate(
    P: Dense, q: jax.Array, constraints: Constraints, iterations: int
) -> tuple[Dense, jax.Array, Constraints, Scaling]:
    """Equilibrate the KKT matrix [[P, Aᵀ, Gᵀ], [A, 0, 0], [G, 0, 0]] by Ruiz's method.

    Each step divides every row and column by the square root of its ∞-norm; then the
    cost is scaled by c so that the mean column norm of DPD (or ‖Dq‖∞) is about one.
    ``iterations=0`` returns the data unchanged with unit scalings. Bound rows are the
    identity in scaled space too and take no part.

    Returns:
        ``(P̂ = DPD, q̃ = cDq, scaled constraints, Scaling)``; the scaled cost matrix is
        c·P̂ (kept apart so that P̂, like the factor of the x-update, does not depend
        on q).
    """
    A, b, G, h, lb, ub = constraints
    P_dense, A_dense, G_dense = P.dense(), A.dense(), G.dense()
    dtype = P_dense.dtype
    # The entries' magnitudes once; each step reduces them against the scales so far
    # (|d_i K_ij d_j| = d_i |K_ij| d_j), without forming the scaled matrices. P is
    # symmetric, so its column norms are its row norms, reduced along contiguous rows.
    abs_P, abs_A, abs_G = jnp.abs(P_dense), jnp.abs(A_dense), jnp.abs(G_dense)

    def ruiz_step(_, scales):
        D, E_A, E_G = scales
        column_norms = D * jnp.maximum(
            max_over(abs_P * D[None, :], axis=1),
            jnp.maximum(max_over(abs_A * E_A[:, None], axis=0), max_over(abs_G * E_G[:, None], axis=0)))
        rows_A = E_A * max_over(abs_A * D[None, :], axis=1)
        rows_G = E_G * max_over(abs_G * D[None, :], axis=1)
        return D * _step_factor(column_norms), E_A * _step_factor(rows_A), E_G * _step_factor(rows_G)

    # A loop, not unrolled: one copy of the step in the compiled program.
    scales = (jnp.ones(q.shape, dtype), jnp.ones(b.shape, dtype), jnp.ones(h.shape, dtype))
    scales = jax.lax.fori_loop(jnp.int32(0), jnp.int32(iterations), ruiz_step, scales) if iterations else scales
    D = scales[0]
    P_hat = Dense(D[:, None] * P_dense * D[None, :])
    return _equilibrated(P_hat, D * max_over(abs_P * D[None, :], axis=1), q, constraints, iterations, scales)


def ruiz_equilibrate_operators(P, q: jax.Array, constraints: Constraints, iterations: int):
    """:func:`ruiz_equilibrate` through the operators' own norms and scalings, for the
    sparse path (nothing is formed densely; P, A, G may be :class:`_sparse.Sparse` or
    dense blocks). The same steps and cost factor; returns the same four values."""
    A, b, G, h, lb, ub = constraints
    dtype, p = q.dtype, b.shape[0]

    def ruiz_step(_, scales):
        D, E_A, E_G = scales
        P_s, A_s, G_s = P.scale(D, D), A.scale(E_A, D), G.scale(E_G, D)
        column_norms = jnp.maximum(jnp.maximum(P_s.column_norms(), A_s.column_norms()), G_s.column_norms())
        return D * _step_factor(column_norms), E_A * _step_factor(A_s.row_norms()), E_G * _step_factor(G_s.row_norms())

    scales = (jnp.ones(q.shape, dtype), jnp.ones((p,), dtype), jnp.ones(h.shape, dtype))
    scales = jax.lax.fori_loop(jnp.int32(0), jnp.int32(iterations), ruiz_step, scales) if iterations else scales
    P_hat = P.scale(scales[0], scales[0])
    return _equilibrated(P_hat, P_hat.column_norms(), q, constraints, iterations, scales)
