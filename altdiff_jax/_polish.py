"""Solution polishing (OSQP's polish, iterated): from the ADMM iterate to an exact point.

After ADMM stops, guess the active set from the iterate (:func:`_kkt.solution_active_set`),
and take Newton steps on the problem restricted to it (the equalities, the active rows of
G and the active bounds held with equality), each solving the reduced KKT system of
``_kkt`` exactly. For a QP one step is exact for its active set; a smooth objective takes
a few (quadratic convergence), each damped to stay in the objective's domain. The active
set is then re-read from the new point by the same rule (a violated row joins, a
wrong-signed multiplier leaves: a primal-dual active-set step), and the rounds stop
when it no longer changes.

The polished point is kept only if it is better than the ADMM iterate by the residuals
and the duality gap (``Residuals.merit``); otherwise the solve returns the ADMM iterate,
and ``info.polished`` says which. When the active set is right, the answer is exact to
round-off: multipliers whose stationarity is at round-off, bounds met exactly, exact zeros
for sparse layers.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from ._batching import on_needing_lanes
from ._iterate import Iterate, all_finite, inf_norm
from ._jacobian import ActiveSet, active_margin, active_set, same_active_set
from ._linalg import all_over
from ._kkt import STALL_FLOOR, KKTVector, ReducedKKT, ReusableFactor, solution_active_set

_ROUNDS = {True: 3, False: 8}  # active-set rounds for a quadratic / smooth objective
_HALVINGS = 30  # damping of a smooth objective's Newton step into its domain


class PolishedSystem(NamedTuple):
    """The active set of a polished point and the factor of its reduced KKT system: for a
    QP (constant Hessian) the ``kkt`` pullback solves with it instead of factoring again.

    Attributes:
        active: the active set of the last Newton step.
        factor: the factor of ``ReducedKKT`` on it (see ``ReducedKKT.with_factor``).
    """

    active: ActiveSet
    factor: Any


def placeholder_system(objective, constraints, z: Iterate, reusable: bool = False) -> PolishedSystem:
    """Zeros shaped like the :class:`PolishedSystem` of a polish from ``z`` (the initial
    value of a loop carry). ``reusable``: the rounds keep a :class:`_kkt.ReusableFactor`,
    so that a later round whose active set moved by a few rows updates the factor instead
    of factoring again (for one dense float64 QP, where a factorisation is dear; under
    ``vmap`` the ``lax.cond`` that chooses would make every lane pay for both branches)."""
    empty = solution_active_set(constraints, z, jnp.ones((), z.x.dtype), jnp.ones((), z.x.dtype))
    empty = ActiveSet(*(jnp.zeros_like(mask) for mask in empty))
    shapes = jax.eval_shape(
        lambda: ReducedKKT.build(objective.hessian_operator(z.x), constraints, empty, reusable).factor
    )
    return PolishedSystem(empty, jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes))


class _Round(NamedTuple):
    x: jax.Array
    y: KKTVector  # the multipliers of the last step (at the start: the iterate's), corrected by the next
    used: ActiveSet  # the active set of the last step, whose rows y's entries belong to
    factor: Any  # the factor of the last step's reduced KKT system
    active: ActiveSet  # the active set re-read from x, for the next step
    count: jax.Array
    done: jax.Array



def _in_domain(objective, x: jax.Array) -> jax.Array:
    return jnp.isfinite(objective.value(x)) & all_finite(objective.gradient(x))


def _is_kkt_point(constraints, active: ActiveSet, slack, x, y: KKTVector, tol) -> jax.Array:
    """Whether the step on ``active`` ended at a KKT point: multipliers of the active rows
    and bounds have their signs, and the rows and bounds outside it hold (to the margin)."""
    lb, ub, x_B = constraints.lb, constraints.ub, constraints.B.mv(x)
    rows = jnp.where(active.inequality, -y.ineq, -slack) <= active_margin(constraints.h, tol)
    upper_ok = jnp.where(active.upper, -y.bound <= tol, x_B <= ub + active_margin(ub, tol))
    lower_ok = jnp.where(active.lower, y.bound <= tol, x_B >= lb - active_margin(lb, tol))
    return all_over(jnp.concatenate([rows, upper_ok | ~jnp.isfinite(ub) & ~active.upper,
                                     lower_ok | ~jnp.isfinite(lb) & ~active.lower]))


def _solved(objective, constraints, x: jax.Array, y: KKTVector, active: ActiveSet, previous, first: jax.Array
            ) -> tuple[Any, KKTVector]:
    """The factor of the reduced KKT system on ``active`` and its solution for the Newton
    step from x, with the multipliers corrected from ``y`` (its entries on ``active``).

    Solved for the correction of the multipliers, not for the multipliers themselves: at
    a degenerate vertex (more active rows than the rows that determine x) the multipliers
    are not unique, and the regularised solve picks the one nearest its start. From zero
    that is the smallest, often wrong-signed; from the iterate's multipliers it is the
    nearest of them to a dual point, which keeps their signs.

    A :class:`_kkt.ReusableFactor` ``previous`` (only QPs carry one: their Hessian is
    constant, ``_solve._forward``) serves a round after the ``first`` if its base is near
    ``active`` (``ReducedKKT.reusable``), unless the refinement with it does not reach
    ``STALL_FLOOR`` (the Woodbury update lost accuracy): then, as when it cannot serve, the
    system is factored anew: at most two attempts, in one loop whose body traces the
update and the fresh factorisation once, as the two branches of one ``lax.cond``."""
    A, b, G, h, lb, ub = constraints
    H = objective.hessian_operator(x)
    bound_target = jnp.where(active.upper, ub, jnp.where(active.lower, lb, 0.0))

    def solved(system: ReducedKKT):
        start = KKTVector(jnp.zeros_like(x), y.eq, jnp.where(system.a > 0, y.ineq, 0.0),
                          jnp.where(system.a_B > 0, y.bound, 0.0))
        # K applied to start: only its multipliers' terms in the x block (its x is zero, its
        # rows are zero outside the active set).
        multiplier_terms = A.rmv(start.eq) + G.rmv(start.ineq) + constraints.B.rmv(start.bound)
        rhs = KKTVector(
            -objective.gradient(x) - multiplier_terms,
            b - A.mv(x),
            system.a * (h - G.mv(x)),
            system.a_B * (jnp.where(system.a_B > 0, bound_target, 0.0) - constraints.B.mv(x)),
        )
        correction, change = system.solve_and_change(rhs, start)
        return system.factor, correction + start, change

    gram = objective.constraint_gram()
    if not isinstance(previous, ReusableFactor):
        return solved(ReducedKKT.build(H, constraints, active, constraint_gram=gram))[:2]

    floor = STALL_FLOOR[jnp.dtype(x.dtype).itemsize]
    nearby = ~first & ReducedKKT.reusable(constraints, active, previous)

    def attempt(state):
        # The first attempt updates ``previous`` where it is near; a second, if the update
        # was inaccurate, factors anew. One factorisation and one solve site serve both.
        tries, _, _, _ = state
        update = nearby & (tries == 0)
        factor = lax.cond(update, lambda: ReducedKKT.nearby(H, constraints, active, previous).factor,
                          lambda: ReducedKKT.build(H, constraints, active, True, gram).factor)
        factor, w, change = solved(ReducedKKT.with_factor(H, constraints, active, factor))
        return tries + 1, factor, w, ~update | (change <= floor)

    zeros = KKTVector(*(jnp.zeros_like(v) for v in (x, b, h, lb)))
    _, factor, w, _ = lax.while_loop(lambda state: ~state[3], attempt, (jnp.int32(0), previous, zeros, jnp.bool_(False)))
    return factor, w


def _newton_step(objective, constraints, x: jax.Array, y: KKTVector, active: ActiveSet, previous, first: jax.Array
                 ) -> tuple[jax.Array, KKTVector, Any]:
    """One Newton step on the problem restricted to ``active``: (x + t·Δx, multipliers,
    the factor of the reduced KKT system; ``y``, ``previous`` and ``first``: see
    :func:`_solved`)."""
    factor, w = _solved(objective, constraints, x, y, active, previous, first)
    if objective.quadratic:
        return x + w.x, w, factor
    # A smooth objective may be undefined beyond its domain (an entropy at x <= 0): halve
    # the step until the point is in it.
    def shorter(t):
        return t * 0.5

    t = lax.while_loop(
        lambda t: ~_in_domain(objective, x + t * w.x) & (t > 0.5**_HALVINGS), shorter, jnp.ones((), x.dtype)
    )
    return x + t * w.x, w, factor


def _round(objective, constraints, rho, tol, state: _Round) -> _Round:
    """One Newton step on ``state.active``, and the active set re-read from its point
    (the first round, ``state.count == 0``, factors anew)."""
    h = constraints.h
    x, y, factor = _newton_step(objective, constraints, state.x, state.y, state.active, state.factor,
                                state.count == 0)
    nu = jnp.where(state.active.inequality, y.ineq, 0.0)
    mu = jnp.where(state.active.upper | state.active.lower, y.bound, 0.0)
    slack = h - constraints.G.mv(x)
    new_active = active_set(constraints, slack, nu, x, mu, rho, tol)
    eps = jnp.finfo(x.dtype).eps
    settled = objective.quadratic | (inf_norm(x - state.x) <= 100 * eps * (1 + inf_norm(x)))
    # A step whose multipliers have their signs and whose point violates no other
    # constraint is a KKT point: stop there. (The re-read alone can cycle at a
    # degenerate vertex, where a weakly active row is active by the margin rule
    # but its multiplier in an over-determined active set comes out wrong-signed.)
    done = ((same_active_set(new_active, state.active) | _is_kkt_point(constraints, state.active, slack, x, y, tol))
            & settled) | ~all_finite(x)
    return _Round(x, y, state.active, factor, new_active, state.count + 1, done)


def polish(objective, constraints, z: Iterate, rho, tol, shaped_like: PolishedSystem
           ) -> tuple[Iterate, jax.Array, PolishedSystem]:
    """The polished point, from the iterate ``z`` (scaled variables). ``shaped_like`` is any
    :class:`PolishedSystem` of this problem (the caller's carry): its factor seeds the
    rounds' loop and the first round replaces it.

    Returns:
        ``(candidate, finite, system)``: the candidate :class:`Iterate` (multipliers
        projected on their signs, bound-active variables set exactly on their bound),
        whether it is finite, and the active set and factor of its last step. The caller
        keeps it only if its residuals are better than ``z``'s.
    """
    _, b, G, h, lb, ub = constraints
    rounds = _ROUNDS[bool(objective.quadratic)]

    def unfinished(state: _Round) -> jax.Array:
        return ~state.done & (state.count < rounds)

    start_active = solution_active_set(constraints, z, rho, tol)
    n, dtype = z.x.shape[0], z.x.dtype
    multipliers = KKTVector(jnp.zeros(n, dtype), z.lam, z.nu, z.mu)
    start = _Round(z.x, multipliers, start_active, shaped_like.factor, start_active, jnp.int32(0),
                   jnp.bool_(False))
    # Unbatched, one loop of rounds. Under vmap every lane takes the first round at once;
    # the later ones run on the few lanes whose active set moved, gathered apart (a while
    # loop would run them for every lane).
    data = (objective, constraints, rho, tol)
    final = on_needing_lanes(lambda data, state: _round(*data, state), unfinished, data, start,
                             first_step_for_all=True)
    # The multipliers of the last step belong to the active set it was taken on; a row
    # that the last re-read would move is reported by the residuals, not hidden.
    x, y, active = final.x, final.y, final.used
    nu = jnp.where(active.inequality, jnp.maximum(y.ineq, 0.0), 0.0)
    s = jnp.maximum(h - G.mv(x), 0.0)
    B = constraints.B
    x = B.assign(x, jnp.where(active.upper, ub, jnp.where(active.lower, lb, B.mv(x))))
    mu = jnp.where(active.upper, jnp.maximum(y.bound, 0.0), jnp.where(active.lower, jnp.minimum(y.bound, 0.0), 0.0))
    z_B = jnp.clip(B.mv(x), lb, ub)
    candidate = Iterate(x, s, y.eq, nu, z_B, mu)
    finite = all_finite(candidate)
    return candidate, finite & (final.count > 0), PolishedSystem(final.used, final.factor)

