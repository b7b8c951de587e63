"""What a solve returns: the primal-dual point, and a status that survives jit and vmap."""

from __future__ import annotations

import enum
from typing import NamedTuple

import jax


class Status(enum.IntEnum):
    """Outcome of a solve, stored as an int32 array in ``Solution.info.status``.

    Compare with ``==`` inside or outside jit: ``sol.info.status == Status.SOLVED``.

    Examples:
        >>> from altdiff_jax import Status
        >>> Status(3).name, Status.PRIMAL_INFEASIBLE.message
        ('PRIMAL_INFEASIBLE', 'the constraints have no feasible point (certificate found)')
    """

    SOLVED = 0
    """Primal and dual residuals, the duality gap and (when carried) the change of the
    Jacobians are below tolerance."""
    MAX_ITER = 1
    """``Options.max_iter`` iterations ran without reaching the tolerance."""
    NONFINITE = 2
    """The data hold NaN (or an infinite entry outside lb, ub), or an iterate became
    non-finite."""
    PRIMAL_INFEASIBLE = 3
    """A Farkas certificate shows that no x satisfies Ax = b, Gx <= h."""
    DUAL_INFEASIBLE = 4
    """A direction of unbounded descent exists: the problem is unbounded below."""
    STALLED = 5
    """The residuals stopped decreasing at the round-off level of the dtype, above the
    requested tolerance: it is below what this dtype reaches on this problem. The point
    is as good as the dtype allows; use float64 or a larger ``tol``."""

    @property
    def message(self) -> str:
        """A one-line human explanation of the status."""
        return _MESSAGES[self]


_MESSAGES = {
    Status.SOLVED: "converged to the requested tolerance",
    Status.MAX_ITER: "stopped at max_iter before reaching the tolerance",
    Status.NONFINITE: "the data (or an iterate) hold NaN or an infinity outside lb/ub",
    Status.PRIMAL_INFEASIBLE: "the constraints have no feasible point (certificate found)",
    Status.DUAL_INFEASIBLE: "the objective is unbounded below on the feasible set",
    Status.STALLED: "the residuals stalled at the dtype's round-off above tol: use float64 or a larger tol",
}


class Info(NamedTuple):
    """Diagnostics of one solve. Under ``vmap`` every field has a leading batch axis.

    Attributes:
        status: int32 ``()``, a :class:`Status` code.
        iterations: int32 ``()``, ADMM iterations run.
        primal_residual: ``()``, ``max(‖Ax − b‖∞, ‖Gx + s − h‖∞, dist(x, [lb, ub]))`` at
            the returned point.
        dual_residual: ``()``, ``‖∇f(x) + Aᵀλ + Gᵀν + μ‖∞`` at the returned point.
        duality_gap: ``()``, |primal − dual objective| at the returned point (QPs; 0 for
            smooth objectives, which have no closed-form dual).
        rho: ``()``, the penalty ρ at the last iteration (it adapts per problem).
        jacobian_change: ``()``, the largest ``‖J_k − J_{k−1}‖∞ / (1 + ‖J_k‖∞)`` over the
            carried Jacobians at the last iteration; 0 when no Jacobian was carried, inf
            when a solve continued to carry them had no iteration left (``max_iter``). For
            Jacobians solved exactly at a polished solution (``jacobians``, ``jvp``), the
            relative size of the last refinement correction of that solve.
        polished: bool ``()``, whether the returned point is the polished one (the reduced
            KKT solve on the guessed active set was better than the ADMM iterate).

    Examples:
        A failed solve is reported in ``info``, never raised; here x <= −1 and x >= 1:

        >>> import jax.numpy as jnp
        >>> import altdiff_jax as ad
        >>> G, h = jnp.array([[1.0], [-1.0]]), jnp.array([-1.0, -1.0])
        >>> info = ad.solve(ad.QP(P=jnp.eye(1), q=jnp.zeros(1), G=G, h=h)).info
        >>> ad.Status(int(info.status)).name, bool(info.polished)
        ('PRIMAL_INFEASIBLE', False)
    """

    status: jax.Array
    iterations: jax.Array
    primal_residual: jax.Array
    dual_residual: jax.Array
    duality_gap: jax.Array
    rho: jax.Array
    jacobian_change: jax.Array
    polished: jax.Array


class Solution(NamedTuple):
    """Primal-dual solution of ``min f(x) s.t. Ax = b, Gx <= h, lb <= x <= ub``.

    Attributes:
        x: ``(n,)`` primal solution.
        s: ``(m,)`` slack, ``Gx + s = h``, ``s >= 0``.
        lam: ``(p,)`` equality multipliers λ.
        nu: ``(m,)`` inequality multipliers ν >= 0.
        mu: ``(n,)`` bound multipliers (``(0,)`` without bounds): μ >= 0 where x is at
            ub, μ <= 0 where x is at lb, 0 in between; ``∇f(x) + Aᵀλ + Gᵀν + μ = 0``.
        info: :class:`Info` diagnostics.
    """

    x: jax.Array
    s: jax.Array
    lam: jax.Array
    nu: jax.Array
    mu: jax.Array
    info: Info
