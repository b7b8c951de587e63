"""The ADMM iterate and the derivative seeds: the pytrees every kernel passes around."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from ._linalg import all_over, max_over


class Iterate(NamedTuple):
    """ADMM iterate, or (with a trailing column axis) its Jacobian.

    Attributes:
        x: ``(n,)`` primal, or ``(n, k)`` for a Jacobian with k columns.
        s: ``(m,)`` slack of ``Gx + s = h``.
        lam: ``(p,)`` equality multiplier λ.
        nu: ``(m,)`` inequality multiplier ν.
        z: ``(n,)`` the bound block's copy of x, projected on [lb, ub] (``(0,)`` without
            bounds).
        mu: ``(n,)`` bound multiplier μ (``(0,)`` without bounds).
    """

    x: jax.Array
    s: jax.Array
    lam: jax.Array
    nu: jax.Array
    z: jax.Array
    mu: jax.Array


class Seeds(NamedTuple):
    """Derivatives of the problem data with respect to the k carried parameters.

    Attributes:
        grad: ``(n, k)`` ∂_θ∇f; for a QP, the block of I_n on the columns of q.
        b: ``(p, k)`` ∂_θb; I_p on the columns of b.
        h: ``(m, k)`` ∂_θh; I_m on the columns of h.
        lb: ``(nb, k)`` ∂_θlb; I_n on the columns of lb (nb = n with bounds, else 0).
        ub: ``(nb, k)`` ∂_θub; I_n on the columns of ub.
    """

    grad: jax.Array
    b: jax.Array
    h: jax.Array
    lb: jax.Array
    ub: jax.Array


SEED_FIELDS = ("q", "b", "h", "lb", "ub")  # the parameters whose columns Alt-Diff carries


def parameter_seeds(sizes: tuple[int, ...], wrt: tuple[bool, ...], dtype) -> Seeds:
    """Seeds for the columns of (q, b, h, lb, ub), each block present only if carried.

    Args:
        sizes: rows of each block, ``(n, p, m, nb, nb)``.
        wrt: whether to carry columns for each of (q, b, h, lb, ub), in that column order.
    """
    widths = [size if carried else 0 for size, carried in zip(sizes, wrt)]
    k = sum(widths)
    blocks, offset = [], 0
    for rows, width in zip(sizes, widths):
        block = jnp.zeros((rows, k), dtype)
        if width:
            block = block.at[:, offset : offset + width].set(jnp.eye(rows, dtype=dtype))
        blocks.append(block)
        offset += width
    return Seeds(*blocks)


def zero_jacobian(z: Iterate, k: int) -> Iterate:
    """The paper's initial Jacobians: all zero, with k columns."""
    return Iterate(*(jnp.zeros(v.shape + (k,), v.dtype) for v in z))


def _nan_as_inf(magnitudes: jax.Array) -> jax.Array:
    """NaN entries as +∞: a norm must report a NaN entry, and XLA's CPU reductions can drop
    one (``_linalg.max_over``)."""
    return jnp.where(magnitudes != magnitudes, jnp.inf, magnitudes)


def inf_norm(v: jax.Array) -> jax.Array:
    """‖v‖∞ (+∞ with a NaN entry); 0 for an empty array (an absent block). Several norms at
    once: :func:`inf_norms`."""
    return max_over(_nan_as_inf(jnp.ravel(jnp.abs(v))))


def inf_norms(*groups) -> jax.Array:
    """``(len(groups),)``: :func:`inf_norm` of each group (an array, or a sequence of arrays
    taken together), all in one reduction over a zero-padded stack of their entries, where
    separate norms would be one reduction each (a smaller compiled program). For vectors:
    the stack holds ``len(groups)`` times the longest group's length."""
    flat = [jnp.ravel(g) if isinstance(g, jax.Array) else jnp.concatenate([jnp.ravel(a) for a in g])
            for g in groups]
    length = max(1, *(v.shape[0] for v in flat))
    return max_over(jnp.stack([jnp.pad(_nan_as_inf(jnp.abs(v)), (0, length - v.shape[0])) for v in flat]), axis=1)


def largest_relative_change(changes, values) -> jax.Array:
    """max over blocks b of ‖changes_b‖∞ / (1 + ‖values_b‖∞) (vectors; empty blocks: 0), in
    one reduction (:func:`inf_norms`)."""
    changes, values = list(changes), list(values)
    norms = inf_norms(*changes, *values).reshape(2, len(values))
    return jnp.max(norms[0] / (1 + norms[1]))


def all_finite(tree) -> jax.Array:
    """Whether every entry of every leaf is finite (True for an empty tree). Vectors are
    tested in one reduction over their entries; matrices each in their own (not copied)."""
    leaves = jax.tree_util.tree_leaves(tree)
    vectors = [jnp.ravel(leaf) for leaf in leaves if jnp.ndim(leaf) <= 1]
    tests = [all_over(jnp.ravel(jnp.isfinite(leaf))) for leaf in leaves if jnp.ndim(leaf) > 1]
    if vectors:
        tests.append(all_over(jnp.isfinite(jnp.concatenate(vectors))))
    return jnp.all(jnp.stack(tests or [jnp.bool_(True)]))
