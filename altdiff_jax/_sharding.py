"""Batches of solves split across devices, with one ``while`` loop per device.

A vmapped ``lax.while_loop`` runs until its slowest lane stops (converged lanes are
frozen, not skipped). Two ways to spread a batch of QPs over the devices of a mesh:

* **Plain** ``jax.jit(jax.vmap(solve, in_axes))`` **on sharded inputs** (batched leaves
  placed with ``NamedSharding(mesh, PartitionSpec("batch"))``, shared leaves replicated).
  Correct, with sharded outputs, but XLA's SPMD partitioner compiles the loop's stopping
  test into a global reduction: the ``while`` condition ends in an ``all-reduce`` over the
  mesh. Every device runs as many iterations as the slowest lane of the *whole* batch,
  and all devices synchronise at every iteration.
* :func:`solve_sharded` / :func:`sharded_vmap` (``jax.shard_map``): each device runs
  ``jax.vmap(solve)`` on its own block of lanes with its own loop, which stops when the
  slowest lane *of that block* stops; no collective inside the loop. Gradients of shared
  (replicated) leaves are summed across devices once, in the backward pass.

One call still ends when its slowest device does. What per-device loops save is the
per-iteration collective (a latency paid by every iteration, large next to the cheap
iterations of small problems) and the iterations of devices whose lanes are done: those
devices are free for the next queued call, and devices that share compute (simulated
CPU devices, a shared host) hand their share to the others.

Use per-device loops when lanes differ in difficulty (mixed conditioning, infeasible
lanes, warm starts of varying quality), the more so when the hard lanes share a block
(sort the batch by expected difficulty, e.g. by last epoch's ``info.iterations``), and
when the devices are many and the problems small. Plain ``jit(vmap)`` needs no mesh
argument and composes with any sharding XLA picks; on one device the two are the same.
``benchmarks/sharding.py`` measures both (``benchmarks/results/sharding.md``).

Simulated CPU devices (``XLA_FLAGS=--xla_force_host_platform_device_count=D``) with
jaxlib 0.10.2: a batched LAPACK call (the engine's factorisation of the lanes' matrices)
splits its batch over XLA's intra-op thread pool and blocks on the pieces. On a host with
few cores and more than about 8 lanes per device, one pool thread can block there while
the other waits in a collective for that device: the all-reduce of plain ``jit(vmap)``'s
loop, or the one summing the gradients of shared leaves. XLA then aborts after 40 s
("Termination timeout for `all reduce`"). Per-device forward solves have no collective,
but two devices' batched LAPACK calls running at once can still block both pool threads
(``benchmarks/results/batched_lapack.md``: an ordered program on 2 CPU devices).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec

from ._options import Options, resolve_options
from ._problem import QP
from ._solution import Solution
from ._solve import solve

AxisName = Union[str, Sequence[str]]


def _default_mesh() -> Mesh:
    return Mesh(np.array(jax.devices()), ("batch",))


def _axis_names(mesh: Mesh, axis_name: Optional[AxisName]) -> tuple[str, ...]:
    names = tuple(mesh.axis_names) if axis_name is None else (
        (axis_name,) if isinstance(axis_name, str) else tuple(axis_name)
    )
    unknown = [name for name in names if name not in mesh.axis_names]
    if unknown or not names:
        raise ValueError(f"axis_name {axis_name!r} does not name axes of the mesh {dict(mesh.shape)}")
    return names


def _leaf_axes(in_axes: Any, args: tuple) -> list[Optional[int]]:
    """One batch axis (or None) per leaf of ``args``, from a prefix ``in_axes`` as in vmap."""
    if isinstance(in_axes, list):
        in_axes = tuple(in_axes)
    if type(in_axes) is not tuple:  # an int, None or one pytree (e.g. a QP): every argument
        in_axes = (in_axes,) * len(args)
    if len(in_axes) != len(args):
        raise ValueError(f"in_axes has {len(in_axes)} entries for {len(args)} positional arguments")
    axes: list[Optional[int]] = []
    try:
        jax.tree_util.tree_map(
            lambda axis, subtree: axes.extend([axis] * len(jax.tree_util.tree_leaves(subtree))),
            in_axes, args, is_leaf=lambda node: node is None,
        )
    except ValueError as error:
        raise ValueError(f"in_axes {in_axes!r} is not a tree prefix of the arguments: {error}") from None
    for axis in axes:
        if axis is not None and not isinstance(axis, int):
            raise ValueError(f"in_axes entries must be int or None, got {axis!r}")
    return axes


def sharded_vmap(
    fn: Callable[..., Any],
    in_axes: Any = 0,
    *,
    mesh: Optional[Mesh] = None,
    axis_name: Optional[AxisName] = None,
) -> Callable[..., Any]:
    """``jax.vmap(fn, in_axes)`` with the batch split across the devices of a mesh.

    Each device runs ``jax.vmap(fn)`` on its own contiguous block of lanes
    (``jax.shard_map``), so a ``lax.while_loop`` inside ``fn`` (as in :func:`solve`) stops
    per device, when the slowest lane of that device's block stops, with no collective
    inside the loop. Leaves with ``in_axes`` None (shared across the batch, e.g. ``P``,
    ``A``, ``G``) are replicated on every device; under ``jax.grad`` their gradients are
    summed over the lanes of every device and then across devices, as for ``jax.vmap``.
    Gradients of batched leaves stay sharded like the leaves.

    A batch size ``B`` that is not a multiple of the number of shards ``D`` is padded with
    copies of lane 0 up to the next multiple and the outputs are cut back to ``B``
    lanes. The padding lanes get a zero cotangent (masked inside the shard), so they do
    not change any gradient; they cost compute like real lanes. The cut outputs are no
    longer evenly divisible over the mesh, so XLA returns them replicated.

    ``fn`` runs under ``shard_map(..., check_vma=False)``: the solver's loop carries start
    as constants and become per-device values, which the stricter checker rejects.

    Args:
        fn: a function of one lane, as for ``jax.vmap``; every output gets a leading batch
            axis (``out_axes=0``).
        in_axes: as ``jax.vmap``'s: a tuple with one pytree prefix per positional
            argument, whose leaves are an int (the batch axis of that leaf, any axis; it
            is moved to the front) or None (shared); or one int, None or non-tuple pytree
            (e.g. a :class:`QP`) for every argument.
        mesh: a ``jax.sharding.Mesh``; default: a 1-D mesh ``("batch",)`` over all of
            ``jax.devices()``.
        axis_name: the mesh axis (or tuple of axes) that splits the batch; default: all
            axes of the mesh. Mesh axes not named compute the same lanes redundantly.

    Returns:
        A function of the same positional arguments as ``fn`` (batched leaves of shape
        ``(B, ...)`` along their axis) returning ``fn``'s outputs with a leading axis
        ``B``, sharded over ``axis_name`` (``PartitionSpec(axis_name)``) when ``D``
        divides ``B``. Jit it as you would ``jax.vmap(fn)``; ``jax.grad`` works through it.

    Raises:
        ValueError: if no leaf is batched, batched leaves disagree on the batch size,
            ``in_axes`` does not fit the arguments, or ``axis_name`` is not in the mesh.

    Examples:
        A per-lane function of a batched ``x`` and a shared ``w``; for QPs the lane is a
        solve, e.g. ``lambda q, h: ad.solve(ad.QP(P=P, q=q, G=G, h=h)).x`` (see
        :func:`solve_sharded`).

        >>> import jax, jax.numpy as jnp
        >>> from altdiff_jax import sharded_vmap
        >>> xs, w = jnp.arange(10.0).reshape(5, 2), jnp.array([1.0, 2.0])  # 5 lanes, shared w
        >>> f = sharded_vmap(lambda x, w: x @ w, in_axes=(0, None))
        >>> f(xs, w).tolist()
        [2.0, 8.0, 14.0, 20.0, 26.0]
        >>> jax.grad(lambda w: f(xs, w).sum())(w).tolist()  # summed over lanes and devices
        [20.0, 25.0]
    """

    def mapped(*args):
        mesh_ = _default_mesh() if mesh is None else mesh
        names = _axis_names(mesh_, axis_name)
        shards = math.prod(mesh_.shape[name] for name in names)
        leaves, treedef = jax.tree_util.tree_flatten(args)
        axes = _leaf_axes(in_axes, args)
        leaves, size = _batch_axis_first(leaves, axes, in_axes)
        pad = -size % shards
        leaves = _padded(leaves, axes, pad)
        lane = _lane(fn, treedef, masked=bool(pad))
        batch = PartitionSpec(names[0] if len(names) == 1 else names)
        vmap_axes = (0, *(None if axis is None else 0 for axis in axes))
        out = jax.shard_map(
            lambda *local: jax.vmap(lane, in_axes=vmap_axes)(*local),
            mesh=mesh_,
            in_specs=(batch, *(PartitionSpec() if axis is None else batch for axis in axes)),
            out_specs=batch,
            check_vma=False,
        )(jnp.arange(size + pad) < size, *leaves)
        return jax.tree_util.tree_map(lambda o: o[:size], out) if pad else out

    return mapped


def _batch_axis_first(leaves: list, axes: list[Optional[int]], in_axes: Any) -> tuple[list, int]:
    """The batched leaves with their batch axis moved to the front, and the batch size."""
    leaves, sizes = list(leaves), set()
    for i, (leaf, axis) in enumerate(zip(leaves, axes)):
        if axis is None:
            continue
        leaf = jnp.asarray(leaf)
        if not -leaf.ndim <= axis < leaf.ndim:
            raise ValueError(f"in_axes {axis} is out of range for a leaf of shape {leaf.shape}")
        leaves[i] = leaf = jnp.moveaxis(leaf, axis, 0)
        sizes.add(leaf.shape[0])
    if len(sizes) != 1:
        raise ValueError(
            "sharded_vmap needs at least one batched leaf and one batch size, got sizes "
            f"{sorted(sizes)} from in_axes {in_axes!r}"
        )
    return leaves, sizes.pop()


def _padded(leaves: list, axes: list[Optional[int]], pad: int) -> list:
    """The batched leaves padded with ``pad`` copies of lane 0, a real lane: the copies are
    cut from the outputs and pass no cotangent back (:func:`_lane`)."""
    if not pad:
        return leaves
    return [leaf if axis is None else jnp.concatenate([leaf, jax.lax.stop_gradient(jnp.repeat(leaf[:1], pad, axis=0))])
            for leaf, axis in zip(leaves, axes)]


def _lane(fn: Callable[..., Any], treedef, masked: bool) -> Callable[..., Any]:
    """``fn`` of one lane's leaves, taking first whether the lane is a real one; with
    ``masked``, padding lanes pass no cotangent back, whatever their outputs are used for."""
    def lane(is_valid, *lane_leaves):
        out = fn(*jax.tree_util.tree_unflatten(treedef, lane_leaves))
        if not masked:
            return out
        return jax.tree_util.tree_map(lambda o: jnp.where(is_valid, o, jax.lax.stop_gradient(o)), out)
    return lane


def solve_sharded(
    problem: QP,
    options: Optional[Options] = None,
    init: Optional[Solution] = None,
    *,
    mesh: Optional[Mesh] = None,
    in_axes: Any = 0,
    axis_name: Optional[AxisName] = None,
) -> Solution:
    """Solve a batch of QPs split across devices, one ADMM loop per device.

    ``jax.vmap(solve, in_axes=(in_axes, None))(problem, options)`` computed by
    :func:`sharded_vmap`: same per-lane results (solution, status, iterations) and
    gradients, but each device stops when its own lanes have converged. Plain
    ``jax.jit(jax.vmap(solve))`` on sharded inputs runs one loop for the whole batch:
    every device runs as many iterations as the slowest lane of the batch, with a
    collective at every iteration. Per-device loops pay off when lanes differ in
    difficulty (the more so when the hard lanes share a device's block: sort the batch by
    expected difficulty, e.g. by last epoch's ``info.iterations``) and when the devices
    are many and the problems small; on one device the two are the same.
    Compiled once per mesh, ``in_axes``, shapes and static options; ``jax.grad`` works
    through it.

    Args:
        problem: a :class:`QP` whose batched leaves have a batch axis of size ``B``
            (e.g. ``q (B, n)``, ``b (B, p)``, ``h (B, m)``) and whose shared leaves have
            the single-problem shapes (e.g. ``P (n, n)``).
        options: :class:`Options`, shared by all lanes; ``None`` for the defaults.
        init: a previous batched :class:`Solution` (leading axis ``B``) to warm start
            from, or ``None``.
        mesh: a ``jax.sharding.Mesh``; default: a 1-D mesh ``("batch",)`` over all devices.
        in_axes: the batch axis of each leaf of ``problem``: an int for all, or a
            :class:`QP` of ints and Nones, e.g. ``QP(P=None, q=0, A=None, b=0, G=None, h=0)``.
        axis_name: the mesh axis (or axes) splitting the batch; default: all of them.

    Returns:
        A batched :class:`Solution`: ``x (B, n)``, ``s (B, m)``, ``lam (B, p)``,
        ``nu (B, m)``, ``info`` fields ``(B,)``; sharded over ``axis_name`` when the number
        of devices divides ``B`` (replicated otherwise).

    Raises:
        ValueError: as :func:`sharded_vmap`, and as :func:`solve` for shapes or dtypes.

    Examples:
        >>> import jax.numpy as jnp
        >>> import altdiff_jax as ad
        >>> problem = ad.QP(P=jnp.eye(2), q=jnp.array([[1.0, -1.0], [2.0, 0.5]]),
        ...                 G=jnp.eye(2), h=jnp.zeros((2, 2)))   # 2 lanes, P and G shared
        >>> sol = ad.solve_sharded(problem, in_axes=ad.QP(P=None, q=0, G=None, h=0))
        >>> (sol.x.round(3) + 0.0).tolist(), sol.info.status.tolist()
        ([[-1.0, 0.0], [-2.0, -0.5]], [0, 0])
    """
    options = resolve_options(options)
    mesh = _default_mesh() if mesh is None else mesh
    if isinstance(axis_name, list):
        axis_name = tuple(axis_name)
    return _solve_sharded_jit(problem, options, init, mesh=mesh, in_axes=in_axes, axis_name=axis_name)


def _solve_sharded_impl(problem, options, init, *, mesh, in_axes, axis_name):
    lane = lambda problem, options, init: solve(problem, options, init)  # noqa: E731
    mapped = sharded_vmap(lane, in_axes=(in_axes, None, 0), mesh=mesh, axis_name=axis_name)
    return mapped(problem, options, init)


_solve_sharded_jit = jax.jit(_solve_sharded_impl, static_argnames=("mesh", "in_axes", "axis_name"))
