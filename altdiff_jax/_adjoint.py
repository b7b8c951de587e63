"""Reverse mode without Jacobians: the transpose of the Alt-Diff recursion.

The mathematics: ``docs/mathematics.md``, "The adjoint recursion".

With the active set frozen at the solution, one Jacobian iteration (eqs. 5ga–5gd) is a
linear map ``u⁺ = T u + S σ`` of the carried derivative u = (J_x, J_s, J_λ, J_ν, J_z, J_μ)
and the parameter seed σ = (∂∇f, ∂b, ∂h, ∂lb, ∂ub); Alt-Diff converges to
u* = (I − T)⁻¹ S σ. For a cotangent ū of u*, the parameter cotangent is σ̄ = Sᵀ w* with
w* = Tᵀ w* + ū, found by iterating ``w ← Tᵀ w + ū``. ``Tᵀ`` and ``Sᵀ`` are the transpose
of the very step the forward recursion runs (taken by ``jax.vjp`` of that step, so the
two cannot drift apart); each iteration costs one primal iteration with the forward's
factorisation, whatever the number of parameters.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from ._iterate import Iterate, Seeds, all_finite, largest_relative_change
from ._jacobian import jacobian_step
from ._problem import Constraints
from ._solution import Status

_RUNNING = -1


class AdjointInfo(NamedTuple):
    """Diagnostics of the backward pass.

    Attributes:
        status: int32 ``()``: ``SOLVED``, ``MAX_ITER`` or ``NONFINITE``.
        iterations: int32 ``()``, transposed iterations run (0 for ``"kkt"``; the forward
            loop's for ``"altdiff"``, whose Jacobians converged in it).
        change: ``()``, the largest ``‖w_k − w_{k−1}‖∞ / (1 + ‖w_k‖∞)`` over the blocks
            (for ``"kkt"`` on the sparse path: the relative size of the last refinement
            correction of its solve, ``MAX_ITER`` when it is above ``Options.tol``; 0
            with a factorised solve).
    """

    status: jax.Array
    iterations: jax.Array
    change: jax.Array


def adjoint_vjp(
    objective,
    constraints: Constraints,
    z: Iterate,
    rho: jax.Array,
    alpha: jax.Array,
    cotangent: Iterate,
    tol: jax.Array,
    max_iter: int,
) -> tuple[Seeds, AdjointInfo]:
    """Pull a cotangent of (x, s, λ, ν, z, μ) back to the seeds, all in the solver's
    (scaled) variables, by the transposed recursion at the solution ``z``.

    Returns:
        ``(σ̄, info)``: σ̄ as :class:`Seeds` of vectors.
    """

    def step(u: Iterate, sigma: Seeds) -> Iterate:
        # One column of eqs. (5ga)–(5gd) with the mask of the solution (z_old = z_new = z).
        J = Iterate(*(v[:, None] for v in u))
        seeds = Seeds(*(v[:, None] for v in sigma))
        J_next = jacobian_step(objective, constraints, seeds, z, z, J, rho, alpha, tol)
        return Iterate(*(v[:, 0] for v in J_next))

    zeros_u = Iterate(*(jnp.zeros_like(v) for v in z))
    zeros_sigma = Seeds(*(jnp.zeros_like(v) for v in (z.x, z.lam, z.nu, z.z, z.z)))
    _, transpose = jax.vjp(step, zeros_u, zeros_sigma)

    def body(carry):
        w, iteration, _, _ = carry
        T_w, _ = transpose(w)
        w_new = Iterate(*(a + b for a, b in zip(T_w, cotangent)))
        change = largest_relative_change((a - b for a, b in zip(w_new, w)), w_new)
        iteration = iteration + 1
        status = jnp.where(
            ~all_finite(w_new),
            Status.NONFINITE,
            jnp.where(change <= tol, Status.SOLVED, jnp.where(iteration >= max_iter, Status.MAX_ITER, _RUNNING)),
        ).astype(jnp.int32)
        return w_new, iteration, status, change

    init = (cotangent, jnp.int32(0), jnp.int32(_RUNNING), jnp.zeros((), z.x.dtype))
    w, iterations, status, change = lax.while_loop(lambda c: c[2] == _RUNNING, body, init)
    _, sigma_bar = transpose(w)
    return sigma_bar, AdjointInfo(status, iterations, change)
