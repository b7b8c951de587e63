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

import functools
from typing import Any, Callable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
from jax import lax

from ._admm import Residuals, admm_step, dual_infeasible, primal_infeasible, residuals
from ._batching import computed_where, on_needing_lanes
from ._iterate import Iterate, Seeds, all_finite, inf_norm, zero_jacobian
from ._jacobian import jacobian_step
from ._linalg import all_over, any_over, count_over
from ._options import Numerics, Structure
from ._jacobian import ActiveSet, same_active_set
from ._kkt import REUSED_CHANGES, ReducedKKT, kkt_jacobian, solution_active_set
from ._polish import PolishedSystem, placeholder_system, polish
from ._problem import Constraints
from ._scaling import Scaling
from ._solution import Info, Status

RUNNING = -1  # internal status of a lane that has not stopped yet
READY = -2  # internal: a lane stopped so that its settled active set can be polished
_RHO_RANGE = (1e-6, 1e6)
_RHO_TRIGGER = 5.0  # adapt ρ when the balanced value differs by this factor (OSQP's rule)
_CERTIFICATE_CHECKS = 2  # a certificate must hold at this many consecutive checks
# STALLED: the best residual level (residual / (1 + scale)) has not improved by
# _STALL_GAIN for _STALL_CHECKS checks while it is within _STALL_FLOOR·eps of round-off.
_STALL_CHECKS = 30
_STALL_GAIN = 0.9
_STALL_FLOOR = 1e3
PASS_ITERATIONS = 100
"""Iterations at most between two polishing passes; under ``vmap``, also how often the batch
checks whether few enough lanes still run to be gathered apart (``on_needing_lanes``)."""


class LoopState(NamedTuple):
    """Carry of the while loop: iterates, their Jacobians, ρ, and the stopping record."""

    z: Iterate
    J: Optional[Iterate]  # None when no derivative is carried
    objective: Any  # the objective, when its factor of H(ρ) depends on ρ (else None: it is closed over)
    rho: jax.Array
    iteration: jax.Array
    status: jax.Array
    residuals: Residuals  # of z (the last check's, or the polished point's)
    jacobian_change: jax.Array
    certificate_streak: jax.Array  # (2,) consecutive checks with a primal / dual certificate
    active: ActiveSet  # the active set read at the last check
    tried: ActiveSet  # the active set of the last polishing attempt
    has_tried: jax.Array
    polished: jax.Array
    best_level: jax.Array  # the smallest residual level seen at a check
    since_best: jax.Array  # checks since best_level last improved by _STALL_GAIN
    passes: jax.Array  # polishing stops (READY) of this lane so far
    polished_system: Optional[PolishedSystem]  # of the kept polished point, where ``polished`` (None: no polish)


def _first_true(conditions, codes, default) -> jax.Array:
    status = jnp.int32(default)
    for condition, code in reversed(list(zip(conditions, codes))):
        status = jnp.where(condition, jnp.int32(code), status)
    return status


def initial_status(problem_leaves, constraints: Constraints) -> jax.Array:
    """NONFINITE for NaN data (or infinities outside lb, ub), PRIMAL_INFEASIBLE for
    lb > ub, else RUNNING: bad data never enters the loop."""
    lb, ub = constraints.lb, constraints.ub
    finite = all_finite(problem_leaves) & ~any_over(jnp.isnan(lb) | jnp.isnan(ub) | (lb == jnp.inf) | (ub == -jnp.inf))
    crossed = any_over(lb > ub)
    return _first_true([~finite, crossed], [Status.NONFINITE, Status.PRIMAL_INFEASIBLE], RUNNING)


class _Loop(NamedTuple):
    """What the loop's body reads besides its carry: :func:`run`'s arguments, resolved once.

    Python values (a function, flags) and the traced arrays the body closes over; never a
    carry itself."""

    objective: Any  # the objective given to run (the body's, unless carried)
    constraints: Constraints
    scaling: Scaling
    seeds_at: Optional[Callable[[Iterate], Seeds]]  # None when no derivative is carried
    numerics: Numerics
    structure: Structure
    polish_attempts: Optional[int]
    early_first_polish: bool
    exact: bool  # exact Jacobians at a polished point (run's exact_jacobians, where it applies)
    carried_objective: bool  # the objective's factor depends on ρ: it travels in the carry
    start_active: ActiveSet  # the starting point's active set
    zero: jax.Array  # () zero of the iterate's dtype


def _objective_of(loop: _Loop, state: LoopState):
    return state.objective if loop.carried_objective else loop.objective


def _iterate(loop: _Loop, z: Iterate, J: Optional[Iterate], objective, rho) -> tuple[Iterate, Optional[Iterate]]:
    """One iteration: eqs. (5a)–(5d), and (5ga)–(5gd) when Jacobians are carried."""
    alpha = loop.numerics.alpha
    z_new = admm_step(objective, loop.constraints, z, rho, alpha)
    if J is not None:
        J = jacobian_step(objective, loop.constraints, loop.seeds_at(z_new), z, z_new, J, rho, alpha,
                          loop.numerics.tol)
    return z_new, J


def _jacobian_change(loop: _Loop, J: Iterate, J_prev: Iterate) -> jax.Array:
    """The last change of the carried Jacobians, the largest over blocks, each relative to
    its own ‖·‖∞ in the user's scaling: the duals' Jacobians can be orders of magnitude
    larger than the primal's."""
    unscaled_new, unscaled_old = loop.scaling.unscale(J), loop.scaling.unscale(J_prev)
    return jnp.max(jnp.stack([
        inf_norm(new - old) / (1 + inf_norm(new)) for new, old in zip(unscaled_new, unscaled_old)
    ]))


def _stall(loop: _Loop, state: LoopState, level: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(best_level, since_best, stalled)`` after a check at residual level ``level``."""
    improved = level < _STALL_GAIN * state.best_level
    best_level = jnp.where(improved, level, state.best_level)
    since_best = jnp.where(improved, 0, state.since_best + 1)
    stalled = (since_best >= _STALL_CHECKS) & (best_level <= _STALL_FLOOR * jnp.finfo(loop.zero.dtype).eps)
    return best_level, since_best, stalled


def _certificate_streak(loop: _Loop, state: LoopState, objective, z: Iterate, z_prev: Iterate) -> jax.Array:
    """Consecutive checks with a primal / dual infeasibility certificate, ``(2,)``."""
    infeasibility_tol = loop.numerics.infeasibility_tol
    difference = Iterate(*(new - old for new, old in zip(z, z_prev)))
    certificates = jnp.stack([
        primal_infeasible(loop.constraints, difference, loop.scaling, infeasibility_tol),
        dual_infeasible(objective, loop.constraints, z.x, difference.x, loop.scaling, infeasibility_tol),
    ])
    return jnp.where(certificates, state.certificate_streak + 1, 0)


def _settled_for_polish(loop: _Loop, state: LoopState, active: ActiveSet, steady: jax.Array) -> jax.Array:
    """``steady`` (the active set is the same as at the last check), or, with
    ``early_first_polish`` and for the first attempt, a set that moved by at most
    ``REUSED_CHANGES`` rows since the last check.

    Polishing's rounds correct a few rows (for one large dense float64 problem by a cheap
    Woodbury update of the first round's factor), so for the first attempt such a set
    counts as settled (later attempts wait for an unchanged set: a slow problem's set
    flickers by a few rows at every check, and each attempt costs a factorisation). At the
    first check the reference is the starting point's active set (a warm start's is the
    previous solution's)."""
    if not loop.early_first_polish:
        return steady
    first = state.iteration == 0
    reference = ActiveSet(*(jnp.where(first, a, b) for a, b in zip(loop.start_active, state.active)))
    moved = count_over(active.inequality != reference.inequality)
    bounds_steady = all_over(jnp.concatenate([active.upper == reference.upper, active.lower == reference.lower]))
    return steady | (~state.has_tried & (moved <= REUSED_CHANGES) & bounds_steady)


def _polish_stop(loop: _Loop, state: LoopState, z: Iterate, J: Optional[Iterate], rho, change, status
                 ) -> tuple[ActiveSet, jax.Array]:
    """``(active set, status)``: READY for a running lane whose active set has settled.

    Polish early once the active set has settled (it is the same at two checks in a row)
    and was not tried yet: a correct guess ends the solve exactly, often long before the
    residuals of ADMM would. Carried Jacobians must have settled too: the polished point
    would end the loop."""
    tol = loop.numerics.tol
    active = solution_active_set(loop.constraints, z, rho, tol)
    jacobians_settled = (J is None) or loop.exact or (change <= tol)
    steady = _settled_for_polish(loop, state, active, same_active_set(active, state.active))
    settled = (status == RUNNING) & jacobians_settled & steady & (
        ~state.has_tried | ~same_active_set(active, state.tried)
    )
    if loop.polish_attempts is not None:
        settled = settled & (state.passes < loop.polish_attempts)
    return active, jnp.where(settled, jnp.int32(READY), status)


def _adapted_rho(res, rho, status, objective):
    """OSQP's residual balancing, in the equilibrated problem: ``(ρ, objective at ρ)``."""
    balanced = jnp.clip(rho * jnp.sqrt(res.scaled_balance), *_RHO_RANGE)
    changed = (status == RUNNING) & jnp.isfinite(balanced) & (
        (balanced > _RHO_TRIGGER * rho) | (balanced < rho / _RHO_TRIGGER)
    )
    rho = jnp.where(changed, balanced, rho)
    return rho, objective.at_rho(rho, changed)


def _body(loop: _Loop, state: LoopState) -> LoopState:
    """One pass of ``check_interval`` iterations, then one termination check."""
    tol, structure = loop.numerics.tol, loop.structure
    rho, objective = state.rho, _objective_of(loop, state)
    steps = jnp.minimum(structure.check_interval, structure.max_iter - state.iteration)

    def iteration_keeping_previous(_, carry):
        z, J, _, _ = carry
        return (*_iterate(loop, z, J, objective, rho), z, J)

    # The iterate before the last rides along (one traced iteration per pass): the
    # certificates and the Jacobians' change compare the two.
    z, J, z_prev, J_prev = lax.fori_loop(0, steps, iteration_keeping_previous, (state.z, state.J) * 2)
    res = residuals(objective, loop.constraints, z, loop.scaling)
    merit = res.merit(tol)
    converged = merit <= 1
    finite = all_finite(z)
    change, level = loop.zero, merit * tol
    if J is not None:
        # A pass with no step left (a continuation at max_iter) has measured no change.
        change = jnp.where(steps > 0, _jacobian_change(loop, J, J_prev), jnp.inf)
        converged = converged & (change <= tol)
        finite = finite & all_finite(J)
        level = jnp.maximum(level, change)
    best_level, since_best, stalled = _stall(loop, state, level)
    streak = _certificate_streak(loop, state, objective, z, z_prev)
    iteration = state.iteration + steps
    status = _first_true(
        [~finite, converged, streak[0] >= _CERTIFICATE_CHECKS, streak[1] >= _CERTIFICATE_CHECKS,
         iteration >= structure.max_iter, stalled],
        [Status.NONFINITE, Status.SOLVED, Status.PRIMAL_INFEASIBLE, Status.DUAL_INFEASIBLE,
         Status.MAX_ITER, Status.STALLED],
        RUNNING,
    )
    active = state.active
    if structure.polish and loop.polish_attempts != 0:
        active, status = _polish_stop(loop, state, z, J, rho, change, status)
    if structure.adaptive_rho:
        rho, objective = _adapted_rho(res, rho, status, objective)
    return state._replace(
        z=z, J=J, objective=objective if loop.carried_objective else None, rho=rho, iteration=iteration,
        status=status, residuals=res, jacobian_change=change,
        certificate_streak=streak, active=active, best_level=best_level, since_best=since_best,
    )


def _initial_state(loop: _Loop, init: Iterate, J0: Optional[Iterate], rho0, status0, first_iteration,
                   reusable_factor: bool) -> LoopState:
    """The carry at the start: a problem that never enters the loop (bad data) reports the
    residuals of its start."""
    objective, constraints = loop.objective, loop.constraints
    nothing = ActiveSet(*(jnp.zeros_like(mask) for mask in loop.start_active))
    start = residuals(objective, constraints, init, loop.scaling)
    return LoopState(
        init, J0, objective if loop.carried_objective else None, rho0,
        jnp.int32(0) if first_iteration is None else first_iteration, status0, start,
        loop.zero, jnp.zeros((2,), jnp.int32),
        nothing, nothing, jnp.bool_(False), jnp.bool_(False), jnp.asarray(jnp.inf, init.x.dtype), jnp.int32(0),
        jnp.int32(0),
        placeholder_system(objective, constraints, init, reusable_factor) if loop.structure.polish else None,
    )


def _running(state: LoopState) -> jax.Array:
    return state.status == RUNNING


def _one_pass(loop: _Loop, _, state: LoopState) -> LoopState:
    """Iterate until every lane has stopped or ran ``PASS_ITERATIONS``, then polish every
    lane that stopped in this pass."""
    in_play = _running(state)
    limit = state.iteration + PASS_ITERATIONS
    state = lax.while_loop(lambda state: _running(state) & (state.iteration < limit),
                           functools.partial(_body, loop), state)
    if loop.structure.polish:
        state = _polish_stopped(_objective_of(loop, state), loop.constraints, loop.scaling, state,
                                loop.numerics.tol, in_play, loop.seeds_at if loop.exact else None)
    return state


def run(
    objective,
    constraints: Constraints,
    scaling: Scaling,
    init: Iterate,
    seeds: Union[Seeds, Callable[[Iterate], Seeds], None],
    numerics: Numerics,
    structure: Structure,
    status0: jax.Array,
    polish_attempts: Optional[int] = None,
    reusable_factor: bool = False,
    early_first_polish: bool = False,
    exact_jacobians: bool = False,
    first_iteration: Optional[jax.Array] = None,
) -> tuple[Iterate, Optional[Iterate], Any, Info, Optional[PolishedSystem]]:
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

    With ``structure.polish``, a lane whose active set has settled (the same at two checks
    in a row, and not tried yet; with ``early_first_polish``, the first time also when it
    moved by at most ``_kkt.REUSED_CHANGES`` rows) stops to be polished: a correct guess ends the solve
    exactly, often long before the residuals of ADMM would; a wrong one sends the lane
    back to the loop from its ADMM iterate. The loop is a while loop of passes, each
    running the iterations until every lane has stopped (or ran ``PASS_ITERATIONS``) and
    then polishing every lane that stopped in it at once: a ``lax.cond`` inside the
    iterations would become, under ``vmap``, a select that every lane pays for at every
    check. Under ``vmap`` the whole batch runs passes while many lanes still run; the last
    few are then gathered into a small batch of their own (``_batching.on_needing_lanes``),
    so that lanes that stopped stop costing.
    ``polish_attempts`` caps the stops per lane (None: one per new active set; 0: polish
    only after the loop); a solved or truncated lane is polished once at the end of its
    pass. (ρ is not adapted at the check where a lane stops: a lane sent back resumes at
    the ρ it stopped with.) ``reusable_factor``: a polishing round may reuse the factor of
    the round before for a nearby active set (``_polish.placeholder_system``).

    ``exact_jacobians`` (a QP carrying Jacobians, with polishing): a polished point's
    Jacobians are replaced by the fixed point of their recursion on its active set, solved
    with the polish's factor (``_kkt.kkt_jacobian``), so they are exact and a lane need not
    wait for the carried ones to settle before it stops to be polished; a lane that is not
    polished keeps the carried, truncated ones. ``first_iteration``: the iterations already
    spent on this solve (the loop continues the count, and ``max_iter`` caps the total).

    Returns:
        ``(z, J, objective, info, polished_system)`` in scaled space: the final (polished)
        iterate, its Jacobians (None without seeds), the objective at the final ρ,
        diagnostics, and the active set and factor of the polished point's reduced KKT
        system (see ``PolishedSystem``; None without polishing).
    """
    rho0 = numerics.rho
    seeds_at = seeds if callable(seeds) or seeds is None else (lambda z: seeds)
    J0 = None if seeds is None else zero_jacobian(init, seeds_at(init).grad.shape[1])
    exact = exact_jacobians and J0 is not None and structure.polish and bool(objective.quadratic)
    # An objective whose factor serves every ρ stays out of the carry: closed over, a batch
    # sharing it keeps one copy (on_needing_lanes would give each lane its own).
    carried_objective = bool(objective.rho_dependent)
    loop = _Loop(objective, constraints, scaling, seeds_at, numerics, structure, polish_attempts, early_first_polish,
                 exact, carried_objective, solution_active_set(constraints, init, rho0, numerics.tol),
                 jnp.zeros((), init.x.dtype))
    state = _initial_state(loop, init, J0, rho0, status0, first_iteration, reusable_factor)
    # Passes until every lane has stopped. Under vmap, once few lanes still run they are
    # gathered apart: a vmapped while loop would make every lane pay for the slowest one's
    # iterations.
    state = on_needing_lanes(functools.partial(_one_pass, loop), _running, (), state)
    res = state.residuals
    info = Info(state.status, state.iteration, res.primal, res.dual, res.gap, state.rho,
                state.jacobian_change, state.polished)
    return state.z, state.J, _objective_of(loop, state), info, state.polished_system


def run_then_differentiate(objective, constraints: Constraints, scaling: Scaling, init: Iterate, seeds,
                           numerics: Numerics, structure: Structure, status0, *settings
                           ) -> tuple[Iterate, Iterate, Any, Info, Optional[PolishedSystem]]:
    """:func:`run` for a QP whose Jacobians are wanted exact (``jacobians``, ``jvp``):
    solve without carrying them; where the solution is polished, solve the differentiated
    KKT system on its active set with the polish's factor (``_kkt.kkt_jacobian``, the
    fixed point of eqs. 5ga–5gd; kept where its refinement settled to ``tol``); only where
    that fails, and the solve converged or stalled, continue the loop from that solution
    carrying them (with ``exact_jacobians``), within the same ``max_iter``. A failed solve
    (infeasible, unbounded, non-finite), or one stopped at ``max_iter`` before it could be
    polished, has zero Jacobians, as a failed solve has a zero gradient. ``settings``:
    :func:`run`'s ``polish_attempts, reusable_factor, early_first_polish``. Same returns as
    :func:`run`."""
    seeds_at = seeds if callable(seeds) else (lambda z: seeds)
    z, _, final, info, system = run(objective, constraints, scaling, init, None, numerics, structure, status0,
                                    *settings)
    J0 = zero_jacobian(z, seeds_at(z).grad.shape[1])

    def exact(z, system):
        kkt = ReducedKKT.with_factor(objective.hessian_operator(z.x), constraints, system.active, system.factor)
        return kkt_jacobian(kkt, system.active, constraints, seeds_at(z))

    J, change = computed_where(info.polished, exact, (z, system), (J0, jnp.zeros((), z.x.dtype)))
    exact_kept = info.polished & all_finite(J) & (change <= numerics.tol)

    def carried(z, iterations):
        return run(objective, constraints, scaling, z, seeds, numerics, structure, status0, *settings,
                   exact_jacobians=True, first_iteration=iterations)

    status = info.status
    continuable = (status == Status.SOLVED) | (status == Status.STALLED)
    done = exact_kept | ~continuable
    J = jax.tree_util.tree_map(lambda v: jnp.where(exact_kept, v, 0.0), J)
    current = (z, J, final, info._replace(jacobian_change=change), system)
    return computed_where(~done, carried, (z, info.iterations), current)


def _select(condition, new, old):
    return jax.tree_util.tree_map(lambda a, b: jnp.where(condition, a, b), new, old)


def _polished_candidate(objective, constraints, scaling, state: LoopState, tol, attempt, before, seeds_at):
    """``(candidate, finite, its residuals, its PolishedSystem, its Jacobians)`` when
    ``attempt``, else ``(z, False, before, the state's PolishedSystem, the state's J)``.
    The Jacobians are the exact ones on the candidate's active set when ``seeds_at`` is
    given (see ``run``'s ``exact_jacobians``), else the carried ones.

    Computed only for the lanes that attempt, on CPU (``computed_where``). Under ``vmap`` a
    ``lax.cond`` would compute it for every lane, and hand the polish every operand
    batched: a batch sharing P, A, G would polish with copies of them, one per lane."""
    def polished(z, rho, system, J, change):
        candidate, finite, system = polish(objective, constraints, z, rho, tol, system)
        if seeds_at is not None:
            kkt = ReducedKKT.with_factor(objective.hessian_operator(candidate.x), constraints, system.active,
                                         system.factor)
            J, change = kkt_jacobian(kkt, system.active, constraints, seeds_at(candidate))
            finite = finite & all_finite(J)
        return candidate, finite, residuals(objective, constraints, candidate, scaling), system, J, change

    unchanged = (state.z, jnp.bool_(False), before, state.polished_system, state.J, state.jacobian_change)
    operands = (state.z, state.rho, state.polished_system, state.J, state.jacobian_change)
    return computed_where(attempt, polished, operands, unchanged)


def _polish_stopped(objective, constraints, scaling, state: LoopState, tol, in_play, seeds_at=None) -> LoopState:
    """Polish the lanes that stopped in this pass, and judge the polished point.

    A lane stopped to be polished (READY) keeps the polished point if it meets the
    tolerance, SOLVED; otherwise it goes back to the loop from its ADMM iterate, with its
    guess recorded as tried. A solved or truncated lane (SOLVED, MAX_ITER, STALLED) that
    was not polished yet keeps the better point by the residuals; a MAX_ITER or STALLED one
    whose polished point meets the tolerance (and whose Jacobians, carried or polished
    with ``seeds_at``, have settled) becomes SOLVED."""
    status, z = state.status, state.z
    ready = status == READY
    finished = (status == Status.SOLVED) | (status == Status.MAX_ITER) | (status == Status.STALLED)
    attempt = in_play & (ready | finished & ~state.polished)
    before = state.residuals
    candidate, finite, after, system, J, change = _polished_candidate(
        objective, constraints, scaling, state, tol, attempt, before, seeds_at)
    usable = attempt & finite
    meets = after.merit(tol) <= 1
    take = usable & jnp.where(ready, meets, after.merit(tol) < before.merit(tol))
    chosen = _select(take, after, before)
    if state.J is None:
        jacobians_settled = True
    else:
        J, change = _select(take, (J, change), (state.J, state.jacobian_change))
        jacobians_settled = change <= tol
    solved = take & (chosen.merit(tol) <= 1) & jacobians_settled
    # Without exact Jacobians a lane that keeps the polished point has stopped (a stop to
    # polish needs settled Jacobians), so it never polishes again and the last attempt's
    # system is the kept point's; with them, a kept point whose Jacobians did not settle
    # goes back to the loop, and an attempt it does not keep must not replace the kept system.
    kept_system = system if seeds_at is None else _select(take, system, state.polished_system)
    status = jnp.where(solved, jnp.int32(Status.SOLVED), jnp.where(ready, jnp.int32(RUNNING), status))
    return state._replace(
        z=_select(take, candidate, z), J=J, jacobian_change=change, status=status,
        residuals=chosen,
        tried=_select(ready, state.active, state.tried), has_tried=state.has_tried | ready,
        passes=state.passes + ready.astype(jnp.int32),
        polished=state.polished | take, polished_system=kept_system,
    )
