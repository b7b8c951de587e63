"""The paper's layers beyond the QP (App. B.2, Table 3): sparsemax and softmax, constrained.

Each is one equality row 1ᵀx = 1 plus bounds, with a separable objective, so every
linear system of the solve (x-update, Jacobian step, polishing, the ``kkt`` strategy)
is a diagonal plus a rank-one matrix (``_linalg``): O(n) time and memory per problem and
per carried column, no n × n array anywhere in the traced program.

* Sparsemax layers: the QP with P = 2I (:class:`~altdiff_jax._linalg.Diagonal`),
  q = −2y, A = 1ᵀ (:class:`~altdiff_jax._linalg.RowVector`), b = 1, 0 <= x (<= u),
  through the QP layer's custom_vjp. Polishing (on by default) ends the solve on the
  exact projection: the support is read off the iterate and the threshold τ solved
  exactly, re-reading the support until it is consistent, so x is exactly on the
  simplex and exactly sparse, and its gradient is the sparsemax Jacobian on the support.
* Constrained softmax: −yᵀx + Σ xᵢ log xᵢ with 1ᵀx = 1, x <= u, by the smooth layer's
  Newton x-update (the entropy's Hessian diag(1/x) is diagonal), polished by Newton on
  the active set.

y is shifted by max(y) inside (exact on 1ᵀx = 1: the objective changes by a constant),
so the solver's data are O(1) whatever the offset of y; λ is reported for the unshifted y.
"""

from __future__ import annotations

import functools
import math
from typing import Optional

import jax
import jax.numpy as jnp

from ._linalg import Dense, Diagonal, RowVector
from ._xupdate import bound_diagonal
from ._options import Options, resolve_options
from ._problem import QP, Constraints
from ._smooth import SmoothObjective, solve_smooth_objective
from ._solution import Solution
from ._solve import initial_iterate, raise_forward_mode, solve_qp


def _as_vector(name: str, value, dtype=None, shape=None) -> jax.Array:
    array = jnp.asarray(value)
    if not jnp.issubdtype(array.dtype, jnp.floating) or array.dtype not in (jnp.float32, jnp.float64):
        raise ValueError(f"{name} must have dtype float32 or float64, got {array.dtype}")
    if shape is None:
        if array.ndim != 1 or array.shape[0] < 1:
            raise ValueError(f"{name} must be a non-empty vector of shape (n,), got shape {array.shape}")
    else:
        if array.shape != shape:
            raise ValueError(f"{name} has shape {array.shape}, expected {shape} like y")
        if array.dtype != dtype:
            raise ValueError(f"{name} has dtype {array.dtype} but y has dtype {dtype}: give both one dtype")
    return array


def _simplex_constraints(n: int, dtype, lb, ub) -> Constraints:
    """1ᵀx = 1 as a :class:`RowVector`, no G, and the given bounds."""
    return Constraints(
        RowVector(jnp.ones((n,), dtype)), jnp.ones((1,), dtype), Dense(jnp.zeros((0, n), dtype)),
        jnp.zeros((0,), dtype), lb, ub,
    )


def _simplex_qp(y: jax.Array, ub: jax.Array, options: Optional[Options], init: Optional[Solution], name: str) -> Solution:
    """Solve min ‖x − y‖² s.t. 1ᵀx = 1, 0 <= x <= ub with the structured operators.

    y is shifted by c = max(y): ‖x − y + c1‖² = ‖x − y‖² + 2c·1ᵀx + const, a constant on
    1ᵀx = 1, so x* and μ* are unchanged and λ*(y) = λ*(y − c1) + 2c. c is a constant of
    the derivative (stop_gradient): the identity holds for every y at fixed c.
    """
    options = resolve_options(options)
    (n,), dtype = y.shape, y.dtype
    shift = jax.lax.stop_gradient(jnp.max(y))
    constraints = _simplex_constraints(n, dtype, jnp.zeros((n,), dtype), ub)
    data = QP(Diagonal(jnp.full((n,), 2.0, dtype)), -2.0 * (y - shift), *constraints)
    z0 = initial_iterate(init, constraints, n, dtype)
    if init is not None:
        z0 = z0._replace(lam=z0.lam - 2.0 * shift)
    try:
        solution = solve_qp(options.structure(), data, options.numerics(dtype), z0)
    except TypeError as error:
        raise_forward_mode(error, name, "")
    return solution._replace(lam=solution.lam + 2.0 * shift)


def sparsemax(y: jax.Array, options: Optional[Options] = None, init: Optional[Solution] = None) -> Solution:
    """Sparsemax: the Euclidean projection of y onto the probability simplex.

    x* = argmin_x ‖x − y‖²  s.t.  1ᵀx = 1,  x >= 0  (Martins & Astudillo, 2016), the QP
    with P = 2I, q = −2y, A = 1ᵀ, b = 1 and the lower bound 0, solved by ADMM with O(n)
    iterations and polished to the exact projection (support and threshold τ exact to
    round-off). Follows :func:`solve`'s
    conventions: a pure function (jit, vmap over a batch of y, ``jax.grad`` with respect
    to y by the strategy of ``Options.differentiation``) with a reported status.

    Args:
        y: ``(n,)`` scores, float32 or float64; x*'s dtype is y's.
        options: :class:`Options`; ``None`` for the defaults. ``scaling_iterations`` and
            ``factorization`` do not apply (the structured systems are solved exactly in
            O(n) without equilibration).
        init: a previous :class:`Solution` of the same n to start from (warm start).

    Returns:
        :class:`Solution` with ``x (n,)``, ``lam (1,)`` (multiplier of 1ᵀx = 1),
        ``mu (n,)`` (bound multipliers: −(multiplier of x >= 0)), ``s``, ``nu`` of shape
        ``(0,)``, and ``info``; stationarity reads 2(x − y) + λ1 + μ = 0.

    Raises:
        ValueError: at trace time, if y is not a non-empty float32/float64 vector.

    Examples:
        >>> import jax.numpy as jnp
        >>> from altdiff_jax import sparsemax
        >>> sol = sparsemax(jnp.array([1.0, 0.5, -1.0]))  # float32 unless x64 is on
        >>> [round(float(v), 6) for v in sol.x]  # exactly sparse: the last entry is 0.0
        [0.75, 0.25, 0.0]
        >>> int(sol.info.status)  # Status.SOLVED
        0
    """
    y = _as_vector("y", y)
    return _simplex_qp(y, jnp.full(y.shape, jnp.inf, y.dtype), options, init, "sparsemax")


def constrained_sparsemax(
    y: jax.Array, u: jax.Array, options: Optional[Options] = None, init: Optional[Solution] = None
) -> Solution:
    """Constrained sparsemax: the projection of y onto the simplex capped at u.

    x* = argmin_x ‖x − y‖²  s.t.  1ᵀx = 1,  0 <= x <= u  (Malaviya et al., 2018). Same
    conventions and exactness as :func:`sparsemax`; ``jax.grad`` gives gradients with
    respect to y and u. The problem is feasible iff u >= 0 and 1ᵀu >= 1; otherwise the
    status is ``PRIMAL_INFEASIBLE`` (and the gradient zero). ``u_i = inf`` means no
    upper bound on x_i.

    Args:
        y: ``(n,)`` scores, float32 or float64.
        u: ``(n,)`` upper bounds, same shape and dtype as y.
        options: :class:`Options`; ``None`` for the defaults.
        init: a previous :class:`Solution` of the same n to start from (warm start).

    Returns:
        :class:`Solution` with ``x (n,)``, ``lam (1,)``, ``mu (n,)`` (bound multipliers:
        >= 0 where x = u, <= 0 where x = 0), and ``info``.

    Raises:
        ValueError: at trace time, if y is not a non-empty floating vector or u does
            not have y's shape and dtype.

    Examples:
        >>> import jax.numpy as jnp
        >>> from altdiff_jax import constrained_sparsemax
        >>> sol = constrained_sparsemax(jnp.array([1.0, 0.5, -1.0]),
        ...                             jnp.array([0.5, 0.5, 0.5]))
        >>> [round(v, 6) for v in sol.x.tolist()]  # exact up to the dtype's round-off
        [0.5, 0.5, 0.0]
    """
    y = _as_vector("y", y)
    u = _as_vector("u", u, y.dtype, y.shape)
    return _simplex_qp(y, u, options, init, "constrained_sparsemax")


def negative_entropy_objective(x: jax.Array, y: jax.Array) -> jax.Array:
    """−yᵀx + Σ xᵢ log xᵢ: the constrained softmax's objective (paper App. B.2)."""
    return -y @ x + jnp.sum(jax.scipy.special.xlogy(x, x))


def _entropy_objective(floor: float, y, constraints: Constraints, sigma) -> SmoothObjective:
    f = bound_diagonal(constraints)
    return SmoothObjective(negative_entropy_objective, True, floor, y, constraints.A, constraints.G, f, sigma)


def constrained_softmax(
    y: jax.Array,
    u: Optional[jax.Array] = None,
    options: Optional[Options] = None,
    init: Optional[Solution] = None,
) -> Solution:
    """Constrained softmax (Martins & Kreutzer 2017): argmin −yᵀx + Σ xᵢ log xᵢ s.t. 1ᵀx = 1, x <= u.

    Solved by ADMM with a safeguarded Newton x-update on the augmented Lagrangian (the
    line search keeps x > 0), polished by Newton on the active set, and differentiated
    like every layer (``Options.differentiation``). Every Newton system and Jacobian
    step is diagonal plus rank one: O(n). With ``u=None`` it is ``jax.nn.softmax(y)``.
    Without bounds, entries more than ~log(1/√tiny) below max(y) are raised to that
    level (x moves by at most 2n²·e³·√tiny). With bounds, entries whose optimum
    underflows (y spread by ~1e3 in float64, ~50 in float32) stop at a floor of √tiny;
    such a solve reports ``MAX_ITER`` but stays finite.

    Args:
        y: ``(n,)`` scores.
        u: ``(n,)`` upper bounds (1ᵀu >= 1 for feasibility; ``inf`` for none), or None.
        options: :class:`Options`; ``scaling_iterations`` and ``factorization`` do not
            apply.
        init: a previous :class:`Solution` of the same layer to warm-start from.

    Returns:
        :class:`Solution`; the layer's output is ``.x (n,)``; ``mu (n,)`` holds the
        multipliers of x <= u (``(0,)`` without u); ``s``, ``nu`` are ``(0,)``.

    Examples:
        >>> import jax.numpy as jnp
        >>> from altdiff_jax import constrained_softmax
        >>> y = jnp.array([2.0, 1.0, 0.0])
        >>> [round(float(v), 3) for v in constrained_softmax(y).x]
        [0.665, 0.245, 0.09]
        >>> [round(float(v), 2) for v in constrained_softmax(y, u=jnp.array([0.5, 1.0, 1.0])).x]
        [0.5, 0.37, 0.13]
    """
    y = _as_vector("y", y)
    n, dtype = y.shape[0], y.dtype
    shift = jax.lax.stop_gradient(jnp.max(y))
    shifted = y - shift
    if u is None:
        lb = ub = jnp.zeros((0,), dtype)
        # Without bounds x = softmax(y) >= exp(y_i − max y) / n: an entry more than
        # log(1/√tiny) below the max (~354 in float64, only ~44 in float32) would have its
        # optimum under the x-update's floor of √tiny, where the solve cannot converge.
        # Raising such entries to log(√tiny) + log(n) + 3 keeps every optimum above the
        # floor (by e³); each raised entry weighs at most n·e³·√tiny, so x moves by at most
        # 2n²·e³·√tiny in ‖·‖₁ (6e-153·n² in float64, 5e-18·n² in float32).
        # With bounds the optimum's scale is set by λ, not max y, and no such cut is exact.
        lowest = 0.5 * math.log(float(jnp.finfo(dtype).tiny)) + math.log(n) + 3.0
        shifted = jnp.maximum(shifted, jnp.asarray(lowest, dtype))
    else:
        u = _as_vector("u", u, dtype, y.shape)
        lb, ub = jnp.full((n,), -jnp.inf, dtype), u
    if init is not None:
        init = init._replace(lam=init.lam - shift)
    constraints = _simplex_constraints(n, dtype, lb, ub)
    floor = float(jnp.finfo(dtype).tiny) ** 0.5
    make_objective = functools.partial(_entropy_objective, floor)
    x0 = jnp.full((n,), 1.0 / n, dtype)
    solution = solve_smooth_objective(make_objective, shifted, constraints, options, init, x0, "constrained_softmax")
    return solution._replace(lam=solution.lam + shift)
