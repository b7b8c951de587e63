"""Problem definitions and their trace-time validation."""

from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from jax.experimental import sparse as jsparse

from ._linalg import BoundRows, Dense, Operator
from ._sparse import ITERATIVE, MatrixFree, Sparse, stored_entries


class QP(NamedTuple):
    """Quadratic program ``min ½xᵀPx + qᵀx  s.t.  Ax = b,  Gx <= h,  lb <= x <= ub``.

    A pytree: any leaf may be batched with ``jax.vmap(..., in_axes=QP(P=None, q=0, ...))``.
    A block of constraints may be absent: ``A=b=None``, ``G=h=None``, ``lb=None`` (no
    lower bounds) or ``ub=None`` (no upper bounds). Entries of ``lb``/``ub`` may be
    ``-inf``/``inf`` for a side that is missing on some variables. Bounds are handled as
    a diagonal block (no dense rows), so prefer them to rows of G.

    ``P``, ``A`` and ``G`` may be ``jax.experimental.sparse.BCOO`` matrices (2-D, no
    batch or dense dimensions): the problem then runs on the sparse path, where nothing
    of size n × n, n × p or n × m is formed and every linear system is solved by
    conjugate gradients (see the guide "Sparse problems"). The gradient of a BCOO leaf
    is the gradient of its values (``jax.grad(..., allow_int=True)`` for a pytree that
    holds its integer indices). They may also be :class:`MatrixFree` operators, known
    only by their products with vectors (the same path; the gradient is that of their
    ``params``).

    ``P`` is used through its symmetric part ``(P + Pᵀ)/2`` and must be positive
    semidefinite. Nothing else is required of the data: a singular P, an LP (P = 0),
    rank-deficient or duplicated constraints all run; an unbounded or infeasible problem
    is reported by its status.

    Attributes:
        P: ``(n, n)`` quadratic cost (an array, a BCOO matrix or a :class:`MatrixFree`).
        q: ``(n,)`` linear cost.
        A: ``(p, n)`` equality matrix (an array, a BCOO matrix or a :class:`MatrixFree`), or None.
        b: ``(p,)`` equality right-hand side, or None.
        G: ``(m, n)`` inequality matrix (an array, a BCOO matrix or a :class:`MatrixFree`), or None.
        h: ``(m,)`` inequality right-hand side, or None.
        lb: ``(n,)`` lower bounds (entries may be ``-inf``), or None.
        ub: ``(n,)`` upper bounds (entries may be ``inf``), or None.

    Examples:
        >>> import jax.numpy as jnp
        >>> import altdiff_jax as ad
        >>> problem = ad.QP(P=jnp.eye(2), q=jnp.array([1.0, -1.0]), lb=jnp.zeros(2))
        >>> [name for name, leaf in problem._asdict().items() if leaf is None]  # absent
        ['A', 'b', 'G', 'h', 'ub']

        A batch of problems that differ in q only, for ``jax.vmap(ad.solve, in_axes=(in_axes,))``
        with ``q`` of shape ``(B, n)``:

        >>> in_axes = ad.QP(P=None, q=0, lb=None)
    """

    P: jax.Array
    q: jax.Array
    A: Optional[jax.Array] = None
    b: Optional[jax.Array] = None
    G: Optional[jax.Array] = None
    h: Optional[jax.Array] = None
    lb: Optional[jax.Array] = None
    ub: Optional[jax.Array] = None


class Constraints(NamedTuple):
    """Constraints ``Ax = b, Gx <= h, lb <= x <= ub``; an absent block has zero rows.

    ``lb`` and ``ub`` are ``(n,)`` when the problem has bounds (infinite entries for a
    missing side) and ``(0,)`` when it has none: that is a static property of the shapes.
    """

    A: Operator  # (p, n)
    b: jax.Array  # (p,)
    G: Operator  # (m, n)
    h: jax.Array  # (m,)
    lb: jax.Array  # (n,) or (0,)
    ub: jax.Array  # (n,) or (0,)

    @property
    def B(self) -> BoundRows:
        """The bound block's operator (the identity; no rows without bounds)."""
        return BoundRows(self.lb.shape[0], self.A.shape[1])

    def bound_rows(self) -> jax.Array:
        """``(n,)`` 1.0 where a variable has a finite bound, 0.0 where it is free: the
        weight of the bound block in every linear system ((0,) without bounds)."""
        return (jnp.isfinite(self.lb) | jnp.isfinite(self.ub)).astype(self.lb.dtype)


def _check_dtype(owner: str, name: str, found, dtype=None, reference: str = "P") -> None:
    if not jnp.issubdtype(found, jnp.floating):
        raise ValueError(f"{owner}.{name} must have a floating dtype, got {found}")
    if found not in (jnp.dtype("float32"), jnp.dtype("float64")):
        raise ValueError(f"{owner}.{name} has dtype {found}: only float32 and float64 are supported")
    if dtype is not None and found != dtype:
        raise ValueError(
            f"{owner}.{name} has dtype {found} but {owner}.{reference} has dtype {dtype}: "
            "all leaves must share one floating dtype"
        )


def _as_float_array(owner: str, name: str, value, dtype=None, reference: str = "P") -> jax.Array:
    array = jnp.asarray(value)
    _check_dtype(owner, name, array.dtype, dtype, reference)
    return array


def _as_sparse(owner: str, name: str, value: jsparse.BCOO, dtype=None, reference: str = "P") -> Sparse:
    """A ``BCOO`` matrix as a :class:`_sparse.Sparse` operator, its values checked as a
    dense leaf's would be."""
    if value.ndim != 2 or value.n_batch or value.n_dense:
        raise ValueError(
            f"{owner}.{name} must be a 2-D BCOO matrix without batch or dense dimensions, got "
            f"shape {value.shape} with n_batch={value.n_batch}, n_dense={value.n_dense}"
        )
    data = _as_float_array(owner, name, value.data, dtype, reference)
    row, column = value.indices[:, 0], value.indices[:, 1]
    inside = stored_entries(value)  # padding entries hold nothing (and get no gradient)
    return Sparse(jnp.where(inside, data, 0.0), jnp.where(inside, row, 0), jnp.where(inside, column, 0), value.shape)


def _as_matrix_free(owner: str, name: str, value: MatrixFree, dtype, reference: str = "P",
                    columns: Optional[int] = None) -> MatrixFree:
    """A :class:`_sparse.MatrixFree` checked at trace time: a 2-D shape (with ``columns``
    columns, when given), and products M x and Mᵀ y of the problem's dtype (``dtype``) and
    shapes."""
    if len(value.shape) != 2:
        raise ValueError(f"{owner}.{name} is a MatrixFree operator of shape {value.shape}, expected (rows, cols)")
    if columns is not None and value.shape[1] != columns:
        raise ValueError(f"{owner}.{name} has shape {value.shape}, expected (rows, {columns})")
    rows, cols = value.shape
    for product, function, size, expected in (("apply(params, x)", value.product, cols, rows),
                                              ("its transpose", value.transposed_product, rows, cols)):
        try:
            out = jax.eval_shape(function, jax.ShapeDtypeStruct((size,), dtype))
        except Exception as error:  # noqa: BLE001 - the user's function, named in the message
            raise ValueError(f"{owner}.{name}: {product} failed for a vector of shape ({size},) and dtype "
                             f"{jnp.dtype(dtype)}: {error}") from error
        if out.shape != (expected,):
            raise ValueError(f"{owner}.{name}: {product} returned shape {out.shape} for a vector of shape "
                             f"({size},), expected ({expected},) from its shape {value.shape}")
        _check_dtype(owner, name, out.dtype, dtype, reference)
    return value._replace(_dtype=dtype)


def _matrix(owner: str, name: str, value, dtype=None, reference: str = "P", sparse_ok: bool = False,
            columns: Optional[int] = None):
    """A matrix leaf: a float array, or (where ``sparse_ok``) a ``BCOO`` as :class:`Sparse`
    or a :class:`_sparse.MatrixFree` (with ``columns`` columns, when given)."""
    if isinstance(value, MatrixFree):
        if not sparse_ok:
            raise ValueError(f"{owner}.{name} is a MatrixFree operator; {owner} takes dense arrays only")
        return _as_matrix_free(owner, name, value, dtype, reference, columns)
    if isinstance(value, jsparse.BCOO):
        if not sparse_ok:
            raise ValueError(f"{owner}.{name} is a sparse BCOO matrix; {owner} takes dense arrays only")
        return _as_sparse(owner, name, value, dtype, reference)
    return _as_float_array(owner, name, value, dtype, reference)


def _operator(matrix) -> Operator:
    return matrix if isinstance(matrix, ITERATIVE) else Dense(matrix)


def _expect_shape(name: str, array: jax.Array, expected: tuple, meaning: str) -> None:
    if array.shape != expected:
        raise ValueError(f"{name} has shape {array.shape}, expected {expected} ({meaning})")


def validate_qp(problem: QP) -> tuple[Operator, jax.Array, Constraints]:
    """Check shapes and dtypes of a QP at trace time and fill in absent blocks.

    Returns:
        ``(P, q, constraints)`` with P, A, G as :class:`Dense` or :class:`_sparse.Sparse`
        operators and absent blocks replaced by zero-row arrays.

    Raises:
        ValueError: naming the argument and the shapes (or dtypes) that disagree.
    """
    if not isinstance(problem, QP):
        raise ValueError(f"problem must be an altdiff_jax.QP, got {type(problem).__name__}")
    if isinstance(problem.P, MatrixFree):  # its dtype is q's (its params may hold no floats)
        P = _matrix("QP", "P", problem.P, _as_float_array("QP", "q", problem.q).dtype, "q", sparse_ok=True,
                    columns=problem.P.shape[0])
    else:
        P = _matrix("QP", "P", problem.P, sparse_ok=True)
    if len(P.shape) != 2 or P.shape[0] != P.shape[1]:
        raise ValueError(f"QP.P must be a square matrix (n, n), got shape {P.shape}")
    n, dtype = P.shape[0], P.dtype
    q = _as_float_array("QP", "q", problem.q, dtype)
    _expect_shape("QP.q", q, (n,), f"n = {n} from QP.P of shape {P.shape}")
    source = f"QP.P of shape {P.shape}"
    A, b = constraint_block("QP", problem.A, problem.b, ("A", "b"), n, dtype, source, sparse_ok=True)
    G, h = constraint_block("QP", problem.G, problem.h, ("G", "h"), n, dtype, source, sparse_ok=True)
    lb, ub = bounds("QP", problem.lb, problem.ub, n, dtype, source)
    return _operator(P), q, Constraints(_operator(A), b, _operator(G), h, lb, ub)


def constraint_block(owner, matrix, rhs, names, n, dtype, source, reference="P", sparse_ok=False):
    """Validate one block (matrix, right-hand side) of ``owner``; zero rows if absent. With
    ``sparse_ok`` the matrix may be a ``BCOO`` (returned as :class:`_sparse.Sparse`) or a
    :class:`_sparse.MatrixFree`."""
    matrix_name, rhs_name = names
    if (matrix is None) != (rhs is None):
        given, missing = (matrix_name, rhs_name) if rhs is None else (rhs_name, matrix_name)
        raise ValueError(f"{owner}.{given} is given but {owner}.{missing} is None: give both or neither")
    if matrix is None:
        return jnp.zeros((0, n), dtype), jnp.zeros((0,), dtype)
    matrix = _matrix(owner, matrix_name, matrix, dtype, reference, sparse_ok, columns=n)
    rhs = _as_float_array(owner, rhs_name, rhs, dtype, reference)
    if len(matrix.shape) != 2 or matrix.shape[1] != n:
        raise ValueError(
            f"{owner}.{matrix_name} has shape {matrix.shape}, expected (rows, {n}) (n = {n} from {source})"
        )
    _expect_shape(
        f"{owner}.{rhs_name}", rhs, (matrix.shape[0],),
        f"one entry per row of {owner}.{matrix_name} of shape {matrix.shape}",
    )
    return matrix, rhs


def bounds(owner, lb, ub, n, dtype, source, reference="P") -> tuple[jax.Array, jax.Array]:
    """Validate ``lb``/``ub`` of ``owner``: ``(n,)`` each (a missing side filled with ∓inf),
    or ``(0,)`` each when both are None."""
    if lb is None and ub is None:
        return jnp.zeros((0,), dtype), jnp.zeros((0,), dtype)
    checked = []
    for name, value, fill in (("lb", lb, -jnp.inf), ("ub", ub, jnp.inf)):
        if value is None:
            checked.append(jnp.full((n,), fill, dtype))
            continue
        value = _as_float_array(owner, name, value, dtype, reference)
        _expect_shape(f"{owner}.{name}", value, (n,), f"one bound per variable, n = {n} from {source}")
        checked.append(value)
    return tuple(checked)


def data_gradients(x, lam, nu, q_bar, b_bar, h_bar, lb_bar=None, ub_bar=None, matrices=(True, True, True),
                   operators=(None, None, None)) -> QP:
    """All data gradients from the cotangents of q, b, h (and the bounds)
    (``docs/mathematics.md``, "Gradients of every parameter").

    P, A and G enter the KKT conditions only as ``dq = dP x + dAᵀλ + dGᵀν``,
    ``db = −dA x`` and ``dh = −dG x``, for every output (x, s, λ, ν, μ), hence the outer
    products below; the bounds enter directly. A cotangent given as None (not computed)
    gives None for every gradient that needs it.

    Args:
        x: ``(n,)`` solution; lam: ``(p,)``; nu: ``(m,)`` multipliers.
        q_bar, b_bar, h_bar: ``(n,)``, ``(p,)``, ``(m,)`` cotangents, or None.
        lb_bar, ub_bar: ``(n,)`` cotangents of the bounds, or None.
        matrices: whether the gradients of (P, A, G) are wanted (each costs an outer
            product); None for one not wanted.
        operators: the operators of (P, A, G), or None: a :class:`_sparse.Sparse` one's
            gradient is the cotangent of its values (the outer products on its pattern), a
            :class:`_sparse.MatrixFree` one's the cotangent of its params.

    Returns:
        :class:`QP` of gradients shaped like the data (``P`` symmetric).
    """
    P_bar = A_bar = G_bar = None
    want_P, want_A, want_G = matrices
    P, A, G = operators
    if q_bar is not None:
        if want_P:
            P_bar = _outer_sum(P, (0.5 * q_bar, x), (0.5 * x, q_bar))
        if b_bar is not None and want_A:
            A_bar = _outer_sum(A, (lam, q_bar), (-b_bar, x))
        if h_bar is not None and want_G:
            G_bar = _outer_sum(G, (nu, q_bar), (-h_bar, x))
    return QP(P_bar, q_bar, A_bar, b_bar, G_bar, h_bar, lb_bar, ub_bar)


def _outer_sum(operator, *terms):
    """Σ u vᵀ over the ``(u, v)`` terms: a dense array, or for a :class:`_sparse.Sparse`
    ``operator`` its values' cotangent (the sum on its sparsity pattern), for a
    :class:`_sparse.MatrixFree` its params'."""
    if isinstance(operator, ITERATIVE):
        return operator.outer_cotangent(*terms)
    return sum(jnp.outer(u, v) for u, v in terms)
