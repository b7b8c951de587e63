"""The loop driver: ADMM and Alt-Diff iterations together in one ``lax.while_loop``.

Generic over the objective (see ``_objective``): the QP passes a factored quadratic, a
smooth-convex layer passes a Newton x-update, and the loop is the same.

Each pass of the loop runs ``check_interval`` iterations (eqs. 5a–5d, and 5ga–5gd when
Jacobians are carried) with nothing else in them, then one termination check (OSQP's
``check_termination``): residuals and duality gap, the infeasibility certificates, the
adaptive ρ and, for a Cholesky factor, its refactorisation when ρ changed. The iterations
are the two products with the factor and the constraint matrices; everything else is
paid once per check.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
from jax import lax

from ._admm import admm_step, dual_infeasible, primal_infeasible, residuals
from ._iterate import Iterate, Seeds, all_finite, inf_norm, zero_jacobian
from ._jacobian import jacobian_step
from ._options import Numerics, Structure
from ._jacobian import ActiveSet, same_active_set
from ._kkt import solution_active_set
from ._polish import polish
from ._problem import Constraints
from ._scaling import Scaling
from ._solution import Info, Status

RUNNING = -1  # internal status of a lane that has not stopped yet
_RHO_RANGE = (1e-6, 1e6)
_RHO_TRIGGER = 5.0  # adapt ρ when the balanced value differs by this factor (OSQP's rule)
_CERTIFICATE_CHECKS = 2  # a certificate must hold at this many consecutive checks
# STALLED: the best residual level (residual / (1 + scale)) has not improved by
# _STALL_GAIN for _STALL_CHECKS checks while it is within _STALL_FLOOR·eps of round-off.
_STALL_CHECKS = 30
_STALL_GAIN = 0.9
_STALL_FLOOR = 1e3


class LoopState(NamedTuple):
    """Carry of the while loop: iterates, their Jacobians, ρ, and the stopping record."""

    z: Iterate
    J: Optional[Iterate]  # None when no derivative is carried
    objective: Any  # carries the factor of H(ρ) when it depends on ρ
    rho: jax.Array
    iteration: jax.Array
    status: jax.Array
    primal_residual: jax.Array
    dual_residual: jax.Array
    gap: jax.Array
    jacobian_change: jax.Array
    certificate_streak: jax.Array  # (2,) consecutive checks with a primal / dual certificate
    active: ActiveSet  # the active set read at the last check
    tried: ActiveSet  # the active set of the last polishing attempt
    has_tried: jax.Array
    polished: jax.Array
    best_level: jax.Array  # the smallest residual level seen at a check
    since_best: jax.Array  # checks since best_level last improved by _STALL_GAIN


def _first_true(conditions, codes, default) -> jax.Array:
    status = jnp.int32(default)
    for condition, code in reversed(list(zip(conditions, codes))):
        status = jnp.where(condition, jnp.int32(code), status)
    return status


def initial_status(problem_leaves, constraints: Constraints) -> jax.Array:
    """NONFINITE for NaN data (or infinities outside lb, ub), PRIMAL_INFEASIBLE for
    lb > ub, else RUNNING: bad data never enters the loop."""
    finite = all_finite(problem_leaves)
    crossed = jnp.bool_(False)
    if constraints.bounded:
        lb, ub = constraints.lb, constraints.ub
        finite = finite & ~jnp.any(jnp.isnan(lb) | jnp.isnan(ub) | (lb == jnp.inf) | (ub == -jnp.inf))
        crossed = jnp.any(lb > ub)
    return _first_true([~finite, crossed], [Status.NONFINITE, Status.PRIMAL_INFEASIBLE], RUNNING)


def run(
    objective,
    constraints: Constraints,
    scaling: Scaling,
    init: Iterate,
    seeds: Union[Seeds, Callable[[Iterate], Seeds], None],
    numerics: Numerics,
    structure: Structure,
    status0: jax.Array,
    early_polish: bool = True,
) -> tuple[Iterate, Optional[Iterate], Any, Info]:
    """Iterate eqs. (5a)–(5d), and (5ga)–(5gd) if ``seeds`` is given, until the stop rule,
    then polish.

    ``seeds`` are constant, or a function of the current iterate: a tangent of P, A or
    G enters the recursion through the iterate (e.g. ∂∇f = dq + dP x + dAᵀλ + dGᵀν),
    and at the fixed point that is the differentiated KKT system.

    Everything runs on the equilibrated problem; residuals, certificates and the
    Jacobian change are measured in the user's scaling. At each check a lane stops
    when its primal residual <= tol (1 + primal scale), dual residual <= tol (1 + dual
    scale), duality gap <= tol (1 + |objective|) and, when Jacobians are carried, the
    last change of each of J_x, J_s, J_λ, J_ν, J_z, J_μ <= tol (1 + its ‖·‖∞); or on a
    non-finite iterate; or on an infeasibility certificate that held at two checks in a
    row (a single early step can look like one); or at ``max_iter``. Under ``vmap`` a
    stopped lane is frozen: JAX selects its old carry while the slower lanes run.

    With ``structure.polish``, the loop also tries polishing at a check where the active
    set has settled (``early_polish``), and always once after the loop. Under ``vmap``
    the early attempt is a ``lax.cond`` that becomes a select: every lane pays for it at
    every check, so callers turn it off for batches of dense problems, where the polish
    is a factorisation (a structured one costs O(n) and stays on).

    Returns:
        ``(z, J, objective, info)`` in scaled space: the final (polished) iterate, its
        Jacobians (None without seeds), the objective at the final ρ, and diagnostics.
    """
    tol, rho0, alpha, _, infeasibility_tol = numerics
    dtype = init.x.dtype
    seeds_at = seeds if callable(seeds) or seeds is None else (lambda z: seeds)
    J0 = None if seeds is None else zero_jacobian(init, seeds_at(init).grad.shape[1])
    zero = jnp.zeros((), dtype)
    interval = structure.check_interval

    def iterate(z: Iterate, J: Optional[Iterate], objective, rho) -> tuple[Iterate, Optional[Iterate]]:
        z_new = admm_step(objective, constraints, z, rho, alpha)
        if J is not None:
            J = jacobian_step(objective, constraints, seeds_at(z_new), z, z_new, J, rho, alpha, tol)
        return z_new, J

    def body(state: LoopState) -> LoopState:
        rho, objective = state.rho, state.objective
        steps = jnp.minimum(interval, structure.max_iter - state.iteration)
        z, J = lax.fori_loop(
            0, steps - 1, lambda _, carry: iterate(*carry, objective, rho), (state.z, state.J)
        )
        z_prev, J_prev = z, J
        z, J = iterate(z, J, objective, rho)
        res = residuals(objective, constraints, z, scaling)
        merit = res.merit(tol)
        converged = merit <= 1
        finite = all_finite(z)
        change = zero
        if J is not None:
            # Each block is judged on its own scale: the duals' Jacobians can be orders of
            # magnitude larger than the primal's.
            unscaled_new, unscaled_old = scaling.unscale(J), scaling.unscale(J_prev)
            change = jnp.max(jnp.stack([
                inf_norm(new - old) / (1 + inf_norm(new)) for new, old in zip(unscaled_new, unscaled_old)
            ]))
            converged = converged & (change <= tol)
            finite = finite & all_finite(J)
        level = merit * tol
        if J is not None:
            level = jnp.maximum(level, change)
        improved = level < _STALL_GAIN * state.best_level
        best_level = jnp.where(improved, level, state.best_level)
        since_best = jnp.where(improved, 0, state.since_best + 1)
        stalled = (since_best >= _STALL_CHECKS) & (best_level <= _STALL_FLOOR * jnp.finfo(dtype).eps)
        difference = Iterate(*(new - old for new, old in zip(z, z_prev)))
        certificates = jnp.stack([
            primal_infeasible(constraints, difference, scaling, infeasibility_tol),
            dual_infeasible(objective, constraints, z.x, difference.x, scaling, infeasibility_tol),
        ])
        streak = jnp.where(certificates, state.certificate_streak + 1, 0)
        iteration = state.iteration + steps
        status = _first_true(
            [~finite, converged, streak[0] >= _CERTIFICATE_CHECKS, streak[1] >= _CERTIFICATE_CHECKS,
             iteration >= structure.max_iter, stalled],
            [Status.NONFINITE, Status.SOLVED, Status.PRIMAL_INFEASIBLE, Status.DUAL_INFEASIBLE,
             Status.MAX_ITER, Status.STALLED],
            RUNNING,
        )
        record = (res.primal, res.dual, res.gap)
        active, tried, has_tried, polished = state.active, state.tried, state.has_tried, state.polished
        if structure.polish and early_polish:
            # Polish early once the active set has settled (it is the same at two checks
            # in a row) and was not tried yet: a correct guess ends the solve exactly,
            # often long before the residuals of ADMM would.
            # Carried Jacobians must have settled too: the polished point would end the loop.
            active = solution_active_set(constraints, z, rho, tol)
            jacobians_settled = (J is None) or (change <= tol)
            attempt = (status == RUNNING) & jacobians_settled & same_active_set(active, state.active) & (
                ~has_tried | ~same_active_set(active, tried)
            )
            z, accepted, record = _try_polish(objective, constraints, scaling, z, rho, tol, attempt, res)
            status = jnp.where(accepted, jnp.int32(Status.SOLVED), status)
            tried = _select(attempt, active, tried)
            has_tried, polished = has_tried | attempt, accepted
        if structure.adaptive_rho:
            # OSQP's residual balancing, in the equilibrated problem.
            balanced = jnp.clip(rho * jnp.sqrt(res.scaled_balance), *_RHO_RANGE)
            changed = (status == RUNNING) & jnp.isfinite(balanced) & (
                (balanced > _RHO_TRIGGER * rho) | (balanced < rho / _RHO_TRIGGER)
            )
            rho = jnp.where(changed, balanced, rho)
            objective = objective.at_rho(rho, changed)
        return LoopState(
            z, J, objective, rho, iteration, status, *record, change, streak, active, tried, has_tried, polished,
            best_level, since_best,
        )

    nothing = solution_active_set(constraints, init, rho0, tol)
    nothing = ActiveSet(*(jnp.zeros_like(mask) for mask in nothing))
    state = LoopState(
        init, J0, objective, rho0, jnp.int32(0), status0, zero, zero, zero, zero, jnp.zeros((2,), jnp.int32),
        nothing, nothing, jnp.bool_(False), jnp.bool_(False), jnp.asarray(jnp.inf, dtype), jnp.int32(0),
    )
    state = lax.while_loop(lambda state: state.status == RUNNING, body, state)
    z, status, objective = state.z, state.status, state.objective
    primal, dual, gap = state.primal_residual, state.dual_residual, state.gap
    polished = state.polished
    if structure.polish:
        jacobians_settled = state.J is None or state.jacobian_change <= tol
        z, status, polished_now, (primal, dual, gap) = _polish_and_judge(
            objective, constraints, scaling, z, state.rho, tol, status, jacobians_settled, ~polished
        )
        polished = polished | polished_now
    info = Info(status, state.iteration, primal, dual, gap, state.rho, state.jacobian_change, polished)
    return z, state.J, objective, info



def _select(condition, new, old):
    return jax.tree_util.tree_map(lambda a, b: jnp.where(condition, a, b), new, old)


def _polished_candidate(objective, constraints, scaling, z, rho, tol, attempt, before):
    """``(candidate, finite, its residuals)`` when ``attempt``, else ``(z, False, before)``."""
    def polished():
        candidate, finite = polish(objective, constraints, z, rho, tol)
        return candidate, finite, residuals(objective, constraints, candidate, scaling)

    return lax.cond(attempt, polished, lambda: (z, jnp.bool_(False), before))


def _try_polish(objective, constraints, scaling, z, rho, tol, attempt, before):
    """Polish when ``attempt``; keep the candidate if it meets the tolerance.

    Returns:
        ``(z, accepted, (primal, dual, gap))``: the chosen point and its residuals.
    """
    candidate, finite, after = _polished_candidate(objective, constraints, scaling, z, rho, tol, attempt, before)
    accepted = attempt & finite & (after.merit(tol) <= 1)
    chosen = _select(accepted, after, before)
    return _select(accepted, candidate, z), accepted, (chosen.primal, chosen.dual, chosen.gap)


def _polish_and_judge(objective, constraints, scaling, z, rho, tol, status, jacobians_settled, wanted):
    """Polish a solved or truncated iterate; keep the better point by the residuals.

    A MAX_ITER or STALLED solve whose polished point meets the tolerance (and whose carried
    Jacobians, if any, have settled) becomes SOLVED."""
    attempt = wanted & ((status == Status.SOLVED) | (status == Status.MAX_ITER) | (status == Status.STALLED))
    before = residuals(objective, constraints, z, scaling)

    candidate, finite, after = _polished_candidate(objective, constraints, scaling, z, rho, tol, attempt, before)
    better = attempt & finite & (after.merit(tol) < before.merit(tol))
    z = _select(better, candidate, z)
    chosen = _select(better, after, before)
    upgrade = better & (chosen.merit(tol) <= 1) & jacobians_settled
    status = jnp.where(upgrade, jnp.int32(Status.SOLVED), status)
    return z, status, better, (chosen.primal, chosen.dual, chosen.gap)
