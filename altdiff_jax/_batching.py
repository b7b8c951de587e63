"""Keeping ``vmap``-ed batches cheap: work that only some lanes need.

Under ``jax.vmap`` a ``lax.cond`` with a batched predicate becomes a select that computes
both branches for every lane, and a ``lax.while_loop`` runs its body for every lane until
the slowest one stops. The engine has work that few lanes need (a refactorisation for
the lanes whose ρ changed; a polish for the lanes that stopped; a second polishing round
for the lanes whose active set moved), so it uses the two helpers here:

* :func:`computed_where`: a value computed only for the lanes that ask for it, gathered
  (on CPU; elsewhere for every lane, when one asks);
* :func:`on_needing_lanes`: a loop whose lanes, once few still need it, are gathered into
  a small batch of their own.

:func:`is_batched` tells, at trace time, whether a value is batched by ``vmap``.

Public JAX only: :func:`is_batched`, :func:`computed_where` and :func:`on_needing_lanes` learn about the
batch from a ``jax.custom_batching.custom_vmap`` rule, which JAX calls exactly when the
values it is given are batched (with the batch size and which of them are), never from
the tracers themselves.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax import lax
from jax.extend.core import ClosedJaxpr, jaxpr_as_fun

from ._linalg import gathered_lanes

COMPACTED_LANES = 4
""":func:`on_needing_lanes` gathers the lanes still running once at most 1/COMPACTED_LANES of
the batch (at least 8 lanes) do: a quarter rather than a sixteenth made the degenerate batch
of ``benchmarks/batches.py`` 0.85× as long, the paper batches 0.99× and 1.18× (every leaf
batched; P, A, G shared): ``benchmarks/results/batch_constants.md``."""


def is_batched(*trees) -> bool:
    """Whether any array leaf is being batched by ``jax.vmap``, as seen at trace time.

    The leaves go through a ``custom_vmap`` identity whose rule, run by JAX exactly when
    some of its inputs carry a batch axis of an enclosing ``vmap`` (any level of nested
    ``vmap``s), records that they do. Their tangents are stopped first, so under
    forward-mode autodiff the primal values decide (a ``jvp`` whose tangents alone are
    batched, as in ``jax.jacfwd``, does not count), as for the values themselves. A
    ``vmap`` outside a ``jax.jit`` that contains the call is not seen (the function is
    traced before it is batched): the same as a ``vmap`` that batches nothing here. The
    identity leaves nothing in the compiled program (its outputs are unused)."""
    leaves = [leaf for leaf in jax.tree_util.tree_leaves(trees) if isinstance(leaf, jax.Array)]
    if not leaves:
        return False
    seen = []

    @jax.custom_batching.custom_vmap
    def probe(leaves):
        return leaves

    @probe.def_vmap
    def _record(axis_size, in_batched, leaves):
        seen.append(any(jax.tree_util.tree_leaves(in_batched)))
        return leaves, in_batched[0]

    probe(lax.stop_gradient(leaves))
    return any(seen)


def computed_where(condition: jax.Array, compute, operands, current):
    """``compute(*operands)`` where ``condition`` holds, else ``current``; computed only
    where it holds, where a ``lax.cond`` would become, under ``vmap``, a select that
    computes it for every lane every time.

    Unbatched, a while loop whose body runs at most once. Under ``vmap`` with a batched
    ``condition``, on CPU, the lanes where it holds are gathered, ``_linalg.gathered_lanes``
    at a time (an eighth of the batch, at least 8 lanes), computed as a small batch and
    scattered back: the other lanes pay nothing (a refactorisation for the lanes whose ρ
    changed, a polish for the lanes that stopped). Elsewhere every lane computes when one
    asks (``gathered_lanes`` is the whole batch there). Operands shared by the lanes stay
    shared.

    Each body passes its operands through an optimisation barrier together with a value
    the loop changes, so that XLA's loop-invariant code motion cannot hoist the work out
    of the loop (where it would run every time; it did, for operands held unchanged in
    the carry:
    ``tests/test_transforms.py::test_computed_where_runs_its_work_only_where_asked_and_xla_keeps_it_so``).
    """
    condition = jnp.asarray(condition, bool)
    closed = _ClosedStep(lambda operands, _: compute(*operands), operands, current)

    def once(values, consts, condition, current):
        # The operands are closed over, not carried: under vmap a batched flag would batch
        # every carried value, a copy of each shared operand per lane.
        def body(carry):
            result, done = carry
            (values_now, consts_now), done = lax.optimization_barrier(((values, consts), done))
            return closed(values_now, consts_now, result), ~done

        return lax.while_loop(lambda carry: ~carry[1], body, (current, ~condition))[0]

    @jax.custom_batching.custom_vmap
    def run(values, consts, condition, current):
        return once(values, consts, condition, current)

    @run.def_vmap
    def on_lanes_where(axis_size, in_batched, values, consts, condition, current):
        values_batched, consts_batched, condition_batched, current_batched = in_batched
        current = jax.tree_util.tree_map(
            lambda leaf, batched: leaf if batched else jnp.broadcast_to(leaf, (axis_size, *jnp.shape(leaf))),
            current, current_batched)
        axes = _in_axes((values_batched, consts_batched))
        lanes = gathered_lanes(axis_size)
        if not condition_batched or lanes >= axis_size:
            # Every lane or none; or every lane when any asks (a batched condition makes the
            # loop's flag batched, and its one step a select over the whole batch).
            current = jax.vmap(once, in_axes=(*axes[:2], 0 if condition_batched else None, 0),
                               axis_size=axis_size)(values, consts, condition, current)
        else:
            current = _gather_lanes(closed, condition, lanes, axis_size, (values_batched, consts_batched),
                                    (values, consts), current)
        return current, jax.tree_util.tree_map(lambda _: True, current)

    return run(closed.values, closed.consts, condition, current)


def _is_array(leaf) -> bool:
    """A JAX array or tracer (``jax.Array`` covers both), or a NumPy one."""
    return isinstance(leaf, jax.Array) or hasattr(leaf, "__array__")


def _select_lanes(keep: jax.Array, new, old):
    """Per lane of a leading batch axis: ``new`` where ``keep``, else ``old``."""
    return jax.tree_util.tree_map(
        lambda a, b: jnp.where(keep.reshape(keep.shape + (1,) * (jnp.ndim(a) - 1)), a, b), new, old)


class _ClosedStep:
    """A function ``(data, state) -> state`` traced once to a jaxpr over the array leaves of
    ``data``: the values it closes over (a user's objective may close over a batched one)
    become constants passed in as data like the rest, as a ``custom_vmap`` function
    requires. (``jax.closure_convert`` would hoist only the closed-over values autodiff may
    perturb: not an integer, nor a value batched by a ``vmap`` outside any ``jit``.)

    Calling it, ``(values, consts, state) -> state``, evaluates the jaxpr."""

    def __init__(self, function, data, state):
        leaves, treedef = jax.tree_util.tree_flatten(data)
        dynamic = [i for i, leaf in enumerate(leaves) if _is_array(leaf)]

        def rebuild(values):
            full = list(leaves)
            for i, value in zip(dynamic, values):
                full[i] = value
            return jax.tree_util.tree_unflatten(treedef, full)

        self.values = [leaves[i] for i in dynamic]
        self.state_tree = jax.tree_util.tree_structure(state)
        self.closed = jax.make_jaxpr(lambda values, state: function(rebuild(values), state))(self.values, state)
        self.consts = list(self.closed.consts)

    def __call__(self, values, consts, state):
        out = jaxpr_as_fun(ClosedJaxpr(self.closed.jaxpr, consts))(*jax.tree_util.tree_leaves((values, state)))
        return jax.tree_util.tree_unflatten(self.state_tree, out)


def _in_axes(batched):
    """``vmap``'s ``in_axes`` for ``(values, consts, state)`` from which leaves of the
    values and constants are ``batched`` (the state always is)."""
    values_batched, consts_batched = batched
    return [0 if b else None for b in values_batched], [0 if b else None for b in consts_batched], 0


def _gather_lanes(evaluate, waiting, lanes, axis_size, batched, operands, state):
    """Run ``evaluate(values, consts, state)`` on the lanes of ``state`` (a batch of
    ``axis_size``) where ``waiting``, ``lanes`` at a time.

    ``operands`` are ``(values, consts)``; ``batched`` says which of their leaves carry the
    batch axis (the others are shared). The operands pass an optimisation barrier with the
    loop's flags, so that no work on them is hoisted out of the loop. Returns the whole
    batch's state."""
    axes = _in_axes(batched)

    def gathered(carry):
        state, waiting = carry
        operands_now, waiting = lax.optimization_barrier((operands, waiting))
        # Spare slots repeat a waiting lane and are dropped on the way back (index axis_size).
        index = jnp.nonzero(waiting, size=lanes, fill_value=jnp.argmax(waiting))[0]
        target = jnp.where(jnp.arange(lanes) < jnp.sum(waiting), index, axis_size)
        picked = [[leaf[index] if b else leaf for leaf, b in zip(leaves, flags)]
                  for leaves, flags in zip(operands_now, batched)]
        done = jax.vmap(evaluate, in_axes=axes, axis_size=lanes)(
            *picked, jax.tree_util.tree_map(lambda leaf: leaf[index], state))
        state = jax.tree_util.tree_map(lambda leaf, new: leaf.at[target].set(new, mode="drop"), state, done)
        return state, waiting.at[target].set(False, mode="drop")

    return lax.while_loop(lambda carry: jnp.any(carry[1]), gathered, (state, waiting))[0]


def _step_while_crowded(evaluate_step, needs, lanes, axes, operands, state):
    """Steps of the whole batch, every lane that needs one at once, while more than
    ``lanes`` lanes need them."""
    def crowded(state):
        return jnp.sum(jax.vmap(needs)(state)) > lanes

    def whole_batch_step(state):
        stepped = jax.vmap(evaluate_step, in_axes=axes)(*operands, state)
        return _select_lanes(jax.vmap(needs)(state), stepped, state)

    return lax.while_loop(crowded, whole_batch_step, state)


def on_needing_lanes(step: Callable[[Any, Any], Any], needs: Callable[[Any], jax.Array], data, state,
                     first_step_for_all: bool = False):
    """The loop ``while needs(state): state = step(data, state)``; under ``vmap`` the lanes
    that no longer need it stop costing.

    Unbatched, it is that loop. Under ``vmap`` (``jax.custom_batching``) the whole batch
    first takes steps, every lane that needs one at once, while more lanes need them than a
    gather holds (at most a quarter of the batch, ``COMPACTED_LANES``, at least 8 lanes);
    the lanes left are then gathered into a small batch of their own, the loop runs on it,
    and the results are scattered back; the other lanes keep ``state``. A while loop of
    ``vmap``, by contrast, runs its body for every lane until the slowest one stops. With
    ``first_step_for_all`` (every lane needs the first step), every lane takes one step at
    once instead, and the lanes that still need the loop are then gathered. ``step`` is
    traced once, for both.

    Args:
        step: ``(data, state) -> state``.
        needs: ``state -> ()`` bool.
        data: a pytree of the loop's inputs; leaves that are not arrays are static.
        state: a pytree of arrays.
        first_step_for_all: see above; only where the caller knows that ``needs`` holds for
            every lane at the start.
    """
    closed = _ClosedStep(step, data, state)

    def loop(values, consts, state):
        return lax.while_loop(needs, lambda state: closed(values, consts, state), state)

    @jax.custom_batching.custom_vmap
    def run(values, consts, state):
        return loop(values, consts, state)

    @run.def_vmap
    def run_needing_lanes(axis_size, in_batched, values, consts, state):
        values_batched, consts_batched, state_batched = in_batched
        state = jax.tree_util.tree_map(
            lambda leaf, batched: leaf if batched else jnp.broadcast_to(leaf, (axis_size, *jnp.shape(leaf))),
            state, state_batched)
        lanes = min(axis_size, max(8, axis_size // COMPACTED_LANES))
        batched, axes = (values_batched, consts_batched), _in_axes((values_batched, consts_batched))
        if first_step_for_all:
            state = jax.vmap(closed, in_axes=axes)(values, consts, state)
        else:
            state = _step_while_crowded(closed, needs, lanes, axes, (values, consts), state)
        state = _gather_lanes(loop, jax.vmap(needs)(state), lanes, axis_size, batched, (values, consts), state)
        return state, jax.tree_util.tree_map(lambda _: True, state)

    return run(closed.values, closed.consts, state)
