"""Quadratic objectives and their x-updates (paper eq. 5a) and Jacobian x-updates (eq. 5ga).

The loop driver is generic over the objective: :class:`Objective` is the protocol it
requires, :class:`QuadraticObjective` (here) and ``_smooth.SmoothObjective`` its
implementations. An objective supplies

* ``gradient(x)``, ``value(x)``: ∇f(x) and f(x), for residuals and the duality gap;
* ``hessian_operator(x)``: ∇²f(x) as an operator (``_linalg``), for polishing and the
  ``kkt`` strategy;
* ``hessian_vector(x, v)`` and ``recession_slope(d)``: ∇²f(x) v and the slope of the
  linear cost along d, for the unboundedness certificate;
* ``dual_objective(lam, nu, mu, constraints, x)``: the Lagrange dual objective at a
  stationary pair, or None when the objective has none in closed form;
* ``x_update(x, r, rho)``: argmin_x f(x) + rᵀx + ρ/2 xᵀCx + σ/2‖x − xᵏ‖², the x-update of
  eq. (5a) with every constant of the augmented Lagrangian folded into ``r``, where
  C = w·AᵀA + GᵀG + diag(f) (f: the bounded variables, w: ``EQUALITY_WEIGHT``);
* ``jacobian_x_update(x, J_x, dgrad, R, rho)``: H⁻¹(σJ_x − dgrad − R), eq. (5ga) with the
  proximal term, where H = ∇²f(x) + σI + ρC and ``dgrad`` is ∂_θ∇f;
* ``at_rho(rho, changed)``: the objective ready for a new ρ (a Cholesky factor is
  recomputed there; other factors serve every ρ);
* ``constraint_gram()``: C when the x-update keeps it (a Cholesky factor), else None:
  polishing builds its normal matrix from it (``_kkt.ReducedKKT.build``).

The proximal term σ/2‖x − xᵏ‖² (OSQP's) makes H positive definite for every PSD P and
every A, G: singular P, LPs, rank-deficient and duplicated constraints run like any other
problem. It vanishes at a fixed point, so the solution, the KKT system and the fixed point
of the Jacobian recursion (the differentiated KKT system, ``docs/mathematics.md``) do not
depend on σ.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Protocol, Union

import jax
import jax.numpy as jnp

from ._batching import computed_where
from ._linalg import Cholesky, Dense, DiagonalPlusRankOne, EigenFactor, ExplicitInverse, Operator, RowVector, structured
from ._problem import Constraints

EQUALITY_WEIGHT = 1.0
"""ρ of the equality rows of a general (dense) problem relative to ρ. OSQP's 1e3 solves
more nearly degenerate equality-constrained problems (Maros–Meszaros DUALC1, DUALC2) but lets
the stopping rule accept a point 1.7e-4 off the optimal objective on QCAPRI, so it waits for a
stricter rule (``benchmarks/results/maros_meszaros.md``). The structured layers' row keeps 1."""


def equality_weight(A: Operator) -> float:
    """w of the equality rows of ``A`` (static: chosen by the operator's type)."""
    return EQUALITY_WEIGHT if isinstance(A, Dense) else 1.0


class Objective(Protocol):
    """What the loop driver (``_driver``), the ADMM and Jacobian steps (``_admm``,
    ``_jacobian``, ``_adjoint``), polishing (``_polish``) and the KKT system (``_kkt``)
    require of an objective f, in the solver's scaling. A new objective implements these
    and goes through the same loop (``_solve.run_objective``); differentiation works
    unchanged. Implementations: :class:`QuadraticObjective`, ``_smooth.SmoothObjective``.
    An implementation is a pytree (it is carried by, or closed over in, the loop).
    """

    quadratic: bool
    """True when f is quadratic: one Newton step of polishing is exact, and the loop may
    solve for exact Jacobians at a polished point (``_driver.run``'s ``exact_jacobians``)."""

    rho_dependent: bool
    """Whether :meth:`at_rho` can change the objective (a factor of H(ρ) recomputed there):
    the driver then carries the objective in its loop state, else closes over it."""

    sigma: jax.Array
    """``()`` the proximal weight σ of the x-update, σ/2‖x − xᵏ‖² (cost scale included)."""

    def value(self, x: jax.Array) -> jax.Array:
        """f(x), for the duality gap."""
        ...

    def gradient(self, x: jax.Array) -> jax.Array:
        """∇f(x), for the residuals, polishing and the Jacobian seeds."""
        ...

    def hessian_operator(self, x: jax.Array) -> Operator:
        """∇²f(x) as an operator (``_linalg``), for polishing and the ``kkt`` strategy."""
        ...

    def hessian_vector(self, x: jax.Array, v: jax.Array) -> jax.Array:
        """∇²f(x) v, for the dual infeasibility (unboundedness) certificate."""
        ...

    def recession_slope(self, d_x: jax.Array) -> jax.Array:
        """The slope of f along the direction ``d_x`` at infinity (the linear cost's qᵀd
        for a QP), for the unboundedness certificate."""
        ...

    def dual_objective(self, lam, nu, mu, constraints: Constraints, x) -> Optional[jax.Array]:
        """The Lagrange dual objective at a stationary pair, or None when f has none in
        closed form (the duality gap is then not checked)."""
        ...

    def x_update(self, x: jax.Array, r: jax.Array, rho: jax.Array) -> jax.Array:
        """argmin_x f(x) + rᵀx + ρ/2 xᵀCx + σ/2‖x − xᵏ‖², eq. (5a), every constant of the
        augmented Lagrangian folded into ``r``; C = w·AᵀA + GᵀG + diag(f)."""
        ...

    def jacobian_x_update(self, x, J_x, dgrad, R, rho) -> jax.Array:
        """H⁻¹(σJ_x − dgrad − R), eq. (5ga) with the proximal term, where H = ∇²f(x) + σI
        + ρC and ``dgrad`` is ∂_θ∇f."""
        ...

    def at_rho(self, rho: jax.Array, changed: jax.Array) -> "Objective":
        """The objective ready for a new ρ where ``changed`` (a Cholesky factor is
        recomputed there; other factors serve every ρ)."""
        ...

    def constraint_gram(self) -> Optional[jax.Array]:
        """C when the x-update keeps it (a Cholesky factor), else None: polishing builds its
        normal matrix from it (``_kkt.ReducedKKT.build``)."""
        ...


def constraint_gram(constraints: Constraints, n: int, dtype) -> jax.Array:
    """``(n, n)`` C = w·AᵀA + GᵀG + diag(f): the constraints' part of H(ρ) = … + ρC."""
    A, _, G, _, _, _ = constraints
    C = A.weighted_gram(jnp.full((A.shape[0],), equality_weight(A), dtype))
    C = C + G.weighted_gram(jnp.ones((G.shape[0],), dtype))
    if constraints.bounded:
        C = C + jnp.diag(constraints.bound_rows())
    return C


def bound_diagonal(constraints: Constraints, n: int, dtype) -> jax.Array:
    """``(n,)`` f: 1 on variables with a finite bound (zeros without bounds)."""
    return constraints.bound_rows() if constraints.bounded else jnp.zeros((n,), dtype)


class EigenSolver(NamedTuple):
    """H(ρ)⁻¹ at any ρ from one generalised eigen-decomposition (see ``EigenFactor``)."""

    factor: EigenFactor
    c: jax.Array

    def solve(self, rhs: jax.Array, rho: jax.Array) -> jax.Array:
        return self.factor.solve(rhs, self.c, rho)

    def at_rho(self, rho: jax.Array, changed: jax.Array) -> "EigenSolver":
        return self


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

    def solve(self, rhs: jax.Array, rho: jax.Array) -> jax.Array:
        del rho  # the factor is kept at the current ρ by at_rho
        return self.factor.solve(rhs)

    def at_rho(self, rho: jax.Array, changed: jax.Array) -> "CholeskySolver":
        # Called at termination checks only: under vmap it refactors (every lane, keeping the
        # new factor where ρ changed) only at a check where some lane's ρ changed.
        factor = computed_where(
            changed, lambda base, C, rho: type(self.factor).factor(base + rho * C), (self.base, self.C, rho), self.factor
        )
        return self._replace(factor=factor)


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

    def solve(self, rhs: jax.Array, rho: jax.Array) -> jax.Array:
        return DiagonalPlusRankOne(self.diagonal + rho * self.f, self.v, rho * self.w).solve(rhs)

    def at_rho(self, rho: jax.Array, changed: jax.Array) -> "StructuredSolver":
        return self


XSolver = Union[EigenSolver, CholeskySolver, StructuredSolver]


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
    f = bound_diagonal(constraints, n, dtype)
    A = constraints.A
    if structured(P_hat, A, constraints.G):
        v = A.v if isinstance(A, RowVector) else jnp.zeros((n,), dtype)
        w = jnp.asarray(equality_weight(A) if isinstance(A, RowVector) else 0.0, dtype)  # 1 for the row
        return StructuredSolver(c * (P_hat.diagonal + sigma), f, v, w)
    C = constraint_gram(constraints, n, dtype)
    shifted = P_hat.dense() + sigma * jnp.eye(n, dtype=dtype)
    if method == "eigen":
        return EigenSolver(EigenFactor.factor(shifted, C), c)
    base = c * shifted
    factor = ExplicitInverse if explicit_inverse else Cholesky
    return CholeskySolver(factor.factor(base + rho * C), base, C)


def support(mu: jax.Array, lb: jax.Array, ub: jax.Array) -> jax.Array:
    """max over lb <= z <= ub of μᵀz (+inf when μ points along an infinite side)."""
    upper = jnp.where(mu > 0, jnp.where(jnp.isinf(ub), jnp.inf, ub * mu), 0.0)
    lower = jnp.where(mu < 0, jnp.where(jnp.isinf(lb), jnp.inf, lb * mu), 0.0)
    return jnp.sum(upper + lower)


class QuadraticObjective(NamedTuple):
    """f(x) = ½ xᵀ(c P̂)x + qᵀx in the solver's scaling, with its x-update solver: an
    :class:`Objective`.

    Attributes:
        P_hat: ``(n, n)`` operator P̂ (the equilibrated P before the cost scale).
        q: ``(n,)`` the scaled linear cost (cost scale included).
        c: ``()`` the cost scale.
        sigma: ``()`` the proximal weight relative to P̂ (cσ in the x-update).
        solver: the factorisation of H(ρ).
    """

    P_hat: Operator
    q: jax.Array
    c: jax.Array
    sigma: jax.Array
    solver: XSolver

    quadratic = True  # one Newton step of polishing is exact

    @property
    def rho_dependent(self) -> bool:
        """Whether :meth:`at_rho` changes the objective (a Cholesky factor of H(ρ))."""
        return isinstance(self.solver, CholeskySolver)

    def value(self, x: jax.Array) -> jax.Array:
        return 0.5 * self.c * (x @ self.P_hat.mv(x)) + self.q @ x

    def gradient(self, x: jax.Array) -> jax.Array:
        return self.c * self.P_hat.mv(x) + self.q

    def hessian_operator(self, x: jax.Array) -> Operator:
        del x
        return self.P_hat.times(self.c)

    def hessian_vector(self, x: jax.Array, v: jax.Array) -> jax.Array:
        del x
        return self.c * self.P_hat.mv(v)

    def constraint_gram(self) -> Optional[jax.Array]:
        """``(n, n)`` C = AᵀA + GᵀG + diag(f) of the x-update, when a Cholesky solver keeps it
        (and w = 1, so that C holds the constraints' Gram matrix as polishing weighs it)."""
        keeps = isinstance(self.solver, CholeskySolver) and EQUALITY_WEIGHT == 1.0
        return self.solver.C if keeps else None

    def recession_slope(self, d_x: jax.Array) -> jax.Array:
        """qᵀd: negative along a direction of unbounded descent."""
        return self.q @ d_x

    def dual_objective(self, lam, nu, mu, constraints: Constraints, x) -> jax.Array:
        """−½xᵀPx − bᵀλ − hᵀν − max_{lb<=z<=ub} μᵀz at a stationary x."""
        quadratic = 0.5 * self.c * (x @ self.P_hat.mv(x))
        value = -quadratic - constraints.b @ lam - constraints.h @ nu
        if constraints.bounded:
            value = value - support(mu, constraints.lb, constraints.ub)
        return value

    def x_update(self, x: jax.Array, r: jax.Array, rho: jax.Array) -> jax.Array:
        # (5a) with the proximal term: H x⁺ = σxᵏ − q − r,  H = c(P̂ + σI) + ρC
        return self.solver.solve(self.c * self.sigma * x - self.q - r, rho)

    def jacobian_x_update(self, x, J_x, dgrad, R, rho) -> jax.Array:
        del x
        # (5ga) J_x⁺ = H⁻¹ (σ J_x − ∂_θq − R)
        return self.solver.solve(self.c * self.sigma * J_x - dgrad - R, rho)

    def at_rho(self, rho: jax.Array, changed: jax.Array) -> "QuadraticObjective":
        return self._replace(solver=self.solver.at_rho(rho, changed))
