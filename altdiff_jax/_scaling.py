"""Ruiz equilibration of the problem data, and the maps back to the user's scaling.

The loop runs on the scaled problem

    x = D x̃,   P̃ = c D P D,   q̃ = c D q,   Ã = E_A A D,  b̃ = E_A b,   G̃ = E_G G D,  h̃ = E_G h,

so s = s̃ / E_G, λ = E_A λ̃ / c and ν = E_G ν̃ / c. The change of variables is linear and
independent of the parameters' values along a derivative, so the Jacobian recursion runs
in scaled space with scaled seeds (∂q̃/∂q = cD, ∂b̃/∂b = E_A, ∂h̃/∂h = E_G) and is
un-scaled once at the end with the same maps as the iterates.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from ._admm import Iterate
from ._jacobian import Seeds
from ._problem import Constraints

_CLIP = (1e-4, 1e4)  # bounds on one Ruiz step, as in OSQP


class Scaling(NamedTuple):
    """Diagonal scalings: D ``(n,)``, E_A ``(p,)``, E_G ``(m,)`` and the cost factor c ``()``."""

    D: jax.Array
    E_A: jax.Array
    E_G: jax.Array
    c: jax.Array

    def unscale(self, z: Iterate) -> Iterate:
        """Scaled iterate (or Jacobian, with a trailing column axis) -> user's scaling."""
        col = (lambda v: v) if z.x.ndim == 1 else (lambda v: v[:, None])
        return Iterate(
            col(self.D) * z.x,
            z.s / col(self.E_G),
            col(self.E_A) * z.lam / self.c,
            col(self.E_G) * z.nu / self.c,
        )

    def scale_seeds(self, seeds: Seeds) -> Seeds:
        """Seeds of the user's parameters expressed in scaled data: cD, E_A, E_G rows."""
        return Seeds(
            (self.c * self.D)[:, None] * seeds.grad,
            self.E_A[:, None] * seeds.b,
            self.E_G[:, None] * seeds.h,
        )

    def parameter_cotangents(self, sigma_bar: Seeds) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Cotangents of the scaled seeds -> cotangents of the user's (q, b, h): the
        transpose of :meth:`scale_seeds` for one column."""
        return self.c * self.D * sigma_bar.grad, self.E_A * sigma_bar.b, self.E_G * sigma_bar.h

    def scale(self, z: Iterate) -> Iterate:
        """User's scaling -> scaled iterate: the inverse of :meth:`unscale`."""
        return Iterate(z.x / self.D, z.s * self.E_G, self.c * z.lam / self.E_A, self.c * z.nu / self.E_G)


def ruiz_equilibrate(
    P: jax.Array, q: jax.Array, constraints: Constraints, iterations: int
) -> tuple[jax.Array, jax.Array, Constraints, Scaling]:
    """Equilibrate the KKT matrix [[P, Aᵀ, Gᵀ], [A, 0, 0], [G, 0, 0]] by Ruiz's method.

    Each step divides every row and column by the square root of its ∞-norm; then the
    cost is scaled by c so that the mean column norm of P̃ (or ‖q̃‖∞) is about one.
    ``iterations=0`` returns the data unchanged with unit scalings.

    Returns:
        ``(P̃, q̃, scaled constraints, Scaling)``.
    """
    A, b, G, h = constraints
    p = A.shape[0]
    M = jnp.concatenate([A, G], axis=0)
    dtype = P.dtype
    D = jnp.ones(q.shape, dtype)
    E = jnp.ones(M.shape[:1], dtype)
    tiny = jnp.finfo(dtype).tiny ** 0.25
    for _ in range(iterations):
        P_s = D[:, None] * P * D[None, :]
        M_s = E[:, None] * M * D[None, :]
        column_norms = jnp.maximum(jnp.max(jnp.abs(P_s), axis=0), jnp.max(jnp.abs(M_s), axis=0, initial=0.0))
        row_norms = jnp.max(jnp.abs(M_s), axis=1, initial=0.0)
        D = D * jnp.clip(1.0 / jnp.sqrt(jnp.maximum(column_norms, tiny)), *_CLIP)
        E = E * jnp.clip(1.0 / jnp.sqrt(jnp.maximum(row_norms, tiny)), *_CLIP)
    P_s = D[:, None] * P * D[None, :]
    c = jnp.asarray(1.0, dtype)
    if iterations:
        cost_norm = jnp.maximum(jnp.mean(jnp.max(jnp.abs(P_s), axis=0)), jnp.max(jnp.abs(D * q)))
        c = jnp.clip(1.0 / jnp.maximum(cost_norm, tiny), *_CLIP)
    E_A, E_G = E[:p], E[p:]
    scaled = Constraints(E_A[:, None] * A * D, E_A * b, E_G[:, None] * G * D, E_G * h)
    return c * P_s, c * D * q, scaled, Scaling(D, E_A, E_G, c)
