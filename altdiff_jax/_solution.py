"""What a solve returns: the primal-dual point, and a status that survives jit and vmap."""

from __future__ import annotations

import enum
from typing import NamedTuple

import jax


class Status(enum.IntEnum):
    """Outcome of a solve, stored as an int32 array in ``Solution.info.status``.

    Compare with ``==`` inside or outside jit: ``sol.info.status == Status.SOLVED``.
    """

    SOLVED = 0
    """Primal, dual and (when carried) Jacobian residuals are below tolerance."""
    MAX_ITER = 1
    """``Options.max_iter`` iterations ran without reaching the tolerance."""
    NONFINITE = 2
    """An iterate became NaN or infinite: non-finite data, or an ill-posed x-update."""
    PRIMAL_INFEASIBLE = 3
    """A Farkas certificate shows that no x satisfies Ax = b, Gx <= h."""
    DUAL_INFEASIBLE = 4
    """A direction of unbounded descent exists: the problem is unbounded below."""

    @property
    def message(self) -> str:
        """A one-line human explanation of the status."""
        return _MESSAGES[self]


_MESSAGES = {
    Status.SOLVED: "converged to the requested tolerance",
    Status.MAX_ITER: "stopped at max_iter before reaching the tolerance",
    Status.NONFINITE: (
        "an iterate became non-finite: check the data for NaN/inf, and that "
        "P + AᵀA + GᵀG is positive definite"
    ),
    Status.PRIMAL_INFEASIBLE: "the constraints have no feasible point (certificate found)",
    Status.DUAL_INFEASIBLE: "the objective is unbounded below on the feasible set",
}


class Info(NamedTuple):
    """Diagnostics of one solve. Under ``vmap`` every field has a leading batch axis.

    Attributes:
        status: int32 ``()``, a :class:`Status` code.
        iterations: int32 ``()``, ADMM iterations run.
        primal_residual: ``()``, ``max(‖Ax − b‖∞, ‖Gx + s − h‖∞)`` at the returned point.
        dual_residual: ``()``, ``‖∇f(x) + Aᵀλ + Gᵀν‖∞`` at the returned point.
        rho: ``()``, the penalty ρ at the last iteration (it adapts per problem).
        jacobian_change: ``()``, the largest ``‖J_k − J_{k−1}‖∞ / (1 + ‖J_k‖∞)`` over the
            carried Jacobians of x, s, λ, ν at the last iteration; 0 when no Jacobian was
            carried (a plain forward solve).
    """

    status: jax.Array
    iterations: jax.Array
    primal_residual: jax.Array
    dual_residual: jax.Array
    rho: jax.Array
    jacobian_change: jax.Array


class Solution(NamedTuple):
    """Primal-dual solution of ``min f(x) s.t. Ax = b, Gx <= h``.

    Attributes:
        x: ``(n,)`` primal solution.
        s: ``(m,)`` slack, ``Gx + s = h``, ``s >= 0``.
        lam: ``(p,)`` equality multipliers λ.
        nu: ``(m,)`` inequality multipliers ν >= 0, with ``∇f(x) + Aᵀλ + Gᵀν = 0``.
        info: :class:`Info` diagnostics.
    """

    x: jax.Array
    s: jax.Array
    lam: jax.Array
    nu: jax.Array
    info: Info
