"""The loop driver: ADMM and Alt-Diff iterations together in one ``lax.while_loop``.

Generic over the objective (see ``_objective``): the QP passes a factored quadratic, a
later smooth-convex layer passes a Newton x-update, and the loop is the same.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
from jax import lax

from ._admm import Iterate, admm_step, inf_norm, residuals
from ._jacobian import Seeds, jacobian_step, zero_jacobian
from ._problem import Constraints
from ._solution import Info, Status

_RUNNING = -1  # internal status of a lane that has not stopped yet


class LoopState(NamedTuple):
    """Carry of the while loop: iterates, their Jacobians, and the stopping record."""

    z: Iterate
    J: Optional[Iterate]  # None when no derivative is carried
    iteration: jax.Array
    status: jax.Array
    primal_residual: jax.Array
    dual_residual: jax.Array
    jacobian_change: jax.Array


def _all_finite(tree) -> jax.Array:
    leaves = jax.tree_util.tree_leaves(tree)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in leaves]))


def run(
    objective,
    constraints: Constraints,
    init: Iterate,
    seeds: Optional[Seeds],
    tol: jax.Array,
    rho: jax.Array,
    max_iter: int,
) -> tuple[Iterate, Optional[Iterate], Info]:
    """Iterate eqs. (5a)–(5d), and (5ga)–(5gd) if ``seeds`` is given, until the stop rule.

    Stops when, OSQP-style, primal residual <= tol (1 + primal scale), dual residual
    <= tol (1 + dual scale) and, when Jacobians are carried, their change in the last
    iteration <= tol (1 + ‖J‖∞); or on a non-finite iterate; or at ``max_iter``.
    Under ``vmap`` a stopped lane is frozen: JAX selects its old carry while the
    slower lanes run.

    Returns:
        ``(z, J, info)``: the final iterate, its Jacobians (None without seeds), diagnostics.
    """
    dtype = init.x.dtype
    J0 = None if seeds is None else zero_jacobian(init, seeds.grad.shape[1])
    zero = jnp.zeros((), dtype)
    state = LoopState(init, J0, jnp.int32(0), jnp.int32(_RUNNING), zero, zero, zero)

    def body(state: LoopState) -> LoopState:
        z = admm_step(objective, constraints, state.z, rho)
        res = residuals(objective, constraints, z)
        converged = (res.primal <= tol * (1 + res.primal_scale)) & (
            res.dual <= tol * (1 + res.dual_scale)
        )
        finite = _all_finite(z)
        change = zero
        if state.J is not None:
            J = jacobian_step(objective, constraints, seeds, state.z, z, state.J, rho)
            change = jnp.max(jnp.stack([inf_norm(new - old) for new, old in zip(J, state.J)]))
            size = jnp.max(jnp.stack([inf_norm(block) for block in J]))
            converged = converged & (change <= tol * (1 + size))
            finite = finite & _all_finite(J)
        else:
            J = None
        iteration = state.iteration + 1
        status = jnp.where(
            ~finite,
            Status.NONFINITE,
            jnp.where(
                converged, Status.SOLVED, jnp.where(iteration >= max_iter, Status.MAX_ITER, _RUNNING)
            ),
        ).astype(jnp.int32)
        return LoopState(z, J, iteration, status, res.primal, res.dual, change)

    state = lax.while_loop(lambda state: state.status == _RUNNING, body, state)
    info = Info(
        state.status,
        state.iteration,
        state.primal_residual,
        state.dual_residual,
        state.jacobian_change,
    )
    return state.z, state.J, info
