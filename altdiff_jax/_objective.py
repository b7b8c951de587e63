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

A :class:`QuadraticObjective` solves its x-updates with the factorisation of H(ρ) that
``_xupdate.make_x_solver`` chooses (an ``_xupdate.XSolver``).

The proximal term σ/2‖x − xᵏ‖² (OSQP's) makes H positive definite for every PSD P and
every A, G: singular P, LPs, rank-deficient and duplicated constraints run like any other
problem. It vanishes at a fixed point, so the solution, the KKT system and the fixed point
of the Jacobian recursion (the differentiated KKT system, ``docs/mathematics.md``) do not
depend on σ.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Protocol

import jax
import jax.numpy as jnp

from ._linalg import Operator, inner, sum_over
from ._problem import Constraints
from ._xupdate import EQUALITY_WEIGHT, XSolver


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


def support(mu: jax.Array, lb: jax.Array, ub: jax.Array) -> jax.Array:
    """max over lb <= z <= ub of μᵀz (+inf when μ points along an infinite side)."""
    upper = jnp.where(mu > 0, jnp.where(jnp.isinf(ub), jnp.inf, ub * mu), 0.0)
    lower = jnp.where(mu < 0, jnp.where(jnp.isinf(lb), jnp.inf, lb * mu), 0.0)
    return sum_over(upper + lower)


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
        return self.solver.rho_dependent

    def value(self, x: jax.Array) -> jax.Array:
        return 0.5 * self.c * inner(x, self.P_hat.mv(x)) + inner(self.q, x)

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
        return self.solver.gram() if EQUALITY_WEIGHT == 1.0 else None

    def recession_slope(self, d_x: jax.Array) -> jax.Array:
        """qᵀd: negative along a direction of unbounded descent."""
        return inner(self.q, d_x)

    def dual_objective(self, lam, nu, mu, constraints: Constraints, x) -> jax.Array:
        """−½xᵀPx − bᵀλ − hᵀν − max_{lb<=z<=ub} μᵀz at a stationary x."""
        quadratic = 0.5 * self.c * inner(x, self.P_hat.mv(x))
        return -quadratic - inner(constraints.b, lam) - inner(constraints.h, nu) - support(mu, constraints.lb, constraints.ub)

    def x_update(self, x: jax.Array, r: jax.Array, rho: jax.Array) -> jax.Array:
        # (5a) with the proximal term: H x⁺ = σxᵏ − q − r,  H = c(P̂ + σI) + ρC
        return self.solver.solve(self.c * self.sigma * x - self.q - r, rho, guess=x)

    def jacobian_x_update(self, x, J_x, dgrad, R, rho) -> jax.Array:
        del x
        # (5ga) J_x⁺ = H⁻¹ (σ J_x − ∂_θq − R)
        return self.solver.solve(self.c * self.sigma * J_x - dgrad - R, rho)

    def at_rho(self, rho: jax.Array, changed: jax.Array) -> "QuadraticObjective":
        return self._replace(solver=self.solver.at_rho(rho, changed))
