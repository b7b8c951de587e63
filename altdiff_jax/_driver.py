"""The loop driver: ADMM and Alt-Diff iterations together in one ``lax.while_loop``.

Generic over the objective (see ``_objective``): the QP passes a factored quadratic, a
smooth-convex layer passes a Newton x-update, and the loop is the same.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
from jax import lax

from ._admm import Iterate, admm_step, dual_infeasible, inf_norm, primal_infeasible, residuals
from ._jacobian import Seeds, active_margin, jacobian_step, zero_jacobian
from ._options import Numerics, Structure
from ._problem import Constraints
from ._scaling import Scaling
from ._solution import Info, Status

_RUNNING = -1  # internal status of a lane that has not stopped yet
_RHO_RANGE = (1e-6, 1e6)
_RHO_TRIGGER = 2.0  # adapt ρ only when the balanced value differs by this factor (tuned on benchmarks/engine.py)


class LoopState(NamedTuple):
    """Carry of the while loop: iterates, their Jacobians, ρ, and the stopping record."""

    z: Iterate
    J: Optional[Iterate]  # None when no derivative is carried
    rho: jax.Array
    iteration: jax.Array
    status: jax.Array
    primal_residual: jax.Array
    dual_residual: jax.Array
    jacobian_change: jax.Array


def _all_finite(tree) -> jax.Array:
    leaves = jax.tree_util.tree_leaves(tree)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in leaves]))


def _first_true(conditions, codes, default) -> jax.Array:
    status = jnp.int32(default)
    for condition, code in reversed(list(zip(conditions, codes))):
        status = jnp.where(condition, jnp.int32(code), status)
    return status


def run(
    objective,
    constraints: Constraints,
    scaling: Scaling,
    init: Iterate,
    seeds: Union[Seeds, Callable[[Iterate], Seeds], None],
    numerics: Numerics,
    structure: Structure,
) -> tuple[Iterate, Optional[Iterate], Info]:
    """Iterate eqs. (5a)–(5d), and (5ga)–(5gd) if ``seeds`` is given, until the stop rule.

    ``seeds`` are constant, or a function of the current iterate: a tangent of P, A or
    G enters the recursion through the iterate (e.g. ∂∇f = dq + dP x + dAᵀλ + dGᵀν),
    and at the fixed point that is the differentiated KKT system.

    Everything runs on the equilibrated problem; residuals, certificates and the
    Jacobian change are measured in the user's scaling. Stops, per problem, when
    primal residual <= tol (1 + primal scale), dual residual <= tol (1 + dual scale)
    and, when Jacobians are carried, the last change of each of J_x, J_s, J_λ, J_ν
    <= tol (1 + its ‖·‖∞); or on a
    non-finite iterate; or on an infeasibility certificate; or at ``max_iter``.
    Under ``vmap`` a stopped lane is frozen: JAX selects its old carry while the
    slower lanes run.

    Returns:
        ``(z, J, info)`` in scaled space: the final iterate, its Jacobians (None
        without seeds), and diagnostics.
    """
    tol, rho0, alpha, infeasibility_tol = numerics
    dtype = init.x.dtype
    seeds_at = seeds if callable(seeds) or seeds is None else (lambda z: seeds)
    J0 = None if seeds is None else zero_jacobian(init, seeds_at(init).grad.shape[1])
    zero = jnp.zeros((), dtype)
    margin = active_margin(constraints, tol)
    state = LoopState(init, J0, rho0, jnp.int32(0), jnp.int32(_RUNNING), zero, zero, zero)

    def body(state: LoopState) -> LoopState:
        rho = state.rho
        z = admm_step(objective, constraints, state.z, rho, alpha)
        res = residuals(objective, constraints, z, scaling)
        converged = (res.primal <= tol * (1 + res.primal_scale)) & (
            res.dual <= tol * (1 + res.dual_scale)
        )
        finite = _all_finite(z)
        change = zero
        if state.J is None:
            J = None
        else:
            J = jacobian_step(
                objective, constraints, seeds_at(z), state.z, z, state.J, rho, alpha, margin
            )
            # Each block (J_x, J_s, J_λ, J_ν) is judged on its own scale: the duals'
            # Jacobians can be orders of magnitude larger than the primal's.
            unscaled_new, unscaled_old = scaling.unscale(J), scaling.unscale(state.J)
            change = jnp.max(jnp.stack([
                inf_norm(new - old) / (1 + inf_norm(new))
                for new, old in zip(unscaled_new, unscaled_old)
            ]))
            converged = converged & (change <= tol)
            finite = finite & _all_finite(J)
        infeasible_primal = primal_infeasible(
            constraints, z.lam - state.z.lam, z.nu - state.z.nu, scaling, infeasibility_tol
        )
        infeasible_dual = dual_infeasible(
            objective, constraints, z.x, z.x - state.z.x, scaling, infeasibility_tol
        )
        iteration = state.iteration + 1
        status = _first_true(
            [~finite, converged, infeasible_primal, infeasible_dual, iteration >= structure.max_iter],
            [Status.NONFINITE, Status.SOLVED, Status.PRIMAL_INFEASIBLE, Status.DUAL_INFEASIBLE,
             Status.MAX_ITER],
            _RUNNING,
        )
        if structure.adaptive_rho:
            # OSQP's residual balancing, in the equilibrated problem; any ρ costs O(n²)
            # with the generalised eigen-factor, so each lane adapts on its own.
            balanced = jnp.clip(rho * jnp.sqrt(res.scaled_balance), *_RHO_RANGE)
            due = (iteration % structure.adaptive_rho_interval == 0) & (
                (balanced > _RHO_TRIGGER * rho) | (balanced < rho / _RHO_TRIGGER)
            )
            rho = jnp.where(due & jnp.isfinite(balanced), balanced, rho)
        return LoopState(z, J, rho, iteration, status, res.primal, res.dual, change)

    state = lax.while_loop(lambda state: state.status == _RUNNING, body, state)
    info = Info(
        state.status,
        state.iteration,
        state.primal_residual,
        state.dual_residual,
        state.rho,
        state.jacobian_change,
    )
    return state.z, state.J, info
