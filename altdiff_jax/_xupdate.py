"""The ADMM x-update's linear systems H(ρ) = c(P̂ + σI) + ρC (paper eq. 5a) and the
solvers that follow ρ, chosen in one place (:func:`make_x_solver`).

C = w·AᵀA + GᵀG + diag(f) is the constraints' part (f: the bounded variables, w: the
equality rows' weight). Four solvers implement :class:`XSolver`:

* :class:`StructuredSolver`: P diagonal, at most one equality row, no G: diagonal plus
  rank one, O(n) at any ρ (the sparsemax and softmax layers);
* :class:`EigenSolver`: one generalised eigen-decomposition that serves every ρ (a batch
  whose lanes adapt ρ each on their own);
* :class:`CholeskySolver`: a Cholesky factor at the current ρ, recomputed when ρ changes;
* :class:`IterativeSolver`: conjugate gradients on the operators' products (the sparse
  path: nothing assembled, nothing refactored when ρ changes).

A new operator type needs a solver here and a branch of :func:`make_x_solver`; the loop calls ``solve(rhs, rho)`` and ``at_rho``, reads
``rho_dependent``, and polishing asks for ``gram()``.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Protocol, Union

import jax
import jax.numpy as jnp

from ._batching import computed_where
from ._linalg import Cholesky, Dense, DiagonalPlusRankOne, EigenFactor, ExplicitInverse, Operator, RowVector, structured
from ._problem import Constraints
from ._sparse import CGSettings, column_squares, conjugate_gradients, diagonal_of, is_sparse, system_matvec

EQUALITY_WEIGHT = 1.0
"""ρ of the equality rows of a general (dense) problem relative to ρ. OSQP's 1e3 solves
more nearly degenerate equality-constrained problems (Maros–Meszaros DUALC1, DUALC2) but lets
the stopping rule accept a point 1.7e-4 off the optimal objective on QCAPRI, so it waits for a
stricter rule (``benchmarks/results/maros_meszaros.md``). The structured layers' row keeps 1."""


def equality_weight(A: Operator) -> float:
    """w of the equality rows of ``A`` (static: chosen by the operator's type)."""
    return EQUALITY_WEIGHT if isinstance(A, Dense) else 1.0


class XSolver(Protocol):
    """H(ρ)⁻¹ for the x-update (eq. 5a) and the Jacobian x-update (eq. 5ga).

    Attributes:
        rho_dependent: whether :meth:`at_rho` changes the solver (a factor of H at one ρ):
            the loop then carries it rather than closing over it.
    """

    rho_dependent: bool

    def solve(self, rhs: jax.Array, rho: jax.Array, guess: Optional[jax.Array] = None) -> jax.Array:
        """H(ρ)⁻¹ rhs for ``rhs (n,)`` or ``(n, k)``, at the loop's current ρ; an iterative
        solver starts from ``guess`` (the last iterate), a factorisation ignores it."""
        ...

    def at_rho(self, rho: jax.Array, changed: jax.Array) -> "XSolver":
        """The solver ready for a new ρ where ``changed``."""
        ...

    def gram(self) -> Optional[jax.Array]:
        """``(n, n)`` C when the solver keeps it (polishing builds its normal matrix from
        it), else None."""
        ...


def constraint_gram(constraints: Constraints, dtype) -> jax.Array:
    """``(n, n)`` C = w·AᵀA + GᵀG + diag(f): the constraints' part of H(ρ) = … + ρC."""
    A, _, G, _, _, _ = constraints
    C = A.weighted_gram(jnp.full((A.shape[0],), equality_weight(A), dtype))
    return C + G.weighted_gram(jnp.ones((G.shape[0],), dtype)) + constraints.B.weighted_gram(constraints.bound_rows())


def bound_diagonal(constraints: Constraints) -> jax.Array:
    """``(n,)`` f: 1 on variables with a finite bound (zeros without bounds)."""
    return constraints.B.rmv(constraints.bound_rows())


class EigenSolver(NamedTuple):
    """H(ρ)⁻¹ at any ρ from one generalised eigen-decomposition (see ``EigenFactor``)."""

    factor: EigenFactor
    c: jax.Array
    rho_dependent = False

    def solve(self, rhs: jax.Array, rho: jax.Array, guess: Optional[jax.Array] = None) -> jax.Array:
        return self.factor.solve(rhs, self.c, rho)

    def at_rho(self, rho: jax.Array, changed: jax.Array) -> "EigenSolver":
        return self

    def gram(self) -> None:
        return None


class CholeskySolver(NamedTuple):
    """H(ρ)⁻¹ by a Cholesky factor of H at the current ρ, recomputed when ρ changes.

    Attributes:
        factor: the factor of H(ρ) = base + ρ C (a ``Cholesky``, or under ``vmap`` the
            ``ExplicitInverse`` formed from it: a batched triangular solve runs lane by
            lane, a batched product does not).
        base: ``(n, n)`` c(P̂ + σI).
        C: ``(n, n)`` the constraints' Gram matrix.
    """

    factor: Union[Cholesky, ExplicitInverse]
    base: jax.Array
    C: jax.Array
    rho_dependent = True

    def solve(self, rhs: jax.Array, rho: jax.Array, guess: Optional[jax.Array] = None) -> jax.Array:
        del rho, guess  # the factor is kept at the current ρ by at_rho
        return self.factor.solve(rhs)

    def at_rho(self, rho: jax.Array, changed: jax.Array) -> "CholeskySolver":
        # Called at termination checks only: under vmap it refactors only the lanes whose ρ
        # changed (on CPU; elsewhere every lane when one's changed).
        factor = computed_where(
            changed, lambda base, C, rho: type(self.factor).factor(base + rho * C), (self.base, self.C, rho), self.factor
        )
        return self._replace(factor=factor)

    def gram(self) -> jax.Array:
        return self.C


class StructuredSolver(NamedTuple):
    """H(ρ) = diag(c(p + σ) + ρf) + ρ w vvᵀ (P diagonal, A = vᵀ, no G): O(n) at any ρ.

    Attributes:
        diagonal: ``(n,)`` c(p + σ), the cost's part of the diagonal.
        f: ``(n,)`` the bound block's weights.
        v: ``(n,)`` the equality row (zeros without one).
        w: ``()`` its weight w (0 without one).
    """

    diagonal: jax.Array
    f: jax.Array
    v: jax.Array
    w: jax.Array
    rho_dependent = False

    def solve(self, rhs: jax.Array, rho: jax.Array, guess: Optional[jax.Array] = None) -> jax.Array:
        return DiagonalPlusRankOne(self.diagonal + rho * self.f, self.v, rho * self.w).solve(rhs)

    def at_rho(self, rho: jax.Array, changed: jax.Array) -> "StructuredSolver":
        return self

    def gram(self) -> None:
        return None


X_UPDATE_CG = {4: CGSettings(1e-6, 500, 0.1), 8: CGSettings(1e-8, 1000, 0.1)}
"""By item size, the conjugate-gradient settings of the sparse path's x-update
(:class:`IterativeSolver`), warm-started from the last iterate: each solve stops at 1e-8
relative to its right-hand side in float64 (against 1e-10: the same ADMM iterations within
1% on the MPC QP; 1e-6 adds 60% of them), or once it has cut its warm start's residual
tenfold (0.65x the solve's time at T 1000, the same iterations within 1%; in float32
0.89x): both in ``benchmarks/results/sparse.md``."""


class IterativeSolver(NamedTuple):
    """H(ρ)⁻¹ by conjugate gradients on the products of P̂, A and G, preconditioned by
    H(ρ)'s diagonal (the sparse path: nothing is assembled, nothing refactors when ρ
    changes).

    Attributes:
        cost: c·P̂, the equilibrated P times the cost scale (formed once).
        c, sigma: the cost scale and the proximal weight.
        constraints: the (scaled) constraints.
        w: ``(p,)`` the equality rows' weight.
        f: ``(n,)`` the bound block's weights (zeros without bounds).
        cost_diagonal: ``(n,)`` the diagonal of c(P̂ + σI), and
        constraint_diagonal: ``(n,)`` the diagonal of C: H(ρ)'s diagonal, the
            preconditioner, is their sum at ρ (formed once, outside the loop).
    """

    cost: Operator
    c: jax.Array
    sigma: jax.Array
    constraints: Constraints
    w: jax.Array
    f: jax.Array
    cost_diagonal: jax.Array
    constraint_diagonal: jax.Array
    rho_dependent = False

    @classmethod
    def build(cls, P_hat: Operator, c, sigma, constraints: Constraints, w, f) -> "IterativeSolver":
        G = constraints.G
        constraint_diagonal = f + column_squares(constraints.A, w) + column_squares(G, jnp.ones((G.shape[0],), f.dtype))
        return cls(P_hat.times(c), c, sigma, constraints, w, f, c * (diagonal_of(P_hat) + sigma), constraint_diagonal)

    def solve(self, rhs: jax.Array, rho: jax.Array, guess: Optional[jax.Array] = None) -> jax.Array:
        A, G = self.constraints.A, self.constraints.G
        matvec = system_matvec(self.cost, self.c * self.sigma + rho * self.f, A, rho * self.w, G,
                               jnp.full((G.shape[0],), rho, self.f.dtype))
        settings = X_UPDATE_CG[jnp.dtype(rhs.dtype).itemsize]
        inverse_diagonal = 1.0 / (self.cost_diagonal + rho * self.constraint_diagonal)
        return conjugate_gradients(matvec, rhs, inverse_diagonal, settings, guess)

    def at_rho(self, rho: jax.Array, changed: jax.Array) -> "IterativeSolver":
        return self

    def gram(self) -> None:
        return None


def make_x_solver(
    P_hat: Operator, c: jax.Array, sigma: jax.Array, constraints: Constraints, rho: jax.Array, method: str,
    explicit_inverse: bool = False,
) -> XSolver:
    """The factorisation of H(ρ) = c(P̂ + σI) + ρC that the structure and ``method`` call for.

    Args:
        P_hat: ``(n, n)`` the equilibrated P before the cost scale c.
        c, sigma: the cost scale and the proximal weight (relative to P̂).
        constraints: the (scaled) constraints.
        rho: the initial ρ (the Cholesky factor is computed at it).
        method: ``"cholesky"`` or ``"eigen"`` (ignored for structured data).
        explicit_inverse: with ``"cholesky"``, keep H(ρ)⁻¹ formed from the factor
            (``_linalg.ExplicitInverse``) instead of the factor.
    """
    n, dtype = P_hat.shape[0], c.dtype
    A = constraints.A
    if structured(P_hat, A, constraints.G):
        f = bound_diagonal(constraints)
        v = A.v if isinstance(A, RowVector) else jnp.zeros((n,), dtype)
        w = jnp.asarray(equality_weight(A) if isinstance(A, RowVector) else 0.0, dtype)  # 1 for the row
        return StructuredSolver(c * (P_hat.diagonal + sigma), f, v, w)
    if is_sparse(P_hat, A, constraints.G):
        w = jnp.full((A.shape[0],), equality_weight(A), dtype)
        return IterativeSolver.build(P_hat, c, sigma, constraints, w, bound_diagonal(constraints))
    C = constraint_gram(constraints, dtype)
    shifted = P_hat.dense() + sigma * jnp.eye(n, dtype=dtype)
    if method == "eigen":
        return EigenSolver(EigenFactor.factor(shifted, C), c)
    base = c * shifted
    factor = ExplicitInverse if explicit_inverse else Cholesky
    return CholeskySolver(factor.factor(base + rho * C), base, C)
