"""The paper's layers beyond the QP (App. B.2, Table 3): sparsemax and softmax, constrained.

Sparsemax layers: Euclidean projections onto the (capped) simplex.

Both are QPs with P = 2I, q = −2y, A = 1ᵀ, b = 1, and G = −I (sparsemax) or [I; −I]
(constrained sparsemax), solved by the QP layer's custom_vjp. Their x-update matrix
H(ρ) = 2I + ρ(11ᵀ + GᵀG) is a multiple of I plus a multiple of 11ᵀ, so the layers use
:class:`~altdiff_jax._objective.IdentityPlusOnesQuadratic` (Sherman–Morrison, no
factorisation) and no Ruiz equilibration (which would only rescale this structure).

y and u enter only through q = −2y and h = [u; 0]; P, A, b and G are constants built
here, so JAX's chain rule takes the gradient of q and h from the solve and carries no
Jacobian columns for the constants. Two exact reformulations keep the solver's data O(1)
(see ``_simplex_qp``): y is shifted by max(y), and upper bounds above 1 are lowered.
"""

from __future__ import annotations

import math
from typing import Optional

import jax
import jax.numpy as jnp

from ._options import Options
from ._solution import Solution
from ._smooth import entropy_objective, solve_smooth_objective
from ._solve import _initial_iterate, _solve_qp

_QUADRATIC = "identity_plus_ones"
_LOOSE_BOUND = 2.0  # any value > 1: an upper bound that cannot bind on the simplex


def _as_vector(name: str, value, dtype=None, shape=None) -> jax.Array:
    array = jnp.asarray(value)
    if not jnp.issubdtype(array.dtype, jnp.floating):
        raise ValueError(f"{name} must have a floating dtype, got {array.dtype}")
    if shape is None:
        if array.ndim != 1 or array.shape[0] < 1:
            raise ValueError(f"{name} must be a non-empty vector of shape (n,), got shape {array.shape}")
    else:
        if array.shape != shape:
            raise ValueError(f"{name} has shape {array.shape}, expected {shape} like y")
        if array.dtype != dtype:
            raise ValueError(f"{name} has dtype {array.dtype} but y has dtype {dtype}: give both one dtype")
    return array


def _simplex_qp(
    y: jax.Array,
    G: jax.Array,
    h: jax.Array,
    options: Optional[Options],
    init: Optional[Solution],
    s_offset: Optional[jax.Array] = None,
) -> Solution:
    """Solve min ‖x − y‖² s.t. 1ᵀx = 1, Gx <= h with the structured quadratic.

    Two exact reformulations keep the data O(1), so that the solver's relative stopping
    rule (tolerances scale with ‖q‖∞, ‖h‖∞ and the multipliers) does not loosen with
    the size of the inputs:

    * y is shifted by c = max(y): ‖x − y + c1‖² = ‖x − y‖² + 2c·1ᵀx + const, a constant
      shift of the objective on 1ᵀx = 1, so x*, s* and ν* are unchanged and
      λ*(y) = λ*(y − c1) + 2c. c is a constant of the derivative (stop_gradient): the
      identity holds for every y at fixed c.
    * the caller passes h with bounds above 1 already lowered (they cannot bind, as
      x <= 1 on the simplex) and ``s_offset`` = (original h) − h, added back to s.
    """
    options = Options() if options is None else options
    if not isinstance(options, Options):
        raise ValueError(f"options must be an altdiff_jax.Options, got {type(options).__name__}")
    (n,), (m,), dtype = y.shape, h.shape, y.dtype
    shift = jax.lax.stop_gradient(jnp.max(y))
    P = 2.0 * jnp.eye(n, dtype=dtype)
    A, b = jnp.ones((1, n), dtype), jnp.ones((1,), dtype)
    z0 = _initial_iterate(init, n, 1, m, dtype)
    if init is not None:  # a previous Solution, in the reformulated problem's variables
        z0 = z0._replace(lam=z0.lam - 2.0 * shift)
        if s_offset is not None:  # where a bound was lowered, restart its slack from x
            z0 = z0._replace(s=jnp.where(s_offset > 0, jnp.maximum(h - G @ z0.x, 0.0), z0.s))
    structure = options.structure()._replace(quadratic=_QUADRATIC, scaling_iterations=0)
    try:
        solution = _solve_qp(structure, P, -2.0 * (y - shift), A, b, G, h, options.numerics(dtype), z0)
    except TypeError as error:
        if "forward-mode" in str(error) or "jvp" in str(error):
            raise TypeError(
                "altdiff_jax sparsemax layers are reverse-mode differentiable only (jax.grad, "
                "jax.vjp, jax.jacrev); jax.jvp and jax.jacfwd cannot pass their custom_vjp."
            ) from error
        raise
    s = solution.s if s_offset is None else solution.s + s_offset
    return solution._replace(s=s, lam=solution.lam + 2.0 * shift)


def sparsemax(y: jax.Array, options: Optional[Options] = None, init: Optional[Solution] = None) -> Solution:
    """Sparsemax: the Euclidean projection of y onto the probability simplex, by ADMM.

    x* = argmin_x ‖x − y‖²  s.t.  1ᵀx = 1,  x >= 0  (Martins & Astudillo, 2016), the QP
    with P = 2I, q = −2y, A = 1ᵀ, b = 1, G = −I, h = 0. Follows :func:`solve`'s
    conventions: a pure function (jit, vmap over a batch of y, ``jax.grad`` with
    respect to y by the strategy of ``Options.differentiation``), a reported status,
    and ``Options.tol`` truncating both the solution and its derivative. Each ADMM
    iteration costs O(n) in its x-update (Sherman–Morrison), no factorisation. y is
    shifted by max(y) inside (x* is invariant to it), so the accuracy at a given
    ``tol`` depends on the spread of y, not on its offset.

    Args:
        y: ``(n,)`` scores, floating; x*'s dtype is y's.
        options: :class:`Options`; ``None`` for the defaults. ``scaling_iterations`` is
            ignored (the structured x-update runs on the unscaled problem).
        init: a previous :class:`Solution` of the same n to start from (warm start).

    Returns:
        :class:`Solution` with ``x (n,)``, ``s (n,)`` = x (the slack of −x <= 0),
        ``lam (1,)`` (multiplier of 1ᵀx = 1), ``nu (n,)`` (multipliers of x >= 0) and
        ``info``; stationarity reads 2(x − y) + λ1 − ν = 0.

    Raises:
        ValueError: at trace time, if y is not a non-empty floating vector.

    Examples:
        >>> import jax.numpy as jnp
        >>> from altdiff_jax import sparsemax
        >>> sol = sparsemax(jnp.array([1.0, 0.5, -1.0]))
        >>> [round(float(v), 2) + 0.0 for v in sol.x]  # + 0.0 prints −0.0 as 0.0
        [0.75, 0.25, 0.0]
        >>> int(sol.info.status)  # Status.SOLVED
        0
    """
    y = _as_vector("y", y)
    n, dtype = y.shape[0], y.dtype
    G, h = -jnp.eye(n, dtype=dtype), jnp.zeros((n,), dtype)
    return _simplex_qp(y, G, h, options, init)


def constrained_sparsemax(
    y: jax.Array, u: jax.Array, options: Optional[Options] = None, init: Optional[Solution] = None
) -> Solution:
    """Constrained sparsemax: the projection of y onto the simplex capped at u, by ADMM.

    x* = argmin_x ‖x − y‖²  s.t.  1ᵀx = 1,  0 <= x <= u  (Malaviya et al., 2018), the QP
    with P = 2I, q = −2y, A = 1ᵀ, b = 1, G = [I; −I], h = [u; 0]. Same conventions as
    :func:`sparsemax`; ``jax.grad`` gives gradients with respect to y and u (only the
    Jacobian columns of the arguments being differentiated are carried).

    The problem is feasible iff u >= 0 and 1ᵀu >= 1; otherwise the status is
    ``PRIMAL_INFEASIBLE`` (and the gradient zero). u_i = ∞ means no upper bound: any
    bound above 1 cannot bind (x <= 1 on the simplex), so it is lowered inside to keep
    the solver's relative tolerances independent of its size, and its slack
    s_i = u_i − x_i is reported in the user's terms.

    Args:
        y: ``(n,)`` scores, floating.
        u: ``(n,)`` upper bounds, same shape and dtype as y.
        options: :class:`Options`; ``None`` for the defaults. ``scaling_iterations`` is
            ignored.
        init: a previous :class:`Solution` of the same n to start from (warm start).

    Returns:
        :class:`Solution` with ``x (n,)``, ``s (2n,)`` = [u − x; x], ``lam (1,)``,
        ``nu (2n,)`` = [multipliers of x <= u; multipliers of x >= 0] and ``info``.

    Raises:
        ValueError: at trace time, if y is not a non-empty floating vector or u does
            not have y's shape and dtype.

    Examples:
        >>> import jax.numpy as jnp
        >>> from altdiff_jax import constrained_sparsemax
        >>> sol = constrained_sparsemax(jnp.array([1.0, 0.5, -1.0]),
        ...                             jnp.array([0.5, 0.5, 0.5]))
        >>> [round(float(v), 2) + 0.0 for v in sol.x]
        [0.5, 0.5, 0.0]
    """
    y = _as_vector("y", y)
    u = _as_vector("u", u, y.dtype, y.shape)
    n, dtype = y.shape[0], y.dtype
    eye = jnp.eye(n, dtype=dtype)
    G = jnp.concatenate([eye, -eye], axis=0)
    # x <= 1 on the simplex: a bound above 1 never binds, lower it to _LOOSE_BOUND (> 1,
    # so that it is never even weakly active) and add the difference back to its slack.
    bound = jnp.minimum(u, _LOOSE_BOUND)
    h = jnp.concatenate([bound, jnp.zeros((n,), dtype)])
    s_offset = jnp.concatenate([u - bound, jnp.zeros((n,), dtype)])
    return _simplex_qp(y, G, h, options, init, s_offset)


def constrained_softmax(
    y: jax.Array,
    u: Optional[jax.Array] = None,
    options: Optional[Options] = None,
    init: Optional[Solution] = None,
) -> Solution:
    """Constrained softmax (Martins & Kreutzer 2017): argmin −yᵀx + Σ xᵢ log xᵢ s.t. 1ᵀx = 1, x <= u.

    Solved by ADMM with a safeguarded Newton x-update on the augmented Lagrangian (the
    line search keeps x > 0) and differentiated like every layer
    (``Options.differentiation``); the Jacobian recursion uses the Hessian
    diag(1/x) + ρ(11ᵀ + GᵀG), diagonal plus rank one, solved in O(n) by Sherman–Morrison.
    With ``u=None`` it is ``jax.nn.softmax(y)``. y is shifted by max(y) (exact on
    1ᵀx = 1; λ is reported for the unshifted y) and bounds above 1, which cannot bind,
    are lowered to 2. Without bounds, entries more than ~log(1/√tiny) below max(y) are
    raised to that level (x moves by at most 2n²·e³·√tiny). With bounds, entries
    whose optimum underflows (y spread by ~1e3 in float64, ~50 in float32) stop at a
    floor of √tiny; such a solve reports ``MAX_ITER`` but stays finite.

    Args:
        y: ``(n,)`` scores.
        u: ``(n,)`` upper bounds (1ᵀu >= 1 for feasibility), or None for none.
        options: :class:`Options`; ``scaling_iterations`` is ignored.
        init: a previous :class:`Solution` of the same layer to warm-start from.

    Returns:
        :class:`Solution`; the layer's output is ``.x (n,)``; ``s``, ``nu`` are ``(n,)``
        with bounds and ``(0,)`` without.

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
    A, b = jnp.ones((1, n), dtype), jnp.ones((1,), dtype)
    G = h = None
    if u is not None:
        u = _as_vector("u", u, dtype, y.shape)
        G, h = jnp.eye(n, dtype=dtype), jnp.minimum(u, _LOOSE_BOUND)
    shifted = y - shift
    if u is None:
        # Without bounds x = softmax(y) >= exp(y_i − max y) / n: an entry more than
        # log(1/√tiny) below the max (~354 in float64, only ~44 in float32) would have its
        # optimum under the x-update's floor of √tiny, where the solve cannot converge
        # (MAX_ITER, and x off the simplex by percents). Raising such entries to
        # log(√tiny) + log(n) + 3 keeps every optimum above the floor (by e³); each raised
        # entry weighs at most n·e³·√tiny, so x moves by at most 2n²·e³·√tiny in ‖·‖₁
        # (6e-153·n² in float64, 5e-18·n² in float32).
        # With bounds the optimum's scale is set by λ, not max y, and no such cut is exact.
        lowest = 0.5 * math.log(float(jnp.finfo(dtype).tiny)) + math.log(n) + 3.0
        shifted = jnp.maximum(shifted, jnp.asarray(lowest, dtype))
    if init is not None:
        init = init._replace(lam=init.lam - shift)
    solution = solve_smooth_objective(
        entropy_objective, shifted, n, dtype, A, b, G, h, options, init, jnp.full((n,), 1.0 / n, dtype)
    )
    if u is not None:
        solution = solution._replace(s=solution.s + (u - h))
    return solution._replace(lam=solution.lam + shift)
