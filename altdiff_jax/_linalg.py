"""Linear algebra of the engine: constraint operators and the factorisations they allow.

Design. Every matrix the loop touches (P, A, G) is an *operator* that knows its own
products (``mv``: M x, ``rmv``: Mᵀ y, for a vector or a block of columns), its dense
form (only for code that needs a matrix: a dense factorisation, the dense KKT system),
and its weighted Gram matrix Mᵀ diag(w) M. The type is a Python class, so every choice
between a structured and a dense algorithm is made once, at trace time:

* :class:`Dense`: any matrix; products are GEMV/GEMM, Gram matrices are dense.
* :class:`Diagonal`: a diagonal P (the sparsemax layers' 2I, an entropy's Hessian).
* :class:`RowVector`: a single equality row vᵀ (the simplex's 1ᵀ): rank-one Gram v vᵀ.
* ``_sparse.Sparse``: a sparse matrix by coordinates (the sparse path): products are a
  gather and a segment sum, and nothing is formed densely.

Bounds lb <= x <= ub are the identity, a diagonal block in every system: :class:`BoundRows`
gives them the products and Gram matrix of a constraint block (``mv``, ``rmv``,
``weighted_gram``), with no rows when a problem has no bounds.

Every linear system of the engine has the form

    M = P + diag(d) + Aᵀ diag(w_A) A + Gᵀ diag(w_G) G          (*)

(the ADMM x-update H(ρ) = P + σI + ρ(w·AᵀA + GᵀG + diag(f)), eq. 5a; the regularised
reduced KKT system of polishing and of the ``kkt`` strategy in its normal form). When P
is diagonal, A is at most one row and there is no G, (*) is a diagonal plus a rank-one
matrix and is solved in O(n) per column by Sherman–Morrison
(:class:`DiagonalPlusRankOne`); with a sparse operator it is solved by conjugate
gradients on its products (``_sparse``); otherwise it is assembled densely and factored
(:class:`Cholesky`), or, for the ADMM loop with a per-problem adaptive ρ, by a
generalised eigen-decomposition that serves every ρ without refactoring
(:class:`EigenFactor`). :func:`structured` says which applies.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Protocol

import jax
import jax.numpy as jnp
from jax.scipy.linalg import cho_solve, solve_triangular

# ---------------------------------------------------------------- backend-specific choices
#
# Every choice that depends on where the program runs is made here, at trace time:
#
# * ``on_cpu``: XLA's CPU backend, whose Cholesky and triangular solves are LAPACK calls
#   (OpenBLAS: a triangular solve with one vector runs on one thread), or another
#   backend (GPU, TPU);
# * ``column_major``: on CPU, factors pinned column-major, LAPACK's layout, by the
#   experimental ``jax.experimental.layout.with_layout_constraint`` where this JAX has it
#   (``LAYOUT_CONSTRAINTS``); elsewhere, or without it, XLA picks the layouts;
# * ``solves_by_blocks``: on CPU, large factors solved by column blocks (their matrix
#   products run on every core where LAPACK's triangular solve runs on one); elsewhere
#   the whole-matrix triangular solves;
# * ``_cholesky``: on CPU the Cholesky primitive itself (no zeroing of the upper
#   triangle); elsewhere ``jax.lax.linalg.cholesky``;
# * ``symmetric_transpose_times``: on CPU, Gram matrices from order
#   ``TRANSPOSED_GRAM_FROM`` multiply transposed copies of their operands; elsewhere the
#   product as written;
# * ``gathered_lanes``: how many lanes of a vmapped batch ``_batching.computed_where``
#   computes at a time: on CPU, where the work grows with the lanes, an eighth of the batch;
#   elsewhere the whole batch, every lane computing when one asks, as before gathering was
#   measured on CPU (on an accelerator, where a few small systems may cost about what many
#   do, chunks would run in sequence; not measured: no accelerator was at hand);
# * ``max_over``, ``all_over``, ``any_over``, ``count_over``: on CPU, a reduction of at
#   most ``FOLDED_ENTRIES`` entries over a long axis folded into short ones, so that XLA
#   compiles it as one kernel with what it reduces; elsewhere, or larger, the plain
#   reduction.
#
# The plain path (another backend, or no layout API) computes the same results up to
# round-off (a NaN aside: see ``max_over``): ``tests/test_linalg_fallback.py`` runs both on CPU.

try:  # experimental: other JAX releases lack it or spell it differently
    from jax.experimental.layout import Layout, with_layout_constraint
    Layout(major_to_minor=(1, 0))  # JAX >= 0.7; 0.6 has another Layout (a TypeError here)
except (ImportError, TypeError):  # pragma: no cover - depends on the JAX release
    Layout = with_layout_constraint = None

LAYOUT_CONSTRAINTS = with_layout_constraint is not None
"""Whether :func:`column_major` pins layouts on CPU (the experimental layout API is there).
Read at trace time; ``tests/test_linalg_fallback.py`` sets it False to run the fallback."""


def on_cpu() -> bool:
    """Whether the program being traced runs on XLA's CPU backend: JAX's default backend,
    which places the arrays of a computation unless told otherwise."""
    return jax.default_backend() == "cpu"


GATHERED_FRACTION = 8
"""On CPU, :func:`gathered_lanes` is 1/GATHERED_FRACTION of a batch (at least 8 lanes). Measured with
the batching constants in ``benchmarks/results/batch_constants.md`` (an eighth against a
quarter: 0.90× on the degenerate batch, 1.07× and 1.02× on the paper batches)."""


def lanes_gathered() -> bool:
    """Whether ``_batching.computed_where`` computes only the lanes that ask (on CPU), rather
    than every lane when one asks (see the backend-specific choices above)."""
    return on_cpu()


def gathered_lanes(axis_size: int) -> int:
    """How many lanes of a vmapped batch of ``axis_size`` ``_batching.computed_where``
    computes at a time (see the backend-specific choices above)."""
    if not lanes_gathered():
        return axis_size
    return min(axis_size, max(8, -(-axis_size // GATHERED_FRACTION)))


def solves_by_blocks(n: int) -> bool:
    """Whether :class:`Cholesky` keeps and solves an order-``n`` factor by column blocks:
    from ``BLOCKED_SOLVE_FROM`` on, on CPU (``benchmarks/results/blocked_cholesky.md``)."""
    return n >= BLOCKED_SOLVE_FROM and on_cpu()


REDUCTION_WIDTH = 32
"""XLA's CPU compiler rewrites a reduction over an axis longer than this into a windowed
reduction and a second reduction of its results (its tree-reduction rewrite), three
kernels with the one that computes the operand, where a shorter reduction is fused with
it into one; each kernel costs compile time, about 16 ms on average on a 2-core CPU
(``benchmarks/results/compile_profile.md``: 2.5 s for 157 kernels)."""

FOLDED_ENTRIES = 1 << 15
"""Reductions of at most this many entries (per lane under ``vmap``) are folded
(``max_over``, ``all_over``, ``any_over``, ``count_over``, ``sum_over``): where compile time is
what they cost. A larger one keeps XLA's rewrite, which runs its first stage on every core:
folding the equilibration's and the data checks' reductions too made solve + gradient
1.10–1.11× slower at n 1500 and 3000 (``benchmarks/results/folded_reductions_all_ab.md``)."""


def _folds(x: jax.Array, axis: int) -> bool:
    """Whether a reduction of ``x`` along ``axis`` is folded (see ``_folded_reduction``)."""
    return (x.ndim > 0 and x.shape[axis % x.ndim] > REDUCTION_WIDTH and x.size <= FOLDED_ENTRIES
            and on_cpu())


def _folded_reduction(reduction, x: jax.Array, axis: int, identity):
    """``reduction`` of ``x`` along ``axis``, for an associative reduction (max, all, a count, a sum):
    on CPU, for at most ``FOLDED_ENTRIES`` entries, the axis, padded with ``identity``, is
    folded into axes of at most ``REDUCTION_WIDTH`` entries, which XLA reduces in one kernel
    (the barrier keeps its simplifier from folding them back into one long axis before the
    rewrite). Otherwise ``reduction`` along ``axis``."""
    if not _folds(x, axis):
        return reduction(x, axis if x.ndim else None)
    axis = axis % x.ndim
    length = x.shape[axis]
    depth = 1
    while REDUCTION_WIDTH**depth < length:
        depth += 1
    inner = REDUCTION_WIDTH ** (depth - 1)
    outer = -(-length // inner)
    widths = [(0, 0, 0)] * x.ndim
    widths[axis] = (0, outer * inner - length, 0)
    folded = jax.lax.reshape(jax.lax.pad(x, jnp.asarray(identity, x.dtype), widths),
                             x.shape[:axis] + (outer,) + (REDUCTION_WIDTH,) * (depth - 1) + x.shape[axis + 1:])
    return reduction(jax.lax.optimization_barrier(folded), tuple(range(axis, axis + depth)))


def max_over(x: jax.Array, axis: int = -1, initial=0.0) -> jax.Array:
    """``jnp.max(x, axis, initial=initial)``; one compiled kernel on CPU up to
    ``FOLDED_ENTRIES`` entries (see ``REDUCTION_WIDTH``). A NaN entry may be dropped: XLA's
    CPU reductions were seen to drop one from a few thousand entries folded and about
    10 000 plain. A caller that must see it maps NaN to +∞ first, as ``_iterate.inf_norms``
    does; the infeasibility certificates need not (their size is such a norm, +∞ then)."""
    return _folded_reduction(lambda v, axes: jnp.max(v, axis=axes, initial=initial), x, axis, initial)


def all_over(x: jax.Array, axis: int = -1) -> jax.Array:
    """``jnp.all(x, axis)``; one compiled kernel on CPU up to ``FOLDED_ENTRIES`` entries
    (see ``REDUCTION_WIDTH``)."""
    return _folded_reduction(lambda v, axes: jnp.all(v, axis=axes), x, axis, True)


def any_over(x: jax.Array, axis: int = -1) -> jax.Array:
    """``jnp.any(x, axis)``; one compiled kernel on CPU up to ``FOLDED_ENTRIES`` entries
    (see ``REDUCTION_WIDTH``)."""
    return _folded_reduction(lambda v, axes: jnp.any(v, axis=axes), x, axis, False)


def count_over(x: jax.Array, axis: int = -1) -> jax.Array:
    """The number of True entries of ``x`` along ``axis`` (int32); one compiled kernel on
    CPU up to ``FOLDED_ENTRIES`` entries (see ``REDUCTION_WIDTH``)."""
    return _folded_reduction(lambda v, axes: jnp.sum(v, axis=axes, dtype=jnp.int32), x, axis, False)


def sum_over(x: jax.Array, axis: int = -1) -> jax.Array:
    """``jnp.sum(x, axis)``; one compiled kernel on CPU up to ``FOLDED_ENTRIES`` entries (see
    ``REDUCTION_WIDTH``), summed in blocks of ``REDUCTION_WIDTH`` (a different order than
    ``jnp.sum``'s, as accurate)."""
    return _folded_reduction(lambda v, axes: jnp.sum(v, axis=axes), x, axis, 0)


def inner(u: jax.Array, v: jax.Array) -> jax.Array:
    """``u @ v`` of two vectors by :func:`sum_over`: one kernel with the products, where
    XLA's CPU compiler makes a product of more than ``REDUCTION_WIDTH`` entries three."""
    return sum_over(u * v)


def packed_scalars(*scalars: jax.Array) -> jax.Array:
    """``scalars`` stacked into one vector behind an optimisation barrier, so that one kernel
    computes them all: XLA's CPU compiler fuses no sibling outputs, and each scalar kept
    apart (a field of a loop's carry) is a kernel of its own. Read them back by indexing
    where they are used, so that the reads fuse into their users."""
    return jax.lax.optimization_barrier(jnp.stack(jnp.broadcast_arrays(*scalars)))


OUTER_GRAM_ENTRIES = 1 << 22
"""Most entries (32 MiB in float64) of the row products a shared matrix's Gram matrices are
formed from (:class:`SharedDense`)."""


def transpose_times(matrix: jax.Array, y: jax.Array) -> jax.Array:
    """``matrixᵀ y`` for ``y (rows,)`` or ``(rows, k)``, contracting the matrix's first axis
    in place: written as ``matrix.T @ y``, XLA on CPU materialises the transpose inside the
    loop at every iteration (a copy of the whole matrix per iteration)."""
    return jax.lax.dot_general(matrix, y, (((0,), (0,)), ((), ())))


GRAM_SLABS = 4
"""Row slabs a large symmetric product is computed by (:func:`symmetric_transpose_times`):
0.65–0.72× the time of the whole product at n 1500–5000, within noise of 3–8 slabs; fewer
slabs are fewer operations to compile (``benchmarks/results/gram_slabs.md``)."""

GRAM_SLABS_FROM = 2000
"""Order from which :func:`symmetric_transpose_times` computes by slabs: the slabs lengthen the
first call's compilation by about a tenth, which the run time they save pays back within a
few calls at n 3000 but only after dozens at n 1500 (``benchmarks/results/gram_slabs.md``).
At n 1000–1500 they take 0.8x the time of the transposed copies used below this order
(``benchmarks/results/gram_layout.md``)."""


TRANSPOSED_GRAM_FROM = 256
"""Order from which :func:`symmetric_transpose_times` multiplies transposed copies of its
operands: XLA on CPU contracts two matrices along their first axes more slowly (the
copies take 0.77x the time at n 300, 0.54x at n 1500: ``benchmarks/results/gram_layout.md``)."""


def symmetric_transpose_times(matrix: jax.Array, weighted: jax.Array) -> jax.Array:
    """``matrixᵀ weighted`` (``(n, n)``) for two ``(rows, n)`` matrices whose product is
    symmetric (``weighted = diag(w) matrix``: a Gram matrix).

    From order ``GRAM_SLABS_FROM`` only the slabs on and above the diagonal are multiplied
    (row slab i of the product, from its diagonal block on: one matrix product each,
    about (1 + 1/s)/2 of the whole product's flops for s slabs) and the rest is filled in
    by transposing them; XLA has no symmetric rank-k product to call. Below it, on CPU
    from order ``TRANSPOSED_GRAM_FROM``, the whole product of the operands' transposed
    copies; otherwise the whole product as written."""
    n = matrix.shape[-1]
    if n < GRAM_SLABS_FROM and (n < TRANSPOSED_GRAM_FROM or not on_cpu()):
        return transpose_times(matrix, weighted)
    if n < GRAM_SLABS_FROM:
        # The barrier keeps XLA from folding the transposes back into the product.
        left, right = jax.lax.optimization_barrier((matrix.T, weighted.T))
        return left @ right.T
    width = -(-n // GRAM_SLABS)
    starts = list(range(0, n, width))
    left, right = matrix.T, weighted.T  # (n, rows): each slab's rows contiguous
    upper = [left[s:s + width] @ right[s:].T for s in starts]  # slab i: columns from s_i on
    slabs = []
    for i, s in enumerate(starts):
        below_diagonal = [upper[j][:, s - starts[j]:s - starts[j] + width].T for j in range(i)]
        slabs.append(jnp.concatenate([*below_diagonal, upper[i]], axis=1))
    return jnp.concatenate(slabs, axis=0)


def _columns(vector: jax.Array, like: jax.Array) -> jax.Array:
    """``vector (n,)`` shaped to broadcast against ``like``, ``(n,)`` or ``(n, k)``."""
    return vector if like.ndim == 1 else vector[:, None]


class Dense(NamedTuple):
    """A dense ``(rows, n)`` matrix."""

    matrix: jax.Array

    @property
    def shape(self) -> tuple[int, int]:
        return self.matrix.shape

    def mv(self, x: jax.Array) -> jax.Array:
        return self.matrix @ x

    def rmv(self, y: jax.Array) -> jax.Array:
        return transpose_times(self.matrix, y)

    def dense(self) -> jax.Array:
        return self.matrix

    def weighted_gram(self, w: jax.Array) -> jax.Array:
        """``(n, n)`` Mᵀ diag(w) M."""
        return symmetric_transpose_times(self.matrix, w[:, None] * self.matrix)

    def scale(self, rows: jax.Array, columns: jax.Array) -> "Dense":
        """diag(rows) M diag(columns)."""
        return type(self)(rows[:, None] * self.matrix * columns[None, :])

    def times(self, factor: jax.Array) -> "Dense":
        """factor · M for a scalar factor."""
        return type(self)(factor * self.matrix)

    def column_norms(self) -> jax.Array:
        """``(n,)`` the ∞-norm of each column."""
        return max_over(jnp.abs(self.matrix), axis=0)

    def row_norms(self) -> jax.Array:
        """``(rows,)`` the ∞-norm of each row."""
        return max_over(jnp.abs(self.matrix), axis=1)


class SharedDense(Dense):
    """A :class:`Dense` matrix shared by the lanes of a ``vmap``-ed batch whose Gram
    matrices are weighted per lane (G, when a batch shares it: polishing weighs its rows
    by each lane's active set).

    ``weighted_gram`` is then wᵀO, O the ``(rows, n²)`` products of M's rows with
    themselves (a loop invariant: XLA forms it once): under ``vmap`` one matrix product
    of the lanes' weights with O, whose ``(lanes, n, n)`` result LAPACK's Cholesky reads
    as it is, where Mᵀ(w·M) is one product too but lays the lanes' matrices out across
    its columns, and a transposing copy follows. Up to ``OUTER_GRAM_ENTRIES`` entries of O; the type is
    given at trace time, where ``vmap`` is visible (``_solve._forward``)."""

    __slots__ = ()

    def weighted_gram(self, w: jax.Array) -> jax.Array:
        rows, n = self.matrix.shape
        if rows * n * n > OUTER_GRAM_ENTRIES:
            return super().weighted_gram(w)
        outer = (self.matrix[:, :, None] * self.matrix[:, None, :]).reshape(rows, n * n)
        return (w @ outer).reshape(n, n)


class Diagonal(NamedTuple):
    """A square diagonal matrix diag(d), ``d (n,)``."""

    diagonal: jax.Array

    @property
    def shape(self) -> tuple[int, int]:
        return (self.diagonal.shape[0],) * 2

    def mv(self, x: jax.Array) -> jax.Array:
        return _columns(self.diagonal, x) * x

    rmv = mv

    def dense(self) -> jax.Array:
        return jnp.diag(self.diagonal)

    def weighted_gram(self, w: jax.Array) -> jax.Array:
        return jnp.diag(w * self.diagonal**2)

    def scale(self, rows: jax.Array, columns: jax.Array) -> "Diagonal":
        return Diagonal(rows * self.diagonal * columns)

    def times(self, factor: jax.Array) -> "Diagonal":
        return Diagonal(factor * self.diagonal)

    def column_norms(self) -> jax.Array:
        return jnp.abs(self.diagonal)


class RowVector(NamedTuple):
    """A single row vᵀ, shape ``(1, n)``; its Gram matrix v vᵀ is rank one."""

    v: jax.Array

    @property
    def shape(self) -> tuple[int, int]:
        return (1, self.v.shape[0])

    def mv(self, x: jax.Array) -> jax.Array:
        return (self.v @ x)[None]

    def rmv(self, y: jax.Array) -> jax.Array:
        return self.v * y[0] if y.ndim == 1 else jnp.outer(self.v, y[0])

    def dense(self) -> jax.Array:
        return self.v[None, :]

    def weighted_gram(self, w: jax.Array) -> jax.Array:
        return w[0] * jnp.outer(self.v, self.v)

    def scale(self, rows: jax.Array, columns: jax.Array) -> "RowVector":
        return RowVector(rows[0] * self.v * columns)

    def times(self, factor: jax.Array) -> "RowVector":
        return RowVector(factor * self.v)


class BoundRows:
    """The bound block lb <= x <= ub as a constraint block: the identity, ``(n, n)``
    when the problem has bounds and ``(0, n)`` when it has none (a static property of the
    shapes, as for an absent A or G). Code that handles the bound block goes through it and
    needs no case for a problem without bounds: ``mv`` then gives an empty vector and
    ``rmv`` zeros. Which variables actually have a finite bound is a row weight f
    (``_problem.Constraints.bound_rows``), as the active set is for G."""

    __slots__ = ("rows", "n")

    def __init__(self, rows: int, n: int):
        if rows not in (0, n):
            raise ValueError(f"a bound block has 0 or n = {n} rows, got {rows}")
        self.rows, self.n = rows, n

    @property
    def shape(self) -> tuple[int, int]:
        return (self.rows, self.n)

    def mv(self, x: jax.Array) -> jax.Array:
        """x restricted to the block's rows: x itself, or ``(0,)`` (``(0, k)``) without bounds."""
        return x if self.rows else x[:0]

    def rmv(self, y: jax.Array) -> jax.Array:
        """Iᵀy: y itself, or zeros ``(n,)`` (``(n, k)``) without bounds."""
        return y if self.rows else jnp.zeros((self.n, *y.shape[1:]), y.dtype)

    def assign(self, x: jax.Array, y: jax.Array) -> jax.Array:
        """x with the block's rows replaced by y: y itself, or x without bounds."""
        return y if self.rows else x

    def weighted_gram(self, w: jax.Array) -> jax.Array:
        """``(n, n)`` diag(w), zeros without bounds."""
        return jnp.diag(self.rmv(w))


class Operator(Protocol):
    """A matrix as the engine uses it: its products, its dense form and its weighted Gram
    matrix. :class:`Dense`, :class:`SharedDense`, :class:`Diagonal` and :class:`RowVector`
    implement it; a sparse or matrix-free operator implements the same methods, and the
    loop (``_admm``, ``_jacobian``, residuals and certificates) uses nothing else. Which
    factorisation a combination of operators allows is decided in one place,
    ``_xupdate.make_x_solver`` (the ADMM x-update) and :func:`factor_system` (polishing
    and the KKT pullback), from the operators' types."""

    @property
    def shape(self) -> tuple[int, int]: ...

    def mv(self, x: jax.Array) -> jax.Array:
        """M x, for ``x (n,)`` or a block of columns ``(n, k)``."""

    def rmv(self, y: jax.Array) -> jax.Array:
        """Mᵀ y, for ``y (rows,)`` or ``(rows, k)``."""

    def dense(self) -> jax.Array:
        """The ``(rows, n)`` matrix (dense factorisations and the dense KKT system only)."""

    def weighted_gram(self, w: jax.Array) -> jax.Array:
        """``(n, n)`` Mᵀ diag(w) M."""

    def scale(self, rows: jax.Array, columns: jax.Array) -> "Operator":
        """diag(rows) M diag(columns) (equilibration)."""

    def times(self, factor: jax.Array) -> "Operator":
        """factor · M for a scalar factor."""


class LinearSolver(Protocol):
    """A factorised (or otherwise invertible) square system: ``solve(rhs)`` is M⁻¹ rhs for
    ``rhs (n,)`` or ``(n, k)``. :class:`Cholesky`, :class:`ExplicitInverse`
    and :class:`DiagonalPlusRankOne` implement it; the ADMM
    x-update's solvers, which also follow ρ, are in ``_xupdate``."""

    def solve(self, rhs: jax.Array) -> jax.Array: ...


def structured(P: Operator, A: Operator, G: Operator) -> bool:
    """Whether systems (*) are diagonal plus rank one: P diagonal, A at most one
    :class:`RowVector` (or no equality), no general inequality rows."""
    equality_ok = isinstance(A, RowVector) or A.shape[0] == 0
    return isinstance(P, Diagonal) and equality_ok and G.shape[0] == 0


class DiagonalPlusRankOne(NamedTuple):
    """diag(d) + w v vᵀ, solved by Sherman–Morrison in O(n) per column.

    Attributes:
        d: ``(n,)`` positive diagonal.
        v: ``(n,)`` the rank-one vector (zeros for none).
        w: ``()`` its weight >= 0.
    """

    d: jax.Array
    v: jax.Array
    w: jax.Array

    def solve(self, rhs: jax.Array) -> jax.Array:
        # (D + w v vᵀ)⁻¹ r = D⁻¹r − u · w (vᵀD⁻¹r) / (1 + w vᵀu),  u = D⁻¹v
        y = rhs / _columns(self.d, rhs)
        u = self.v / self.d
        coefficient = self.w / (1.0 + self.w * (self.v @ u))
        return y - _columns(u, rhs) * (coefficient * (self.v @ y))


def column_major(matrix: jax.Array) -> jax.Array:
    """``matrix`` (``(..., n, n)``) stored column-major, as LAPACK reads and writes it.

    XLA picks the layout of a loop's state itself, and converts by an n × n transposing
    copy wherever a LAPACK call (Cholesky, triangular solve) meets a row-major array: for
    a factor carried by the solver's loop, once per termination check (18 MB at n 1500;
    the copies' cost is in ``benchmarks/results/profile.md``). A factor pinned
    column-major crosses the
    loops as LAPACK left it. Without the pin: the same values, with XLA's copies.

    A pinned array must not leave a ``jax.jit`` as one of its outputs: jax 0.10.2 then
    reports the default layout for it and the next computation reads its buffer
    transposed (``jax.jit(column_major)(M) + 0`` is Mᵀ). Factors never do: they live
    inside the program that made them, and ``jax.grad`` through ``jax.jit(solve)``, where
    the pullback's residuals cross between two programs, gives the gradient compiled
    whole (``tests/test_solve.py::test_a_large_problem_is_exact_through_the_blocked_factor_and_its_gradient_crosses_jit``).

    Only on CPU (``on_cpu``), and only with the experimental layout API
    (``LAYOUT_CONSTRAINTS``); elsewhere ``matrix`` unchanged."""
    if not (LAYOUT_CONSTRAINTS and on_cpu()):
        return matrix
    batch = tuple(range(matrix.ndim - 2))
    return with_layout_constraint(matrix, Layout(major_to_minor=(*batch, matrix.ndim - 1, matrix.ndim - 2)))


def _cholesky(matrix: jax.Array) -> jax.Array:
    """The lower Cholesky factor of a matrix symmetric by construction (every matrix (*) is:
    P enters through its symmetric part), stored column-major (``column_major``).

    The factorisation is handed ``matrix.T`` (it reads that one's lower triangle,
    ``matrix``'s upper one): on CPU the column-major storage LAPACK reads of ``matrix.T``
    is the row-major storage of ``matrix``, so XLA forms it in a streaming pass where
    ``matrix`` itself needs a transposing one. Every backend reads the same triangle and
    skips the symmetrising pass (the matrix is symmetric by construction).

    On CPU the Cholesky primitive is bound directly (``jax.lax.linalg.cholesky_p``,
    exported by the public ``jax.lax.linalg``), and the factor's strict upper triangle is
    left as LAPACK leaves it (the input's entries): every use of the factor is a
    triangular solve that reads the lower triangle only. ``jax.lax.linalg.cholesky`` gives
    the same lower triangle bit for bit and zeroes the upper one by a select, which by
    itself costs no pass (XLA fuses it into the select that NaNs a failed factorisation)
    but changes XLA's layouts where the factor meets the loops' state: the optimised
    solve + gradient of a dense QP then holds more n × n copies (25 instead of 19 at
    n 300, pinned layouts; 25 instead of 23 unpinned). Elsewhere the public
    ``jax.lax.linalg.cholesky``. A failed factorisation is all NaN."""
    if on_cpu():
        return column_major(jax.lax.linalg.cholesky_p.bind(matrix.T))
    return jax.lax.linalg.cholesky(matrix.T, symmetrize_input=False)


SOLVE_BLOCK = 256
"""Columns per block of a :class:`Cholesky` factor kept by blocks, at least (see
``MAX_SOLVE_BLOCKS``)."""

MAX_SOLVE_BLOCKS = 8
"""Most blocks of a factor: each block adds operations to every solve's graph, and so
compile time, which grows with the block count while run time stays within noise (the
measurement is in the history of this constant: ``git log -S MAX_SOLVE_BLOCKS``)."""

BLOCKED_SOLVE_FROM = 384
"""Order from which :class:`Cholesky` solves by blocks (below it, LAPACK's triangular solves
with the whole factor, as fast)."""


def _block_edges(n: int) -> list[tuple[int, int]]:
    width = max(SOLVE_BLOCK, -(-n // MAX_SOLVE_BLOCKS))
    edges = list(range(0, n, width)) + [n]
    return list(zip(edges[:-1], edges[1:]))


class Cholesky(NamedTuple):
    """A dense symmetric positive definite matrix by its lower Cholesky factor.

    The factor is LAPACK's (or the backend's) Cholesky of the whole matrix. On CPU from
    order ``BLOCKED_SOLVE_FROM`` (``solves_by_blocks``) it is then kept by column blocks
    (``_block_edges``; ``diagonal``: the triangular blocks L_kk, ``panels``: the blocks below
    them), for the solves: a solve runs block by block, a small triangular solve with L_kk
    then one matrix–vector product with the panel for all the rows below it (forward;
    the transposed products backward). XLA runs those products on every core, where a
    triangular solve with the whole factor and one right-hand side is one LAPACK call on
    one thread. Under the default threading, a factorisation and 36 solves from n 384 to
    3000 take 0.6–0.8× the time of the whole-matrix calls, and factoring by blocks as well
    (left-looking, one matrix product per block) is slower than LAPACK's multithreaded
    Cholesky (``benchmarks/results/blocked_cholesky.md``).

    Attributes:
        L: ``(n, n)`` the factor (lower triangle; the strict upper one is not read), or
            None when it is kept by blocks.
        diagonal: the ``(w_k, w_k)`` blocks L_kk (empty when ``L`` is kept whole).
        panels: the ``(n − e_k, w_k)`` blocks below them.
    """

    L: Optional[jax.Array]
    diagonal: tuple = ()
    panels: tuple = ()

    @classmethod
    def factor(cls, matrix: jax.Array) -> "Cholesky":
        """Kept by blocks where ``solves_by_blocks`` says so (on CPU from order
        ``BLOCKED_SOLVE_FROM``; :meth:`by_blocks`), whole otherwise."""
        L = _cholesky(matrix)
        return cls.by_blocks(L) if solves_by_blocks(matrix.shape[-1]) else cls(L)

    @classmethod
    def by_blocks(cls, L: jax.Array) -> "Cholesky":
        """The factor ``L`` kept by the column blocks of ``_block_edges``, at any order."""
        edges = _block_edges(L.shape[-1])
        diagonal = tuple(column_major(L[..., s:e, s:e]) for s, e in edges)
        panels = tuple(column_major(L[..., e:, s:e]) for s, e in edges[:-1])
        return cls(None, diagonal, panels)

    @property
    def order(self) -> int:
        return self.L.shape[-1] if self.L is not None else sum(block.shape[-1] for block in self.diagonal)

    @property
    def dtype(self):
        return (self.L if self.L is not None else self.diagonal[0]).dtype

    def solve(self, rhs: jax.Array) -> jax.Array:
        if self.L is not None:
            return cho_solve((self.L, True), rhs)
        # L y = rhs, block by block: y_k = L_kk⁻¹ r_k, then the rows below lose panel_k y_k.
        rest, y = rhs, []
        for k, block in enumerate(self.diagonal):
            w = block.shape[-1]
            y.append(solve_triangular(block, rest[:w], lower=True))
            if k < len(self.panels):
                rest = rest[w:] - self.panels[k] @ y[-1]
        # Lᵀ x = y, from the last block up: x_k = L_kk⁻ᵀ (y_k − panel_kᵀ x_below).
        x = [solve_triangular(self.diagonal[-1], y[-1], lower=True, trans=1)]
        for k in reversed(range(len(self.panels))):
            below = x[0] if len(x) == 1 else jnp.concatenate(x, axis=0)
            x.insert(0, solve_triangular(
                self.diagonal[k], y[k] - transpose_times(self.panels[k], below), lower=True, trans=1))
        return jnp.concatenate(x, axis=0)


class ExplicitInverse(NamedTuple):
    """A dense symmetric positive definite matrix by its inverse, formed from its Cholesky
    factor (L⁻¹ by one triangular solve, then L⁻ᵀL⁻¹): each solve is one matrix product.
    For the x-update of a vmapped batch of small problems, where a batched triangular
    solve runs lane by lane (``benchmarks/results/profile.md``) and a batched product does not
    (``_xupdate.make_x_solver``).

    Attributes:
        inverse: ``(n, n)`` the matrix's inverse.
    """

    inverse: jax.Array

    @classmethod
    def factor(cls, matrix: jax.Array) -> "ExplicitInverse":
        L = _cholesky(matrix)
        L_inverse = solve_triangular(L, jnp.eye(matrix.shape[0], dtype=matrix.dtype), lower=True)
        return cls(transpose_times(L_inverse, L_inverse))

    def solve(self, rhs: jax.Array) -> jax.Array:
        return self.inverse @ rhs


def assemble(P: Operator, d: jax.Array, A: Operator, w_A: jax.Array, G: Operator, w_G: jax.Array) -> jax.Array:
    """The dense ``(n, n)`` matrix (*) = P + diag(d) + Aᵀdiag(w_A)A + Gᵀdiag(w_G)G."""
    return P.dense() + jnp.diag(d) + A.weighted_gram(w_A) + G.weighted_gram(w_G)


def factor_system(P: Operator, d: jax.Array, A: Operator, w_A: jax.Array, G: Operator, w_G: jax.Array
                  ) -> LinearSolver:
    """Factor (*) with the cheapest exact method its structure allows.

    Args:
        P: ``(n, n)`` operator, positive semidefinite.
        d: ``(n,)`` diagonal term, positive where P + Aᵀ…A + Gᵀ…G is singular.
        A, w_A: ``(p, n)`` operator and ``(p,)`` row weights >= 0.
        G, w_G: ``(m, n)`` operator and ``(m,)`` row weights >= 0.

    Returns:
        A :class:`LinearSolver`: ``solve(rhs)`` for ``rhs (n,)`` or ``(n, k)``.
    """
    if structured(P, A, G):
        v = A.v if A.shape[0] else jnp.zeros_like(d)
        w = w_A[0] if A.shape[0] else jnp.zeros((), d.dtype)
        return DiagonalPlusRankOne(P.diagonal + d, v, w)
    return Cholesky.factor(assemble(P, d, A, w_A, G, w_G))


class EigenFactor(NamedTuple):
    """H(ρ) = c·(P̂ + σI) + ρ·C for every ρ > 0 from one factorisation.

    With B = P̂ + σI + C ≻ 0 (σ > 0 makes it so for every PSD P̂ and C) and the
    generalised eigenproblem C V = B V diag(μ), VᵀBV = I, μ ∈ [0, 1]:

        Vᵀ H(ρ) V = c(I − diag μ) + ρ diag μ,   so   H(ρ)⁻¹ = V diag(1 / (c + (ρ − c)μ)) Vᵀ.

    One O(n³) factorisation per problem then serves every iteration at any ρ for O(n²)
    (two matrix products), so ρ adapts per problem under ``vmap`` without refactoring,
    and the factor does not depend on the cost scale c or the linear cost: a batch
    sharing P, A, G shares it, and applies it to all lanes as one matrix product.

    Attributes:
        V: ``(n, n)`` B-orthonormal generalised eigenvectors.
        mu: ``(n,)`` generalised eigenvalues in [0, 1].
    """

    V: jax.Array
    mu: jax.Array

    @classmethod
    def factor(cls, P_hat_plus_shift: jax.Array, C: jax.Array) -> "EigenFactor":
        L = _cholesky(P_hat_plus_shift + C)
        L_inv_C = solve_triangular(L, C, lower=True)
        C_tilde = solve_triangular(L, L_inv_C.T, lower=True)  # L⁻¹ C L⁻ᵀ
        W, mu = jax.lax.linalg.eigh(0.5 * (C_tilde + C_tilde.T), symmetrize_input=False)
        V = solve_triangular(L.T, W, lower=False)  # L⁻ᵀ W
        return cls(V, jnp.clip(mu, 0.0, 1.0))

    def solve(self, rhs: jax.Array, c: jax.Array, rho: jax.Array) -> jax.Array:
        weights = 1.0 / (c + (rho - c) * self.mu)
        return self.V @ (_columns(weights, rhs) * transpose_times(self.V, rhs))
