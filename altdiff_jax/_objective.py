"""Objectives and their x-updates (paper eq. 5a) and Jacobian x-updates (eq. 5ga).

The loop driver is generic over the objective: an objective supplies

* ``gradient(x)``: ∇f(x), for the dual residual;
* ``x_update(x, r, rho)``: argmin_x f(x) + rᵀx + ρ/2 ‖Ax‖² + ρ/2 ‖Gx‖², the x-update
  of eq. (5a) with every constant of the augmented Lagrangian folded into ``r``;
* ``jacobian_x_update(x, dgrad, R, rho)``: −H(x)⁻¹ (dgrad + R), eq. (5ga), where
  H(x) = ∇²f(x) + ρAᵀA + ρGᵀG and ``dgrad`` is ∂_θ∇f, the seed of the parameters.

A quadratic objective solves both with one Cholesky factor computed per solve.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.linalg import cho_solve

from ._problem import Constraints


class QuadraticObjective(NamedTuple):
    """f(x) = ½xᵀPx + qᵀx with the factor of H = P + ρAᵀA + ρGᵀG.

    Attributes:
        P: ``(n, n)`` symmetric quadratic cost.
        q: ``(n,)`` linear cost.
        cholesky: ``(n, n)`` lower Cholesky factor of H for the ρ of the solve.
    """

    P: jax.Array
    q: jax.Array
    cholesky: jax.Array

    @classmethod
    def factor(cls, P: jax.Array, q: jax.Array, constraints: Constraints, rho: jax.Array):
        """Symmetrise P and factor H once; every iteration and the Jacobian reuse it."""
        P = 0.5 * (P + P.T)
        A, G = constraints.A, constraints.G
        H = P + rho * (A.T @ A + G.T @ G)
        return cls(P, q, jnp.linalg.cholesky(H))

    def gradient(self, x: jax.Array) -> jax.Array:
        return self.P @ x + self.q

    def _solve_H(self, rhs: jax.Array) -> jax.Array:
        return cho_solve((self.cholesky, True), rhs)

    def x_update(self, x: jax.Array, r: jax.Array, rho: jax.Array) -> jax.Array:
        del x, rho  # a quadratic x-update is one linear solve with the cached factor
        # (5a)  H x⁺ = −(q + r)
        return -self._solve_H(self.q + r)

    def jacobian_x_update(
        self, x: jax.Array, dgrad: jax.Array, R: jax.Array, rho: jax.Array
    ) -> jax.Array:
        del x, rho
        # (5ga) J_x⁺ = −H⁻¹ (∂_θq + R)
        return -self._solve_H(dgrad + R)
