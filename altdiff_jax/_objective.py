"""Objectives and their x-updates (paper eq. 5a) and Jacobian x-updates (eq. 5ga).

The loop driver is generic over the objective: an objective supplies

* ``gradient(x)``: ∇f(x), for the dual residual;
* ``hessian_vector(x, v)``: ∇²f(x) v, for the unboundedness certificate;
* ``x_update(x, r, rho)``: argmin_x f(x) + rᵀx + ρ/2 ‖Ax‖² + ρ/2 ‖Gx‖², the x-update
  of eq. (5a) with every constant of the augmented Lagrangian folded into ``r``;
* ``jacobian_x_update(x, dgrad, R, rho)``: −H(x)⁻¹ (dgrad + R), eq. (5ga), where
  H(x) = ∇²f(x) + ρAᵀA + ρGᵀG and ``dgrad`` is ∂_θ∇f, the seed of the parameters.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.linalg import solve_triangular

from ._problem import Constraints


class QuadraticObjective(NamedTuple):
    """f(x) = ½xᵀPx + qᵀx, with H(ρ) = P + ρC factored once for every ρ.

    With C = AᵀA + GᵀG and B = P + C ≻ 0, the generalised eigenproblem C V = B V diag(μ),
    VᵀBV = I, gives H(ρ)⁻¹ = V diag(1 / (1 + (ρ − 1)μ)) Vᵀ with μ ∈ [0, 1]. One O(n³)
    factorisation per solve then serves every iteration at any ρ for O(n²) (O(n²k) for
    k Jacobian columns, as two matrix products), so ρ can adapt per problem under vmap
    without refactoring.

    Attributes:
        P: ``(n, n)`` symmetric quadratic cost.
        q: ``(n,)`` linear cost.
        V: ``(n, n)`` B-orthonormal generalised eigenvectors.
        mu: ``(n,)`` generalised eigenvalues in [0, 1].
    """

    P: jax.Array
    q: jax.Array
    V: jax.Array
    mu: jax.Array

    @classmethod
    def factor(cls, P: jax.Array, q: jax.Array, constraints: Constraints) -> "QuadraticObjective":
        """Factor once; a singular B = P + AᵀA + GᵀG gives NaNs, reported as NONFINITE."""
        A, G = constraints.A, constraints.G
        C = A.T @ A + G.T @ G
        L = jnp.linalg.cholesky(P + C)
        L_inv_C = solve_triangular(L, C, lower=True)
        C_tilde = solve_triangular(L, L_inv_C.T, lower=True)  # L⁻¹ C L⁻ᵀ
        mu, W = jnp.linalg.eigh(0.5 * (C_tilde + C_tilde.T))
        V = solve_triangular(L.T, W, lower=False)  # L⁻ᵀ W
        return cls(P, q, V, jnp.clip(mu, 0.0, 1.0))

    def gradient(self, x: jax.Array) -> jax.Array:
        return self.P @ x + self.q

    def hessian_vector(self, x: jax.Array, v: jax.Array) -> jax.Array:
        del x
        return self.P @ v

    def _solve_H(self, rhs: jax.Array, rho: jax.Array) -> jax.Array:
        weights = 1.0 / (1.0 + (rho - 1.0) * self.mu)
        if rhs.ndim == 2:
            weights = weights[:, None]
        return self.V @ (weights * (self.V.T @ rhs))

    def x_update(self, x: jax.Array, r: jax.Array, rho: jax.Array) -> jax.Array:
        del x  # a quadratic x-update is one linear solve with the cached factor
        # (5a)  H x⁺ = −(q + r)
        return -self._solve_H(self.q + r, rho)

    def jacobian_x_update(
        self, x: jax.Array, dgrad: jax.Array, R: jax.Array, rho: jax.Array
    ) -> jax.Array:
        del x
        # (5ga) J_x⁺ = −H⁻¹ (∂_θq + R)
        return -self._solve_H(dgrad + R, rho)


QUADRATIC_FACTORS = {"dense": QuadraticObjective.factor}
"""How a layer factors its quadratic, by name (a static setting of the solve)."""
