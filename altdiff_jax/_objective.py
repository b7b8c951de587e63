"""Objectives and their x-updates (paper eq. 5a) and Jacobian x-updates (eq. 5ga).

The loop driver is generic over the objective: an objective supplies

* ``gradient(x)``: ∇f(x), for the dual residual;
* ``hessian(x)``: ∇²f(x), for the dense KKT strategy;
* ``hessian_vector(x, v)`` and ``recession_slope(d)``: ∇²f(x) v and the slope of the
  linear cost along d, for the unboundedness certificate;
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


# Methods every quadratic objective shares; each class supplies P, q and ``_solve_H``.
def _quadratic_hessian(self, x: jax.Array) -> jax.Array:
    del x
    return self.P


def _quadratic_recession_slope(self, d_x: jax.Array) -> jax.Array:
    """qᵀd: negative along a direction of unbounded descent."""
    return self.q @ d_x


def _quadratic_x_update(self, x: jax.Array, r: jax.Array, rho: jax.Array) -> jax.Array:
    del x  # a quadratic x-update is one linear solve with the cached factor
    # (5a)  H x⁺ = −(q + r)
    return -self._solve_H(self.q + r, rho)


def _quadratic_jacobian_x_update(
    self, x: jax.Array, dgrad: jax.Array, R: jax.Array, rho: jax.Array
) -> jax.Array:
    del x
    # (5ga) J_x⁺ = −H⁻¹ (∂_θq + R)
    return -self._solve_H(dgrad + R, rho)


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

    hessian = _quadratic_hessian
    recession_slope = _quadratic_recession_slope

    def _solve_H(self, rhs: jax.Array, rho: jax.Array) -> jax.Array:
        weights = 1.0 / (1.0 + (rho - 1.0) * self.mu)
        if rhs.ndim == 2:
            weights = weights[:, None]
        return self.V @ (weights * (self.V.T @ rhs))

    x_update = _quadratic_x_update
    jacobian_x_update = _quadratic_jacobian_x_update


QUADRATIC_FACTORS = {"dense": QuadraticObjective.factor}
"""How a layer factors its quadratic, by name (a static setting of the solve)."""


class IdentityPlusOnesQuadratic(NamedTuple):
    """f(x) = ½ p‖x‖² + qᵀx on constraints with AᵀA = a·11ᵀ and GᵀG = g·I: no factorisation.

    The sparsemax layers' structure (P = 2I, A = 1ᵀ, G = −I or [I; −I]):
    H(ρ) = P + ρ(AᵀA + GᵀG) = d·I + c·11ᵀ with d = p + ρg and c = ρa, so every solve is
    Sherman–Morrison,

        (dI + c11ᵀ)⁻¹ v = (v − c (1ᵀv) / (d + cn) · 1) / d,

    O(n) for a vector and O(nk) for k Jacobian columns, at any ρ: no O(n³) factor and
    no O(n²) storage.

    :meth:`factor` reads the scalars off the data and *trusts* the structure (a traced
    array cannot be checked): p = P[0, 0] (P must be pI), a = Σ A[:, 0]² (each row of A
    constant, e.g. A = 1ᵀ, so AᵀA = a·11ᵀ; a = 0 with no equality row) and
    g = Σ G[:, 0]² (GᵀG must be gI: G = I, −I or [I; −I] give g = 1, 1, 2). Data of any
    other structure gives a wrong solution, not an error: use the ``"dense"`` factor.

    Attributes:
        p: ``()`` the diagonal of P = pI.
        a: ``()`` AᵀA = a·11ᵀ.
        g: ``()`` GᵀG = g·I.
        q: ``(n,)`` linear cost.
    """

    p: jax.Array
    a: jax.Array
    g: jax.Array
    q: jax.Array

    @classmethod
    def factor(cls, P: jax.Array, q: jax.Array, constraints: Constraints) -> "IdentityPlusOnesQuadratic":
        """Read p, a, g off the data (see the class docstring for the assumptions)."""
        A, G = constraints.A, constraints.G
        return cls(P[0, 0], jnp.sum(A[:, 0] ** 2), jnp.sum(G[:, 0] ** 2), q)

    @property
    def P(self) -> jax.Array:
        """``(n, n)`` the dense P = pI, for code that needs the matrix (the KKT strategy)."""
        return self.p * jnp.eye(self.q.shape[0], dtype=self.q.dtype)

    def gradient(self, x: jax.Array) -> jax.Array:
        return self.p * x + self.q

    def hessian_vector(self, x: jax.Array, v: jax.Array) -> jax.Array:
        del x
        return self.p * v

    hessian = _quadratic_hessian
    recession_slope = _quadratic_recession_slope

    def _solve_H(self, rhs: jax.Array, rho: jax.Array) -> jax.Array:
        # Sherman–Morrison; rhs (n,) or (n, k): 1ᵀrhs is () or (k,) and broadcasts over rows.
        d = self.p + rho * self.g
        c = rho * self.a
        n = rhs.shape[0]
        return (rhs - (c / (d + c * n)) * jnp.sum(rhs, axis=0)) / d

    x_update = _quadratic_x_update
    jacobian_x_update = _quadratic_jacobian_x_update


QUADRATIC_FACTORS["identity_plus_ones"] = IdentityPlusOnesQuadratic.factor
