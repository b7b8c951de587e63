"""The KKT system on an active set: solved exactly for polishing and for the ``kkt`` strategy.

On an active set (equalities, the active rows G_a of G, the active bounds B_a), the
solution and its derivative satisfy a linear system with the symmetric, indefinite matrix

    K = [ H    Aᵀ   G_aᵀ   B_aᵀ ]        H = ∇²f(x) (P for a QP)
        [ A    0    0      0    ]
        [ G_a  0    −E_G   0    ]        E_G = diag(1 − a): an inactive row reads −y_i = r_i,
        [ B_a  0    0      −E_B ]        which decouples it at a fixed shape (jit, vmap)

Following OSQP's polish, K is solved through its regularisation K_δ (δ added to the
H block, −δ to the active rows' diagonal), which is quasi-definite: eliminating y gives
the positive definite normal matrix

    H + δI + (AᵀA + G_aᵀG_a + diag(a_B)) / δ,

a system of the engine's form (``_linalg``): diagonal plus rank one for the structured
layers (O(n)), a Cholesky factor for dense data, conjugate gradients on its products on
the sparse path (``_sparse.NormalCG``, with a larger δ and more refinement steps). A few steps of iterative refinement against
the unregularised K then remove the O(δ) error, so the result is exact to round-off when
K is nonsingular, and a regularised least-squares answer when it is not (degenerate
active sets), judged afterwards by its residuals.

A factor can also serve a nearby active set (:class:`ReusableFactor`): K_δ of two active
sets differ by a rank-two term for each row that joins or leaves, so polishing's later
rounds, which usually move a row or two, update the first round's factor by the Woodbury
identity instead of assembling and factoring again; the refinement against the
unregularised K is the same. Only one dense float64 QP of
``_solve.REUSABLE_FACTOR_SIZE`` or more variables carries one.

In float32 the normal matrix of a dense problem is too ill-conditioned for Cholesky (its
condition grows like ‖C‖²/(δ·λ_min(H)), past 1/eps for a few dozen active rows), so there
a dense problem factors K_δ itself by LU with partial pivoting instead (condition about
‖K‖/δ); float64 and the structured layers keep the cheaper normal form.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import jax.scipy.linalg
import numpy as np

from ._batching import computed_where
from ._iterate import Iterate, Seeds, largest_relative_change
from ._jacobian import ActiveSet, active_set
from ._linalg import (BLOCKED_SOLVE_FROM, Cholesky, Dense, Operator, all_over, any_over, count_over, factor_system,
                      structured, symmetric_transpose_times, transpose_times)
from ._sparse import NormalCG, is_sparse
from ._xupdate import bound_diagonal
from ._problem import Constraints

REFINEMENT_STEPS = {4: 12, 8: 6}
"""Most iterative-refinement steps, by item size. Each step gains a factor of about δ·‖K⁻¹‖,
and float32's regularisation δ = 3.5e-4 is not small against a badly scaled problem's
spectrum (for a P scaled by 1e-3, 4 steps leave a 4e-3 relative error, 12 leave 4e-7);
float64 needs up to 6, for the uneven convergence described at ``STALL_FLOOR``."""


ROUND_OFF_ULPS = {4: 1, 8: 64}
"""By item size, a refinement correction this many ulps of the iterate or below is round-off.
Float64's corrections level off at a few ulps (1e-15 relative) after the first, and 64 ulps
stops there instead of making every lane of a batch pay for more steps of noise. Float32
keeps one ulp: 64 of its ulps (7.6e-6) would stop short of the 1e-6 accuracy of its
layers."""


ITERATIVE_REFINEMENT_STEPS = {4: 30, 8: 30}
"""``REFINEMENT_STEPS`` of the sparse path, whose regularisation is larger
(``ITERATIVE_REGULARIZATION``) and whose solves are inexact (``_sparse.NORMAL_CG``): each
step gains less."""

STALL_FLOOR = {4: float("inf"), 8: 1e-12}
"""By item size, a relative correction that stopped shrinking counts as round-off noise (and
ends refinement) only below this; above it refinement goes on to its step limit. The
regularised solve of the O(n) layers converges unevenly: on a sparsemax row with scores
±40 the multiplier's corrections can repeat at 3e-7 before falling to round-off, and
refinement must go on through them for the stationarity to reach 0. Float32 keeps the
plain shrink test (an infinite floor; a floor of 0 would run its solves to the 12-step
limit)."""


PREDICTED_STOP = {4: False, 8: True}
"""By item size, whether refinement also stops once the next correction, predicted from the
last three at the slower of their two rates (c_k · max(c_k / c_{k−1}, c_{k−1} / c_{k−2})),
is at round-off while the last one is below ``STALL_FLOOR``. The round-off noise of a large
system (a few 1e-14 for n 1500) shrinks by chance often enough to pass the 0.9× shrink
test, so without the prediction refinement runs to its step limit on noise; the slower of
the two rates keeps uneven convergence going, where the last rate alone would predict
round-off too early (a sparsemax row with large scores). Float32 uses the shrink test
alone."""


REUSED_CHANGES = 3
"""Most inequality rows (joining or leaving the active set) by which a system may differ from
the one its :class:`ReusableFactor` was built on; a changed bound always refactors. The
driver also lets a dense problem's first polish start once its active set moved by at most
this many rows (``_driver.run``), since polishing's later rounds correct them."""


GATHERED_GRAM_FROM = BLOCKED_SOLVE_FROM
"""Order from which a dense normal matrix is built from the x-update's Gram matrix C
(:func:`_gathered_normal_matrix`) instead of the products with all of A's and G's rows."""


def _gathered_normal_matrix(H: Operator, diagonal: jax.Array, constraints: Constraints, a: jax.Array,
                            delta: jax.Array, C: jax.Array) -> jax.Array:
    """H + diag(diagonal) + (AᵀA + G_aᵀG_a)/δ, the normal matrix, from C = AᵀA + GᵀG + diag(f).

    The products with all the rows of A and G cost 2(p + m)n² flops. With C at hand,
    AᵀA + G_aᵀG_a is C − diag(f) − G_iᵀG_i (i: the inactive rows) or AᵀA + G_aᵀG_a, and
    one of the two row sets has at most ⌈m/2⌉ rows, gathered into a block of that many
    rows (zeros past the set's size): about m·n² flops when the inactive rows are the
    fewer, (2p + m)n² when the active ones are. (Under ``vmap`` the ``lax.cond`` that
    picks runs both: about 2(p + m)n², as without C.)"""
    G = constraints.G.dense()
    half = -(-a.shape[0] // 2)

    def gram_of(rows_mask):
        rows = jnp.nonzero(rows_mask, size=half, fill_value=0)[0]
        used = jnp.arange(half) < count_over(rows_mask)
        block = jnp.where(used[:, None], G[rows], 0.0)
        return symmetric_transpose_times(block, block)

    active = a > 0
    f = bound_diagonal(constraints)
    gram = jax.lax.cond(  # AᵀA + G_aᵀG_a + diag(f), by whichever row set is smaller
        count_over(~active) <= half,
        lambda: C - gram_of(~active),
        lambda: constraints.A.weighted_gram(jnp.ones_like(constraints.b)) + gram_of(active) + jnp.diag(f),
    )
    return H.dense() + jnp.diag(diagonal - f / delta) + gram / delta


ITERATIVE_REGULARIZATION = {4: 1e-3, 8: 1e-4}
"""By item size, δ of the sparse path's regularised system, whose normal matrix conjugate
gradients solve: their iterations grow with its condition, about ‖A‖²/δ over H's smallest
eigenvalue, and each refinement step gains a factor of about δ·‖K⁻¹‖."""


def regularization(dtype, iterative: bool = False) -> float:
    """δ of the regularised system: √eps, 1.5e-8 in float64 and 3.5e-4 in float32,
    so that the normal matrix stays well within the dtype's range; on the sparse path
    (``iterative``) ``ITERATIVE_REGULARIZATION``."""
    if iterative:
        return ITERATIVE_REGULARIZATION[jnp.dtype(dtype).itemsize]
    return float(jnp.finfo(dtype).eps) ** 0.5


class KKTVector(NamedTuple):
    """A right-hand side or solution of the reduced KKT system: ``x (n,)``, and one entry
    per row: ``eq (p,)``, ``ineq (m,)``, ``bound (nb,)``."""

    x: jax.Array
    eq: jax.Array
    ineq: jax.Array
    bound: jax.Array

    def __add__(self, other: "KKTVector") -> "KKTVector":  # type: ignore[override]
        return KKTVector(*(a + b for a, b in zip(self, other)))

    def __sub__(self, other: "KKTVector") -> "KKTVector":
        return KKTVector(*(a - b for a, b in zip(self, other)))


def _normal_solve(constraints: Constraints, solve_normal, a, a_B, delta, r: KKTVector) -> KKTVector:
    """K_δ⁻¹ r on the active set (``a``, ``a_B``) by eliminating y: ``solve_normal`` applies
    the inverse of the normal matrix H + δI + (AᵀA + G_aᵀG_a + diag(a_B)) / δ."""
    A, G, B = constraints.A, constraints.G, constraints.B
    rhs = r.x + A.rmv(r.eq) / delta + G.rmv(a * r.ineq) / delta + B.rmv(a_B * r.bound) / delta
    x = solve_normal(rhs)
    eq = (A.mv(x) - r.eq) / delta
    ineq = jnp.where(a > 0, (G.mv(x) - r.ineq) / delta, -r.ineq)
    bound = jnp.where(a_B > 0, (B.mv(x) - r.bound) / delta, -r.bound)
    return KKTVector(x, eq, ineq, bound)


class ReusableFactor(NamedTuple):
    """The Cholesky factor of the normal matrix on one active set (the base: rows ``a``,
    bounds ``a_B``) and the Woodbury terms by which it solves K_δ on a set a few inequality
    rows away (:meth:`ReducedKKT.nearby`, at most ``REUSED_CHANGES`` rows).

    A row i joining the set changes K_δ by ĝ_i e_iᵀ + e_i ĝ_iᵀ + (1 − δ) e_i e_iᵀ (ĝ_i: row i
    of G in the x block, e_i: its multiplier's entry); one leaving, by the negative. With
    U = [ĝ_1 … ĝ_k, e_1 … e_k] the new matrix is K_δ + U S Uᵀ, and

        (K_δ + U S Uᵀ)⁻¹ = K_δ⁻¹ − Z (S⁻¹ + UᵀZ)⁻¹ Uᵀ K_δ⁻¹,   Z = K_δ⁻¹ U.

    The update is made in K_δ's quasi-definite space, where the capacitance S⁻¹ + UᵀZ has
    entries of order one: the same change of the normal matrix (± g_i g_iᵀ/δ) would, for a
    row that leaves, cancel terms of order 1/δ and leave refinement slow to converge.

    Attributes:
        base: the Cholesky factor of the base's normal matrix.
        a: ``(m,)`` 1.0 on the inequalities active in the base.
        a_B: ``(nb,)`` 1.0 on the bounds active in the base.
        G_rows: ``(n, k)`` ĝ of the changed rows (a zero column on a free slot).
        selector: ``(m, k)`` e of the changed rows (a zero column on a free slot).
        Z: K_δ⁻¹ U, blocks with ``2k`` columns.
        inverse_capacitance: ``(2k, 2k)`` (S⁻¹ + UᵀZ)⁻¹.
    """

    base: Cholesky
    a: jax.Array
    a_B: jax.Array
    G_rows: jax.Array
    selector: jax.Array
    Z: KKTVector
    inverse_capacitance: jax.Array

    @classmethod
    def unchanged(cls, base: Cholesky, a: jax.Array, a_B: jax.Array, p: int, slots: int) -> "ReusableFactor":
        """The base itself, with ``slots`` free slots."""
        n, m, dtype = base.order, a.shape[0], a.dtype
        Z = KKTVector(*(jnp.zeros((size, 2 * slots), dtype) for size in (n, p, m, a_B.shape[0])))
        return cls(base, a, a_B, jnp.zeros((n, slots), dtype), jnp.zeros((m, slots), dtype), Z,
                   jnp.eye(2 * slots, dtype=dtype))

    def _base_solve(self, constraints: Constraints, delta, r: KKTVector) -> KKTVector:
        return _normal_solve(constraints, self.base.solve, self.a, self.a_B, delta, r)

    def _u_transpose(self, w: KKTVector) -> jax.Array:
        return jnp.concatenate([transpose_times(self.G_rows, w.x), transpose_times(self.selector, w.ineq)])

    def updated(self, constraints: Constraints, delta, selector: jax.Array, joins: jax.Array) -> "ReusableFactor":
        """The base updated for the rows in ``selector`` (``(m, k)``, zero columns on free
        slots), each joining the set where ``joins`` and leaving it elsewhere."""
        n, p, slots, dtype = self.base.order, constraints.b.shape[0], selector.shape[1], selector.dtype
        used = any_over(selector > 0, axis=0)
        G_rows = constraints.G.rmv(selector)
        zeros = jnp.zeros((n, slots), dtype)
        U = KKTVector(jnp.concatenate([G_rows, zeros], axis=1), jnp.zeros((p, 2 * slots), dtype),
                      jnp.concatenate([jnp.zeros_like(selector), selector], axis=1),
                      jnp.zeros((self.a_B.shape[0], 2 * slots), dtype))
        Z = jax.vmap(lambda column: self._base_solve(constraints, delta, column), in_axes=1, out_axes=1)(U)
        # S⁻¹ per slot: sign · [[−(1 − δ), 1], [1, 0]] for a used slot, the identity for a free one.
        sign = jnp.where(joins, 1.0, -1.0).astype(dtype)
        corner = jnp.where(used, -sign * (1.0 - delta), 1.0)
        S_inverse = jnp.block([[jnp.diag(corner), jnp.diag(jnp.where(used, sign, 0.0))],
                               [jnp.diag(jnp.where(used, sign, 0.0)), jnp.diag(jnp.where(used, 0.0, 1.0))]])
        update = self._replace(G_rows=G_rows, selector=selector, Z=Z)
        capacitance = S_inverse + update._u_transpose(Z)
        return update._replace(inverse_capacitance=jnp.linalg.inv(capacitance))

    def solve_regularized(self, constraints: Constraints, delta, r: KKTVector) -> KKTVector:
        """K_δ⁻¹ r on the updated set."""
        w = self._base_solve(constraints, delta, r)
        c = self.inverse_capacitance @ self._u_transpose(w)
        return KKTVector(*(v - Zb @ c for v, Zb in zip(w, self.Z)))


class _LU(NamedTuple):
    """LU factors of the dense regularised K_δ (float32 dense problems)."""

    lu: jax.Array
    pivots: jax.Array


def _regularized_lu(H: Operator, constraints: Constraints, a, a_B, delta) -> _LU:
    """Assemble K_δ densely (rows in KKTVector order) and factor it by LU."""
    A, G = constraints.A.dense(), constraints.G.dense()
    n, p = H.shape[0], A.shape[0]
    dtype = a.dtype
    # An inactive row reads −y_i = r_i; an active one G_i x − δ y_i = r_i.
    row_diagonal = jnp.concatenate([jnp.full((p,), delta, dtype), delta * a + (1.0 - a), delta * a_B + (1.0 - a_B)])
    C = jnp.concatenate([A, a[:, None] * G, a_B[:, None] * jnp.eye(*constraints.B.shape, dtype=dtype)])
    K = jnp.block([[H.dense() + delta * jnp.eye(n, dtype=dtype), C.T], [C, -jnp.diag(row_diagonal)]])
    return _LU(*jax.scipy.linalg.lu_factor(K))


class ReducedKKT(NamedTuple):
    """K on an active set, with the factor of its regularisation (see the module docstring).

    Attributes:
        H: ``(n, n)`` operator, the Hessian of the objective.
        constraints: the constraints.
        a: ``(m,)`` 1.0 on active inequalities.
        a_B: ``(nb,)`` 1.0 on active bounds.
        delta: ``()`` the regularisation δ.
        factor: how K_δ is solved: a factor of the normal matrix (Cholesky, or diagonal
            plus rank one), a :class:`ReusableFactor`, LU factors of K_δ itself, or
            conjugate gradients on the normal matrix (``_sparse.NormalCG``).
    """

    H: Operator
    constraints: Constraints
    a: jax.Array
    a_B: jax.Array
    delta: jax.Array
    factor: object

    @staticmethod
    def _weights(constraints: Constraints, active: ActiveSet, H: Optional[Operator] = None):
        dtype = constraints.b.dtype
        a = active.inequality.astype(dtype)
        a_B = (active.upper | active.lower).astype(dtype)
        iterative = is_sparse(H, constraints.A, constraints.G)
        return a, a_B, jnp.asarray(regularization(dtype, iterative), dtype)

    @classmethod
    def with_factor(cls, H: Operator, constraints: Constraints, active: ActiveSet, factor) -> "ReducedKKT":
        """The system on ``active`` with a factor that ``build`` computed before."""
        return cls(H, constraints, *cls._weights(constraints, active, H), factor)

    @classmethod
    def build(cls, H: Operator, constraints: Constraints, active: ActiveSet, reusable: bool = False,
              constraint_gram: Optional[jax.Array] = None) -> "ReducedKKT":
        """Factor the system on ``active``. ``reusable`` (a dense float64 system): keep the
        factor as a :class:`ReusableFactor`, which :meth:`nearby` can update.
        ``constraint_gram``: the x-update's C = AᵀA + GᵀG + diag(f), if known; from order
        ``GATHERED_GRAM_FROM`` a dense normal matrix is then built from it
        (:func:`_gathered_normal_matrix`)."""
        dtype = constraints.b.dtype
        n, p = H.shape[0], constraints.b.shape[0]
        a, a_B, delta = cls._weights(constraints, active, H)
        diagonal = delta + constraints.B.rmv(a_B / delta)
        if is_sparse(H, constraints.A, constraints.G):
            if reusable:
                raise TypeError("a factor of the sparse path is not reusable")
            return cls(H, constraints, a, a_B, delta, NormalCG.build(
                H, diagonal, constraints.A, jnp.full((p,), 1.0 / delta, dtype), constraints.G, a / delta))
        if dtype == jnp.float32 and not structured(H, constraints.A, constraints.G):
            return cls(H, constraints, a, a_B, delta, _regularized_lu(H, constraints, a, a_B, delta))
        gathered = (constraint_gram is not None and n >= GATHERED_GRAM_FROM and a.shape[0] > 0
                    and isinstance(H, Dense) and isinstance(constraints.G, Dense))
        if gathered:
            factor = Cholesky.factor(_gathered_normal_matrix(H, diagonal, constraints, a, delta, constraint_gram))
        else:
            factor = factor_system(
                H, diagonal, constraints.A, jnp.full((p,), 1.0 / delta, dtype), constraints.G, a / delta
            )
        if reusable:
            if not isinstance(factor, Cholesky):
                raise TypeError(f"only a dense Cholesky factor is reusable, got {type(factor).__name__}")
            factor = ReusableFactor.unchanged(factor, a, a_B, p, REUSED_CHANGES)
        return cls(H, constraints, a, a_B, delta, factor)

    @classmethod
    def reusable(cls, constraints: Constraints, active: ActiveSet, factor: "ReusableFactor") -> jax.Array:
        """Whether ``factor``'s base can serve the system on ``active`` (:meth:`nearby`)."""
        a, a_B, _ = cls._weights(constraints, active)
        return (count_over(a != factor.a) <= REUSED_CHANGES) & all_over(a_B == factor.a_B)

    @classmethod
    def nearby(cls, H: Operator, constraints: Constraints, active: ActiveSet, factor: "ReusableFactor"
               ) -> "ReducedKKT":
        """The system on ``active``, solved by ``factor``'s base updated for the rows that
        differ (:meth:`ReusableFactor.updated`). Valid where :meth:`reusable` holds."""
        a, a_B, delta = cls._weights(constraints, active, H)
        if a.shape[0] == 0:  # no inequality rows: only bounds change, and those refactor
            return cls(H, constraints, a, a_B, delta, factor)
        changed = a != factor.a
        rows = jnp.nonzero(changed, size=REUSED_CHANGES, fill_value=0)[0]
        used = jnp.arange(REUSED_CHANGES) < count_over(changed)
        selector = jax.nn.one_hot(rows, a.shape[0], dtype=a.dtype).T * used  # (m, slots)
        return cls(H, constraints, a, a_B, delta, factor.updated(constraints, delta, selector, a[rows] > 0))

    def apply(self, w: KKTVector) -> KKTVector:
        """K w (unregularised)."""
        A, G, B = self.constraints.A, self.constraints.G, self.constraints.B
        x = self.H.mv(w.x) + A.rmv(w.eq) + G.rmv(self.a * w.ineq) + B.rmv(self.a_B * w.bound)
        bound = self.a_B * B.mv(w.x) - (1.0 - self.a_B) * w.bound
        return KKTVector(x, A.mv(w.x), self.a * G.mv(w.x) - (1.0 - self.a) * w.ineq, bound)

    def _solve_regularized(self, r: KKTVector) -> KKTVector:
        if isinstance(self.factor, _LU):
            sizes = [v.shape[0] for v in r]
            w = jax.scipy.linalg.lu_solve((self.factor.lu, self.factor.pivots), jnp.concatenate(list(r)))
            return KKTVector(*jnp.split(w, np.cumsum(sizes)[:-1].tolist()))
        if isinstance(self.factor, ReusableFactor):
            return self.factor.solve_regularized(self.constraints, self.delta, r)
        return _normal_solve(self.constraints, self.factor.solve, self.a, self.a_B, self.delta, r)

    def solve(self, r: KKTVector) -> KKTVector:
        """K⁻¹ r (see :meth:`solve_and_change`)."""
        return self.solve_and_change(r)[0]

    def solve_and_change(self, r: KKTVector, base: Optional[KKTVector] = None) -> tuple[KKTVector, jax.Array]:
        """K⁻¹ r by the regularised factor and iterative refinement, with the relative size
        of the last refinement correction (round-off when the refinement converged). With
        ``base``, the solution is a correction of it, and sizes are relative to the
        corrected point, base + K⁻¹ r.

        Refinement stops early, once each block's correction is at round-off (‖Δw_b‖∞ <=
        k eps (1 + ‖w_b‖∞), k from ``ROUND_OFF_ULPS``), or no longer shrinks (by 0.9× a step)
        while below ``STALL_FLOOR`` (round-off noise), or, in float64, the next correction
        predicted from the last three is at round-off (``PREDICTED_STOP``): a
        well-conditioned system is done in one or two steps, and under ``vmap`` the batch
        runs only as many steps as its slowest lane needs."""
        dtype = self.delta.dtype
        steps = ITERATIVE_REFINEMENT_STEPS if isinstance(self.factor, NormalCG) else REFINEMENT_STEPS
        limit = steps[jnp.dtype(dtype).itemsize]
        eps = ROUND_OFF_ULPS[jnp.dtype(dtype).itemsize] * jnp.finfo(dtype).eps

        def refine(state):
            # Step -1 is the plain solve from w = 0 (K_δ⁻¹ r exactly); it sets no sizes, so
            # that the first test after it passes. One solve site serves every step.
            step, w, change, previous, before = state
            correction = self._solve_regularized(r - self.apply(w))
            w = w + correction
            point = w if base is None else w + base
            first = step < 0
            sizes = (jnp.where(first, change, largest_relative_change(correction, point)),
                     jnp.where(first, previous, change), jnp.where(first, before, previous))
            return (step + 1, w, *sizes)

        floor = STALL_FLOOR[jnp.dtype(dtype).itemsize]
        predicted_stop = PREDICTED_STOP[jnp.dtype(dtype).itemsize]

        def unsettled(state):
            step, _, change, previous, before = state
            going = (step < limit) & (change > eps) & ((change < 0.9 * previous) | (change > floor))
            if predicted_stop:
                # The next correction at the slower of the last two rates: at round-off, stop.
                rate = jnp.maximum(change / previous, previous / before)
                going = going & ~((step >= 3) & (change <= floor) & (change * rate <= eps))
            return going

        # The test after the plain solve must pass: a finite "change" below an infinite "previous".
        start = (jnp.int32(-1), KKTVector(*(jnp.zeros_like(v) for v in r)), jnp.asarray(jnp.finfo(dtype).max, dtype),
                 jnp.asarray(jnp.inf, dtype), jnp.asarray(jnp.inf, dtype))
        _, w, change, _, _ = jax.lax.while_loop(unsettled, refine, start)
        return w, change


def solution_active_set(constraints: Constraints, z: Iterate, rho, tol) -> ActiveSet:
    """The active set of a (near-)solution iterate in the solver's variables."""
    return active_set(constraints, z.s, z.nu, z.z, z.mu, rho, tol)


def _system_at_solution(objective, constraints: Constraints, z: Iterate, rho, tol, polished, polished_system):
    """``(active set, ReducedKKT)`` at the solution. A polished QP solution reuses its
    polish's factor (the Hessian is constant and the point is exact on that active set);
    otherwise the active set is read from ``z`` and the system factored, under ``vmap``
    only for the lanes that need it, on CPU (``_batching.computed_where``)."""
    H = objective.hessian_operator(z.x)

    reusable = polished_system is not None and isinstance(polished_system.factor, ReusableFactor)

    def factored(z):
        # H, A and G are closed over: computed_where passes them through its optimisation
        # barrier, so that their products (AᵀA/δ) are not hoisted out of its loop.
        active = solution_active_set(constraints, z, rho, tol)
        return active, ReducedKKT.build(H, constraints, active, reusable).factor

    if polished_system is None or not objective.quadratic:
        active, factor = factored(z)
    else:
        active, factor = computed_where(~polished, factored, (z,), tuple(polished_system))
    return active, ReducedKKT.with_factor(H, constraints, active, factor)


def kkt_vjp(objective, constraints: Constraints, z: Iterate, rho, tol, cotangent: Iterate, polished=None,
            polished_system=None) -> Seeds:
    """Pull a cotangent of the solution back to the seeds (∂∇f, ∂b, ∂h, ∂lb, ∂ub) by one
    solve with K at the solution's active set (see below for a polished solution).

    The outputs are linear in the seeds: ``K [dx; dλ; dν; dμ] = [−∂∇f; ∂b; a·∂h;
    a_U·∂ub + a_L·∂lb]`` and ``ds = (1 − a)(∂h − G dx)`` (zero on active rows, as in eq.
    5gb). K is symmetric, so one solve ``K w = [x̄ − Gᵀ((1 − a)s̄); λ̄; a·ν̄; a_B·μ̄]`` gives
    every cotangent. All in the solver's scaled variables.

    With ``polished`` and ``polished_system`` (the forward solve's, ``_polish``) a
    polished QP solution reuses its polish's factor and the active set of its last Newton
    step, the set on which the point is exact. That set and the margin rule's re-read
    (``solution_active_set``, used otherwise) agree wherever the active set is unique;
    at a degenerate point (weakly active rows, more active rows than n) the derivative
    is not unique, and the two can pick different ones.

    Returns:
        ``(σ̄, change)``: σ̄ as :class:`Seeds` of vectors ``(n,)``, ``(p,)``, ``(m,)``,
        ``(nb,)``, ``(nb,)``, and on the sparse path the relative size of the solve's
        last refinement correction (zero for a factorised solve).
    """
    active, system = _system_at_solution(objective, constraints, z, rho, tol, polished, polished_system)
    a, a_B = system.a, system.a_B
    inactive_s_bar = (1.0 - a) * cotangent.s
    w, change = system.solve_and_change(KKTVector(
        cotangent.x - constraints.G.rmv(inactive_s_bar), cotangent.lam, a * cotangent.nu, a_B * cotangent.mu
    ))
    upper, lower = (side.astype(a.dtype) for side in (active.upper, active.lower))
    # Only the sparse path's inexact solves are judged by it: a factorised solve is exact to
    # round-off, which drifts along the null space of K at redundant rows without harm.
    change = change if isinstance(system.factor, NormalCG) else jnp.zeros_like(change)
    return Seeds(-w.x, w.eq, a * w.ineq + inactive_s_bar, lower * w.bound, upper * w.bound), change


def kkt_jacobian(system: ReducedKKT, active: ActiveSet, constraints: Constraints, seeds: Seeds
                 ) -> tuple[Iterate, jax.Array]:
    """The Jacobians of the solution along k seed columns, by the differentiated KKT system
    on ``active`` (forward mode; :func:`kkt_vjp` is its transpose).

    ``K [dx; dλ; dν; dμ] = [−∂∇f; ∂b; a·∂h; a_U·∂ub + a_L·∂lb]`` for each column, then
    ``ds = (1 − a)(∂h − G dx)``, dν and dμ zero off the active set and, on the bound
    block, dz = dx. This is the fixed point of the Alt-Diff recursion (eqs. 5ga–5gd) on
    that active set, so at a polished point it replaces the carried Jacobians exactly.

    Returns:
        ``(J, change)``: :class:`Iterate` of ``(·, k)`` blocks in the solver's variables,
        and the largest relative size of a column's last refinement correction.
    """
    a, a_B = system.a, system.a_B
    upper, lower = (side.astype(a.dtype) for side in (active.upper, active.lower))

    def column(grad, b, h, lb, ub):
        w, change = system.solve_and_change(KKTVector(-grad, b, a * h, a_B * (upper * ub + lower * lb)))
        s = (1.0 - a) * (h - constraints.G.mv(w.x))
        return Iterate(w.x, s, w.eq, a * w.ineq, constraints.B.mv(w.x), a_B * w.bound), change

    J, changes = jax.vmap(column, in_axes=1, out_axes=(1, 0))(*seeds)
    return J, jnp.max(changes, initial=0.0)
