"""Problem definitions and their trace-time validation."""

from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp


class QP(NamedTuple):
    """Quadratic program ``min ½xᵀPx + qᵀx  s.t.  Ax = b,  Gx <= h``.

    A pytree: any leaf may be batched with ``jax.vmap(..., in_axes=QP(P=None, q=0, ...))``.
    A block of constraints may be absent: ``A=b=None`` or ``G=h=None``.

    ``P`` is used through its symmetric part ``(P + Pᵀ)/2`` and must be positive
    semidefinite with ``P + AᵀA + GᵀG`` positive definite.

    Attributes:
        P: ``(n, n)`` quadratic cost.
        q: ``(n,)`` linear cost.
        A: ``(p, n)`` equality matrix, or None.
        b: ``(p,)`` equality right-hand side, or None.
        G: ``(m, n)`` inequality matrix, or None.
        h: ``(m,)`` inequality right-hand side, or None.
    """

    P: jax.Array
    q: jax.Array
    A: Optional[jax.Array] = None
    b: Optional[jax.Array] = None
    G: Optional[jax.Array] = None
    h: Optional[jax.Array] = None


class Constraints(NamedTuple):
    """Polyhedral constraints ``Ax = b, Gx <= h``; an absent block has zero rows."""

    A: jax.Array  # (p, n)
    b: jax.Array  # (p,)
    G: jax.Array  # (m, n)
    h: jax.Array  # (m,)


def _as_float_array(name: str, value, dtype=None) -> jax.Array:
    array = jnp.asarray(value)
    if not jnp.issubdtype(array.dtype, jnp.floating):
        raise ValueError(f"QP.{name} must have a floating dtype, got {array.dtype}")
    if dtype is not None and array.dtype != dtype:
        raise ValueError(
            f"QP.{name} has dtype {array.dtype} but QP.P has dtype {dtype}: "
            "all leaves must share one floating dtype"
        )
    return array


def _expect_shape(name: str, array: jax.Array, expected: tuple, meaning: str) -> None:
    if array.shape != expected:
        raise ValueError(f"QP.{name} has shape {array.shape}, expected {expected} ({meaning})")


def validate_qp(problem: QP) -> tuple[jax.Array, jax.Array, Constraints]:
    """Check shapes and dtypes of a QP at trace time and fill in absent blocks.

    Returns:
        ``(P, q, constraints)`` with absent blocks replaced by zero-row arrays.

    Raises:
        ValueError: naming the argument and the shapes (or dtypes) that disagree.
    """
    if not isinstance(problem, QP):
        raise ValueError(f"problem must be an altdiff_jax.QP, got {type(problem).__name__}")
    P = _as_float_array("P", problem.P)
    if P.ndim != 2 or P.shape[0] != P.shape[1]:
        raise ValueError(f"QP.P must be a square matrix (n, n), got shape {P.shape}")
    n, dtype = P.shape[0], P.dtype
    q = _as_float_array("q", problem.q, dtype)
    _expect_shape("q", q, (n,), f"n = {n} from QP.P of shape {P.shape}")
    A, b = _constraint_block(problem.A, problem.b, ("A", "b"), n, dtype, P.shape)
    G, h = _constraint_block(problem.G, problem.h, ("G", "h"), n, dtype, P.shape)
    return P, q, Constraints(A, b, G, h)


def _constraint_block(matrix, rhs, names, n, dtype, p_shape):
    matrix_name, rhs_name = names
    if (matrix is None) != (rhs is None):
        given, missing = (matrix_name, rhs_name) if rhs is None else (rhs_name, matrix_name)
        raise ValueError(f"QP.{given} is given but QP.{missing} is None: give both or neither")
    if matrix is None:
        return jnp.zeros((0, n), dtype), jnp.zeros((0,), dtype)
    matrix = _as_float_array(matrix_name, matrix, dtype)
    rhs = _as_float_array(rhs_name, rhs, dtype)
    if matrix.ndim != 2 or matrix.shape[1] != n:
        raise ValueError(
            f"QP.{matrix_name} has shape {matrix.shape}, expected (rows, {n}) "
            f"(n = {n} from QP.P of shape {p_shape})"
        )
    _expect_shape(
        rhs_name, rhs, (matrix.shape[0],), f"one entry per row of QP.{matrix_name} of shape {matrix.shape}"
    )
    return matrix, rhs


def data_gradients(x, lam, nu, q_bar, b_bar, h_bar) -> QP:
    """All six data gradients from the cotangents of q, b and h (math note §5).

    P, A and G enter the KKT conditions only as ``dq = dP x + dAᵀλ + dGᵀν``,
    ``db = −dA x`` and ``dh = −dG x``, for every output (x, s, λ, ν), hence the outer
    products below. A cotangent given as None (not computed) gives None for every
    gradient that needs it.

    Args:
        x: ``(n,)`` solution; lam: ``(p,)``; nu: ``(m,)`` multipliers.
        q_bar, b_bar, h_bar: ``(n,)``, ``(p,)``, ``(m,)`` cotangents, or None.

    Returns:
        :class:`QP` of gradients shaped like the data (``P`` symmetric).
    """
    P_bar = A_bar = G_bar = None
    if q_bar is not None:
        P_bar = 0.5 * (jnp.outer(q_bar, x) + jnp.outer(x, q_bar))
        if b_bar is not None:
            A_bar = jnp.outer(lam, q_bar) - jnp.outer(b_bar, x)
        if h_bar is not None:
            G_bar = jnp.outer(nu, q_bar) - jnp.outer(h_bar, x)
    return QP(P_bar, q_bar, A_bar, b_bar, G_bar, h_bar)
