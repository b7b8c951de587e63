"""Sparse matrices and the matrix-free solves of the sparse path.

A problem whose P, A or G is a ``jax.experimental.sparse.BCOO`` matrix or a
:class:`MatrixFree` operator runs on the sparse path: every BCOO matrix is a
:class:`Sparse` operator (coordinates and values, O(nnz) memory), a :class:`MatrixFree`
one is known by its products, and no system is ever assembled. The linear systems of
the engine, all of the form

    M = P + diag(d) + Aᵀ diag(w_A) A + Gᵀ diag(w_G) G          (``_linalg``, (*))

are solved by conjugate gradients on their products (:func:`conjugate_gradients`: a
preconditioned iteration of our own in a ``lax.while_loop``, wrapped in
``jax.lax.custom_linear_solve`` so that reverse mode through it, as the adjoint pullback
takes it, is a solve with the same operator; it reports its step count, which
``jax.scipy.sparse.linalg.cg`` does not, and needs no dependency beyond JAX),
preconditioned by M's diagonal (Jacobi, :func:`system_diagonal`): the ADMM x-update (``_xupdate.IterativeSolver``), and the
normal matrix of the reduced KKT system of polishing and of the ``kkt`` pullback
(:class:`NormalCG`), whose regularisation is then larger (``_kkt.regularization``) and
whose error iterative refinement removes.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import sparse as jsparse

from ._linalg import BoundRows, _columns


@jax.tree_util.register_pytree_node_class
class Sparse:
    """A sparse ``(rows, n)`` matrix by coordinates: entry k is ``data[k]`` at
    ``(row[k], column[k])``; repeated coordinates add up. Products are a gather and a
    segment sum, O(nnz) per column.

    A pytree whose leaves are the values and the coordinates (the shape is static), so a
    batch of matrices with one sparsity pattern is a ``vmap`` over ``data`` alone.
    """

    def __init__(self, data: jax.Array, row: jax.Array, column: jax.Array, shape: tuple[int, int]):
        self.data, self.row, self.column = data, row, column
        self.shape = tuple(int(s) for s in shape)

    def tree_flatten(self):
        return (self.data, self.row, self.column), self.shape

    @classmethod
    def tree_unflatten(cls, shape, children):
        return cls(*children, shape)

    @classmethod
    def from_bcoo(cls, matrix: jsparse.BCOO) -> "Sparse":
        """The matrix of a 2-D ``BCOO`` without batch or dense dimensions."""
        return cls(matrix.data, matrix.indices[:, 0], matrix.indices[:, 1], matrix.shape)

    @property
    def dtype(self):
        return self.data.dtype

    def mv(self, x: jax.Array) -> jax.Array:
        """M x, for ``x (n,)`` or ``(n, k)``."""
        return jax.ops.segment_sum(_columns(self.data, x) * x[self.column], self.row, num_segments=self.shape[0])

    def rmv(self, y: jax.Array) -> jax.Array:
        """Mᵀ y, for ``y (rows,)`` or ``(rows, k)``."""
        return jax.ops.segment_sum(_columns(self.data, y) * y[self.row], self.column, num_segments=self.shape[1])

    def merged(self) -> "Sparse":
        """The same matrix with one entry per coordinate (repeated coordinates summed), so
        that entry-wise norms and squares are the matrix's. The number of entries stays
        static: the slots left over hold zeros at (0, 0)."""
        size = self.data.shape[0]
        if size == 0:
            return self
        order = jnp.lexsort((self.column, self.row))
        row, column = self.row[order], self.column[order]
        new = (row[1:] != row[:-1]) | (column[1:] != column[:-1])
        slot = jnp.cumsum(jnp.concatenate([jnp.ones((1,), jnp.int32), new.astype(jnp.int32)])) - 1
        summed = jax.ops.segment_sum(self.data[order], slot, num_segments=size)
        row = jnp.zeros((size,), row.dtype).at[slot].set(row)
        column = jnp.zeros((size,), column.dtype).at[slot].set(column)
        return Sparse(summed, row, column, self.shape)

    def symmetric_part(self) -> "Sparse":
        """(M + Mᵀ)/2, merged (:meth:`merged`): P enters every system through it."""
        half = 0.5 * self.data
        both = Sparse(jnp.concatenate([half, half]), jnp.concatenate([self.row, self.column]),
                      jnp.concatenate([self.column, self.row]), self.shape)
        return both.merged()

    def diagonal(self) -> jax.Array:
        """``(n,)`` the diagonal of a square matrix."""
        on_diagonal = jnp.where(self.row == self.column, self.data, 0.0)
        return jax.ops.segment_sum(on_diagonal, self.row, num_segments=self.shape[0])

    def weighted_column_squares(self, w: jax.Array) -> jax.Array:
        """``(n,)`` the diagonal of Mᵀ diag(w) M (exact when no two entries share a
        coordinate)."""
        return jax.ops.segment_sum(w[self.row] * self.data**2, self.column, num_segments=self.shape[1])

    def scale(self, rows: jax.Array, columns: jax.Array) -> "Sparse":
        """diag(rows) M diag(columns)."""
        return Sparse(rows[self.row] * self.data * columns[self.column], self.row, self.column, self.shape)

    def times(self, factor: jax.Array) -> "Sparse":
        """factor · M for a scalar factor."""
        return Sparse(factor * self.data, self.row, self.column, self.shape)

    def column_norms(self) -> jax.Array:
        """``(n,)`` the ∞-norm of each column."""
        return jax.ops.segment_max(jnp.abs(self.data), self.column, num_segments=self.shape[1],
                                   indices_are_sorted=False).clip(0.0)

    def row_norms(self) -> jax.Array:
        """``(rows,)`` the ∞-norm of each row."""
        return jax.ops.segment_max(jnp.abs(self.data), self.row, num_segments=self.shape[0]).clip(0.0)

    def outer_cotangent(self, *terms: tuple[jax.Array, jax.Array]) -> "Sparse":
        """The cotangent of this matrix (as the pytree it is) for a loss whose gradient with
        respect to the dense matrix is Σ u vᵀ over the ``(u, v)`` terms: that sum on the
        sparsity pattern, and no cotangent for the coordinates."""
        data = sum(u[self.row] * v[self.column] for u, v in terms)
        return Sparse(data, _no_tangent(self.row), _no_tangent(self.column), self.shape)

    def all_finite(self) -> jax.Array:
        return jnp.all(jnp.isfinite(self.data))

    def dense(self):
        raise TypeError("a sparse operator is never formed densely: the sparse path is matrix-free")

    def weighted_gram(self, w):
        raise TypeError("a sparse operator's Gram matrix is never formed: the sparse path is matrix-free")


@jax.tree_util.register_pytree_node_class
class MatrixFree:
    """A matrix known only by its product with a vector, ``M x = apply(params, x)``: for
    P, A or G of a :class:`~altdiff_jax.QP` that is never stored (a stencil, a convolution,
    a low-rank factor model, an operator another library provides).

    A problem with one runs on the sparse path (see the guide "Sparse problems"): every
    linear system is solved by conjugate gradients on products with M and Mᵀ, and nothing
    of M's size is formed. Its entries are unknown, so M takes no part in the Ruiz
    equilibration (its rows keep unit scale) and the Jacobi preconditioner estimates the
    terms it adds from ``PRECONDITIONER_PROBES`` products with random sign vectors.

    A pytree whose leaves are ``params``: ``jax.grad`` of a solve with respect to a
    ``MatrixFree`` leaf is the gradient with respect to its ``params`` (the same
    structure, ``apply`` kept), and ``jax.vmap`` over a batch of ``params`` solves a batch
    of problems.

    Args:
        apply: ``apply(params, x)``: M x for ``x`` of shape ``(cols,)``, returning
            ``(rows,)``; linear in ``x``, traceable and differentiable by JAX, and reading
            the arrays it depends on from ``params`` only (an array it closes over gets no
            gradient, and a traced one leaks out of the solve). Define it once: a new
            function object (a lambda made at each call) retraces ``jit``.
        params: a pytree of the arrays ``apply`` reads (what gradients are taken of).
        shape: ``(rows, cols)``.
        transpose: optional ``transpose(params, y)``: Mᵀ y for ``y (rows,)``; by default
            ``jax.linear_transpose`` of ``apply``.
        symmetric: ``True`` when M is symmetric (read for P only). Otherwise P is used
            through its symmetric part ``(M + Mᵀ)/2``, at two products per use.

    Examples:
        >>> import jax.numpy as jnp
        >>> import altdiff_jax as ad
        >>> def differences(weight, x):  # weight · (x[i+1] − x[i])
        ...     return weight * (x[1:] - x[:-1])
        >>> G = ad.MatrixFree(differences, jnp.asarray(1.0), shape=(4, 5))
        >>> problem = ad.QP(P=jnp.eye(5), q=-jnp.arange(5.0), G=G, h=0.5 * jnp.ones(4))
        >>> ad.solve(problem).x.round(6).tolist()
        [1.0, 1.5, 2.0, 2.5, 3.0]
    """

    def __init__(self, apply: Callable, params: Any, shape: tuple[int, int], transpose: Optional[Callable] = None,
                 symmetric: bool = False, *, _symmetrized: bool = False, _row_scale: Optional[jax.Array] = None,
                 _column_scale: Optional[jax.Array] = None, _dtype=None):
        self.apply, self.params, self.transpose, self.symmetric = apply, params, transpose, bool(symmetric)
        self.shape = tuple(int(s) for s in shape)
        # The solver's operator: diag(row scale) M' diag(column scale), with M' = (M + Mᵀ)/2
        # where symmetrized (P), else M.
        self._symmetrized, self._row_scale, self._column_scale = _symmetrized, _row_scale, _column_scale
        self._dtype = None if _dtype is None else jnp.dtype(_dtype)  # the problem's, once validated

    def tree_flatten(self):
        children = (self.params, self._row_scale, self._column_scale)
        return children, (self.apply, self.shape, self.transpose, self.symmetric, self._symmetrized, self._dtype)

    @classmethod
    def tree_unflatten(cls, aux, children):
        apply, shape, transpose, symmetric, symmetrized, dtype = aux
        params, row_scale, column_scale = children
        return cls(apply, params, shape, transpose, symmetric, _symmetrized=symmetrized, _row_scale=row_scale,
                   _column_scale=column_scale, _dtype=dtype)

    def _replace(self, **changes) -> "MatrixFree":
        fields = dict(params=self.params, _symmetrized=self._symmetrized, _row_scale=self._row_scale,
                      _column_scale=self._column_scale, _dtype=self._dtype)
        fields.update(changes)
        params = fields.pop("params")
        return MatrixFree(self.apply, params, self.shape, self.transpose, self.symmetric, **fields)

    def __repr__(self) -> str:
        return f"MatrixFree({getattr(self.apply, '__name__', repr(self.apply))}, shape={self.shape})"

    @property
    def dtype(self):
        """The problem's dtype, set when the problem is validated (None before)."""
        return self._dtype

    def product(self, x: jax.Array) -> jax.Array:
        """M x for one vector ``x (cols,)`` (the user's M: no scaling)."""
        return self.apply(self.params, x)

    def transposed_product(self, y: jax.Array) -> jax.Array:
        """Mᵀ y for one vector ``y (rows,)`` (the user's M: no scaling)."""
        if self.transpose is not None:
            return self.transpose(self.params, y)
        (x,) = jax.linear_transpose(self.product, jnp.zeros((self.shape[1],), y.dtype))(y)
        return x

    def _core(self, v: jax.Array, transposed: bool) -> jax.Array:
        """M' v (or M'ᵀ v) for one vector, unscaled."""
        if self._symmetrized:
            return 0.5 * (self.product(v) + self.transposed_product(v))
        return self.transposed_product(v) if transposed else self.product(v)

    def _apply(self, v: jax.Array, transposed: bool) -> jax.Array:
        before, after = (self._row_scale, self._column_scale) if transposed else (self._column_scale, self._row_scale)

        def single(u):
            out = self._core(u if before is None else before * u, transposed)
            return out if after is None else after * out

        return single(v) if v.ndim == 1 else jax.vmap(single, in_axes=1, out_axes=1)(v)

    def mv(self, x: jax.Array) -> jax.Array:
        """M x, for ``x (cols,)`` or ``(cols, k)``."""
        return self._apply(x, transposed=False)

    def rmv(self, y: jax.Array) -> jax.Array:
        """Mᵀ y, for ``y (rows,)`` or ``(rows, k)``."""
        return self._apply(y, transposed=True)

    def symmetric_part(self) -> "MatrixFree":
        """(M + Mᵀ)/2 (M itself when ``symmetric``)."""
        return self if self.symmetric else self._replace(_symmetrized=True)

    def merged(self) -> "MatrixFree":
        return self

    def scale(self, rows: jax.Array, columns: jax.Array) -> "MatrixFree":
        """diag(rows) M diag(columns)."""
        row_scale = rows if self._row_scale is None else rows * self._row_scale
        column_scale = columns if self._column_scale is None else columns * self._column_scale
        return self._replace(_row_scale=row_scale, _column_scale=column_scale)

    def times(self, factor: jax.Array) -> "MatrixFree":
        """factor · M for a scalar factor."""
        ones = jnp.ones((self.shape[0],), jnp.result_type(factor))
        return self._replace(_row_scale=factor * (ones if self._row_scale is None else self._row_scale))

    def column_norms(self) -> jax.Array:
        """Zeros: the entries are unknown, and a zero norm keeps a column's Ruiz scale."""
        return jnp.zeros((self.shape[1],), self.dtype)

    def row_norms(self) -> jax.Array:
        """Zeros: the entries are unknown, and a zero norm keeps a row's Ruiz scale."""
        return jnp.zeros((self.shape[0],), self.dtype)

    def diagonal(self) -> jax.Array:
        """``(n,)`` the scale of a square M's rows for the Jacobi preconditioner, in place of
        its unknown diagonal: each row's 2-norm (at least its diagonal entry, and equal to
        it for a diagonal M), estimated as √mean((M z)²) over ``PRECONDITIONER_PROBES``
        random sign vectors z. An estimate of the diagonal itself (the mean of z ⊙ M z)
        is near zero for rows with large off-diagonal entries."""
        probes = _sign_probes(self.shape[1], self.dtype)
        return jnp.sqrt(jnp.mean(self.mv(probes) ** 2, axis=1))

    def weighted_column_squares(self, w: jax.Array) -> jax.Array:
        """``(cols,)`` an estimate of the diagonal of Mᵀ diag(w) M for w >= 0: the mean of
        (Mᵀ(√w ⊙ z))² over ``PRECONDITIONER_PROBES`` random sign vectors z (unbiased)."""
        probes = _sign_probes(self.shape[0], w.dtype)
        return jnp.mean(self.rmv(jnp.sqrt(w)[:, None] * probes) ** 2, axis=1)

    def outer_cotangent(self, *terms: tuple[jax.Array, jax.Array]) -> "MatrixFree":
        """The cotangent of this operator (its ``params``) for a loss whose gradient with
        respect to the matrix is Σ u vᵀ over the ``(u, v)`` terms: Σ the gradient of
        uᵀ M v with respect to ``params``."""
        def bilinear(params):
            return sum(jnp.vdot(u, self.apply(params, v)) for u, v in terms)

        return self._replace(params=jax.grad(bilinear, allow_int=True)(self.params))

    def dense(self):
        raise TypeError("a MatrixFree operator is never formed densely: it is known by its products")

    def weighted_gram(self, w):
        raise TypeError("a MatrixFree operator's Gram matrix is never formed: it is known by its products")


PRECONDITIONER_PROBES = 8
"""Random sign vectors the Jacobi preconditioner's estimate of a :class:`MatrixFree`
operator's diagonal terms averages over (each costs one product per system)."""


def _sign_probes(size: int, dtype) -> jax.Array:
    """``(size, PRECONDITIONER_PROBES)`` fixed random ±1 columns."""
    key = jax.random.key(0)
    return jax.random.rademacher(key, (size, PRECONDITIONER_PROBES), dtype=dtype)


def stored_entries(matrix: jsparse.BCOO) -> jax.Array:
    """``(nse,)`` which entries of a 2-D BCOO are in range: BCOO pads with out-of-range
    coordinates, whose entries hold nothing (and get no gradient)."""
    row, column = matrix.indices[:, 0], matrix.indices[:, 1]
    return (row >= 0) & (row < matrix.shape[0]) & (column >= 0) & (column < matrix.shape[1])


def _no_tangent(indices: jax.Array):
    """The cotangent of an integer leaf (JAX's ``float0`` zeros)."""
    return np.zeros(indices.shape, dtype=jax.dtypes.float0)


ITERATIVE = (Sparse, MatrixFree)
"""The operators that put a problem on the sparse path (solved by their products)."""


def is_sparse(*operators) -> bool:
    """Whether any of ``operators`` is :class:`Sparse` or :class:`MatrixFree` (the problem
    runs on the sparse path)."""
    return any(isinstance(op, ITERATIVE) for op in operators)


def column_squares(op, w: jax.Array) -> jax.Array:
    """``(n,)`` the diagonal of Mᵀ diag(w) M, for the operators a sparse-path problem may
    mix: :class:`Sparse`, :class:`MatrixFree` (estimated), a dense block, the bound block
    (the identity)."""
    if isinstance(op, ITERATIVE):
        return op.weighted_column_squares(w)
    if isinstance(op, BoundRows):
        return op.rmv(w)
    return jnp.sum(w[:, None] * op.dense() ** 2, axis=0)


def diagonal_of(P) -> jax.Array:
    """``(n,)`` the diagonal of a square operator (estimated for :class:`MatrixFree`)."""
    if isinstance(P, ITERATIVE):
        return P.diagonal()
    if hasattr(P, "diagonal") and not callable(P.diagonal):
        return P.diagonal
    return jnp.diagonal(P.dense())


class CGSettings(NamedTuple):
    """How far conjugate gradients run: ``tol`` on ‖M x − b‖ relative to ‖b‖, at most
    ``max_iter`` steps. With ``start_tol``, a solve from a guess also stops once the
    residual is ``start_tol`` times the guess's: a warm start from the last iterate then
    asks for more accuracy as the iterates settle (the outer residuals fall)."""

    tol: float
    max_iter: int
    start_tol: float = 0.0


def _pcg(matvec, rhs: jax.Array, inverse_diagonal: jax.Array, settings: CGSettings, guess: jax.Array):
    """Preconditioned conjugate gradients from ``guess``: ``(x, steps)``. The columns of a
    block ``(n, k)`` are k independent solves (step sizes per column) sharing each
    product with M, until the last one meets the tolerance."""
    def precondition(r):
        return _columns(inverse_diagonal, r) * r

    def dot(u, v):
        return jnp.sum(u * v, axis=0)

    rhs_norm = jnp.sqrt(dot(rhs, rhs))
    guess = jnp.where(rhs_norm > 0, guess, 0.0)  # M x = 0 is solved by x = 0
    r = rhs - matvec(guess)
    z = precondition(r)
    threshold = jnp.square(jnp.maximum(settings.tol * rhs_norm, settings.start_tol * jnp.sqrt(dot(r, r))))

    def going(state):
        _, r, _, _, steps = state
        return jnp.any(dot(r, r) > threshold) & (steps < settings.max_iter)

    def step(state):
        x, r, z, direction, steps = state
        rz = dot(r, z)
        product = matvec(direction)
        curvature = dot(direction, product)
        alpha = jnp.where(curvature > 0, rz / curvature, 0.0)
        x = x + alpha * direction
        r_new = r - alpha * product
        z_new = precondition(r_new)
        beta = jnp.where(rz > 0, dot(r_new, z_new) / rz, 0.0)
        return x, r_new, z_new, z_new + beta * direction, steps + 1

    x, _, _, _, steps = jax.lax.while_loop(going, step, (guess, r, z, z, jnp.int32(0)))
    return x, steps


def conjugate_gradients(matvec, rhs: jax.Array, inverse_diagonal: jax.Array, settings: CGSettings,
                        guess=None) -> jax.Array:
    """M⁻¹ rhs by Jacobi-preconditioned conjugate gradients (``rhs (n,)`` or ``(n, k)``),
    from ``guess`` (zero by default), to ``settings.tol`` relative to ‖rhs‖ (or, from a
    guess, ``settings.start_tol`` relative to the guess's residual).

    A linear solve to JAX (``jax.lax.custom_linear_solve``, M symmetric): reverse mode
    through it (the adjoint pullback) solves with M again instead of differentiating the
    iterations. Forward mode through a solve from a guess is not exact (a tangent is
    solved like the primal, from the stale guess, to ``start_tol``): the library
    differentiates its warm-started x-updates only in reverse mode."""
    start = jnp.zeros_like(rhs) if guess is None else guess
    primal = settings if guess is not None else settings._replace(start_tol=0.0)

    def solve(matvec, b):
        return _pcg(matvec, b, inverse_diagonal, primal, jax.lax.stop_gradient(start))[0]

    def transpose_solve(matvec, b):  # a cotangent: from zero, to ``tol`` relative to it
        return _pcg(matvec, b, inverse_diagonal, settings._replace(start_tol=0.0), jnp.zeros_like(b))[0]

    return jax.lax.custom_linear_solve(matvec, rhs, solve, transpose_solve, symmetric=True)


def system_matvec(P, d: jax.Array, A, w_A: jax.Array, G, w_G: jax.Array):
    """v ↦ (P + diag(d) + Aᵀdiag(w_A)A + Gᵀdiag(w_G)G) v, matrix-free."""
    def matvec(v):
        return (P.mv(v) + _columns(d, v) * v + A.rmv(_columns(w_A, v) * A.mv(v))
                + G.rmv(_columns(w_G, v) * G.mv(v)))
    return matvec


def system_diagonal(P, d: jax.Array, A, w_A: jax.Array, G, w_G: jax.Array) -> jax.Array:
    """``(n,)`` the diagonal of (*), the Jacobi preconditioner."""
    return diagonal_of(P) + d + column_squares(A, w_A) + column_squares(G, w_G)


NORMAL_CG = {4: CGSettings(1e-4, 2000), 8: CGSettings(1e-1, 5000)}
"""By item size, the conjugate-gradient settings of a :class:`NormalCG` solve: iterative
refinement of the reduced KKT system measures and removes what they leave, so a loose
inner tolerance costs little accuracy (float64, MPC at T 10³: 1e-1 takes 0.66× the time
of solve + gradient of 1e-2, the same gradient to 1e-15; on the paper's QP as BCOO the
gradient agrees with the dense path's to 1e-11 instead of 2e-12; 0.3 leaves the refinement
short: ``benchmarks/results/sparse.md``)."""


class NormalCG(NamedTuple):
    """(*) solved by conjugate gradients on its products: the normal matrix of the reduced
    KKT system on the sparse path. A :class:`_linalg.LinearSolver`; :meth:`build` makes one."""

    P: object
    d: jax.Array
    A: object
    w_A: jax.Array
    G: object
    w_G: jax.Array
    inverse_diagonal: jax.Array  # the Jacobi preconditioner, formed once for every solve

    @classmethod
    def build(cls, P, d: jax.Array, A, w_A: jax.Array, G, w_G: jax.Array) -> "NormalCG":
        return cls(P, d, A, w_A, G, w_G, 1.0 / system_diagonal(P, d, A, w_A, G, w_G))

    def solve(self, rhs: jax.Array) -> jax.Array:
        matvec = system_matvec(self.P, self.d, self.A, self.w_A, self.G, self.w_G)
        return conjugate_gradients(matvec, rhs, self.inverse_diagonal, NORMAL_CG[jnp.dtype(rhs.dtype).itemsize])
