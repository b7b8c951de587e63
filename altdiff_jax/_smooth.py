"""Smooth convex objectives: a Newton x-update in the same loop driver as the QP.

``solve_convex`` runs ADMM (eqs. 5a–5d) with an x-update that minimises
f(x; θ) + rᵀx + ρ/2 xᵀCx (C = AᵀA + GᵀG) by a damped Newton method, and differentiates
by the same strategies as the QP. The Jacobian recursion (eq. 5ga) uses the Hessian
∇²f(x) + ρC at the current iterate; gradients for θ follow from the cotangent q̄ of a
virtual linear term (a perturbation dθ moves the stationarity condition exactly as
dq = ∂_θ∇f dθ would), so θ̄ = (∂_θ∇f)ᵀ q̄ whatever the size of θ.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_derivatives import SymbolicZero
from jax.scipy.linalg import cho_solve

from ._admm import Iterate
from ._options import Options
from ._problem import Constraints, data_gradients
from ._scaling import Scaling
from ._solution import Solution
from ._solve import (
    _altdiff_wrt,
    _constant_seeds,
    _initial_iterate,
    _masked_solution,
    _pull_back,
    run_objective,
    split_columns,
)

_NEWTON_MAX_ITER = 50
_LINE_SEARCH_HALVINGS = 40
_ARMIJO = 1e-4


def _dense_hessian_solve(hessian: jax.Array, C: jax.Array, rho, rhs: jax.Array) -> jax.Array:
    """(∇²f + ρC)⁻¹ rhs by Cholesky: the x-update's Newton system and eq. (5ga)."""
    H = hessian + rho * C
    return cho_solve((jnp.linalg.cholesky(H), True), rhs)


@dataclasses.dataclass(frozen=True)
class SmoothObjective:
    """f(x; θ), smooth and convex, with C = AᵀA + GᵀG for the augmented Lagrangian.

    Attributes:
        fun: ``fun(x, theta) -> ()``, written in JAX (static).
        theta: a pytree of arrays, the parameters.
        C: ``(n, n)`` AᵀA + GᵀG.
    """

    fun: Callable
    theta: Any
    C: jax.Array

    def value(self, x: jax.Array) -> jax.Array:
        return self.fun(x, self.theta)

    def gradient(self, x: jax.Array) -> jax.Array:
        return jax.grad(self.fun)(x, self.theta)

    def hessian(self, x: jax.Array) -> jax.Array:
        return jax.hessian(self.fun)(x, self.theta)

    def hessian_vector(self, x: jax.Array, v: jax.Array) -> jax.Array:
        return jax.jvp(self.gradient, (x,), (v,))[1]

    def recession_slope(self, d_x: jax.Array) -> jax.Array:
        """No linear cost to certify unboundedness with: never certifies."""
        return jnp.full((), jnp.inf, d_x.dtype)

    def solve_newton_system(self, x, rho, rhs):
        return _dense_hessian_solve(self.hessian(x), self.C, rho, rhs)

    def x_update(self, x: jax.Array, r: jax.Array, rho: jax.Array) -> jax.Array:
        # (5a) x⁺ = argmin f(x) + rᵀx + ρ/2 xᵀCx, by Newton from the previous x
        return newton_minimise(self, x, r, rho)

    def jacobian_x_update(self, x: jax.Array, dgrad: jax.Array, R: jax.Array, rho) -> jax.Array:
        # (5ga) J_x⁺ = −(∇²f(x⁺) + ρC)⁻¹ (∂_θ∇f + R)
        return -self.solve_newton_system(x, rho, dgrad + R)


jax.tree_util.register_dataclass(SmoothObjective, data_fields=["theta", "C"], meta_fields=["fun"])


def newton_minimise(objective, x0: jax.Array, r: jax.Array, rho) -> jax.Array:
    """Damped Newton on φ(x) = f(x) + rᵀx + ρ/2 xᵀCx from ``x0``.

    Backtracking halves the step until φ and ∇φ are finite and φ decreases enough
    (Armijo), so iterates never leave f's open domain (an entropy's x > 0 included)
    when ``x0`` is in it.
    Stops when the Newton step is at round-off level, or after 50 steps.
    """
    eps = jnp.finfo(x0.dtype).eps

    def phi(x):
        return objective.value(x) + r @ x + 0.5 * rho * x @ (objective.C @ x)

    def gradient_phi(x):
        return objective.gradient(x) + r + rho * (objective.C @ x)

    def newton_step(carry):
        x, _, iteration = carry
        gradient = gradient_phi(x)
        step = -objective.solve_newton_system(x, rho, gradient)
        slope = gradient @ step
        value = phi(x)

        def rejected(t, count):
            x_trial = x + t * step
            trial, trial_gradient = phi(x_trial), gradient_phi(x_trial)
            # A trial point must lie in the open domain of f: finite value and gradient
            # (an entropy's x = 0 has a finite value but an infinite gradient).
            in_domain = jnp.isfinite(trial) & jnp.all(jnp.isfinite(trial_gradient))
            armijo = trial <= value + _ARMIJO * t * slope
            # Near the minimiser the decrease a Newton step promises, ~|∇φ|², falls below
            # the rounding of φ once |∇φ| ~ √eps: Armijo then rejects the step on noise and
            # Newton stops there (measured |∇φ| up to 6e-10 in float64). Within rounding of
            # φ, a step that does not increase ‖∇φ‖∞ is accepted instead, so Newton goes on
            # to round-off level (|∇φ| ~ 1e-15).
            within_rounding = trial <= value + 10 * eps * jnp.abs(value)
            gradient_ok = jnp.max(jnp.abs(trial_gradient)) <= jnp.max(jnp.abs(gradient))
            bad = ~in_domain | ~(armijo | (within_rounding & gradient_ok))
            return bad & (count < _LINE_SEARCH_HALVINGS)

        def shrink(carry):
            t, count, _ = carry
            t, count = t * 0.5, count + 1
            return t, count, rejected(t, count)

        # The verdict on the current t is carried, and the loop's condition only reads it.
        # Under vmap, JAX evaluates a while_loop's condition twice per step (any-lane in the
        # condition, per-lane again in the body to select which lanes advance); a condition
        # that recomputed the Armijo test could round differently in the two places on a
        # near-tie (trial ≈ value near convergence), and the batch would then spin forever
        # with no lane advancing (seen with 8 lanes of constrained_softmax on CPU).
        one, zero = jnp.ones((), x.dtype), jnp.int32(0)
        t, _, _ = lax.while_loop(lambda carry: carry[2], shrink, (one, zero, rejected(one, zero)))
        x_new = x + t * step
        small = jnp.max(jnp.abs(t * step)) <= 10 * eps * (1 + jnp.max(jnp.abs(x_new)))
        return x_new, small | ~jnp.all(jnp.isfinite(step)), iteration + 1

    def going(carry):
        _, done, iteration = carry
        return ~done & (iteration < _NEWTON_MAX_ITER)

    x, _, _ = lax.while_loop(going, newton_step, (x0, jnp.bool_(False), jnp.int32(0)))
    return x


def _unit_scaling(n: int, p: int, m: int, dtype) -> Scaling:
    return Scaling(jnp.ones(n, dtype), jnp.ones(p, dtype), jnp.ones(m, dtype), jnp.ones((), dtype))


def _smooth_forward(structure, make_objective, theta, A, b, G, h, numerics, init, seeds):
    constraints = Constraints(A, b, G, h)
    objective = make_objective(theta, constraints)
    n, p, m = init.x.size, b.size, h.size
    scaling = _unit_scaling(n, p, m, init.x.dtype)
    return run_objective(structure, objective, constraints, scaling, numerics, init, seeds)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _solve_smooth(structure, make_objective, theta, A, b, G, h, numerics, init):
    return _smooth_forward(structure, make_objective, theta, A, b, G, h, numerics, init, None).solution


def _solve_smooth_fwd(structure, make_objective, theta, A, b, G, h, numerics, init):
    theta_perturbed = any(leaf.perturbed for leaf in jax.tree_util.tree_leaves(theta))
    perturbed = {"P": theta_perturbed, "q": False, "A": A.perturbed, "b": b.perturbed,
                 "G": G.perturbed, "h": h.perturbed}
    theta, numerics, init = jax.tree_util.tree_map(lambda leaf: leaf.value, (theta, numerics, init))
    A, b, G, h = (leaf.value for leaf in (A, b, G, h))
    blocks = (None, None, None)
    seeds = None
    if structure.differentiation == "altdiff":
        wrt = _altdiff_wrt(perturbed)
        seeds = _constant_seeds(init.x, b, h, wrt)
    forward = _smooth_forward(structure, make_objective, theta, A, b, G, h, numerics, init, seeds)
    if seeds is not None:
        blocks = split_columns(forward.J, (init.x.size, b.size, h.size), wrt)
    return forward.solution, (forward._replace(J=None), blocks, numerics, theta)


def _solve_smooth_bwd(structure, make_objective, residuals, cotangent: Solution):
    forward, blocks, numerics, theta = residuals
    solution = forward.solution
    sizes = (solution.x.size, solution.s.size, solution.lam.size, solution.nu.size)
    outputs = Iterate(*(
        jnp.zeros(size, solution.x.dtype) if isinstance(g, SymbolicZero) else g
        for g, size in zip((cotangent.x, cotangent.s, cotangent.lam, cotangent.nu), sizes)
    ))
    bars, _ = _pull_back(structure, numerics, forward, blocks, outputs)
    x, lam, nu = _masked_solution(solution)
    grads = data_gradients(x, lam, nu, *bars)
    q_bar = jnp.zeros_like(x) if bars[0] is None else bars[0]
    # θ̄ = (∂_θ∇f(x*; θ))ᵀ q̄: θ enters the stationarity condition as a linear term would.
    _, pull_theta = jax.vjp(lambda t: forward.objective.__class__.gradient(
        dataclasses.replace(forward.objective, theta=t), x), theta)
    (theta_bar,) = pull_theta(q_bar)
    return theta_bar, grads.A, grads.b, grads.G, grads.h, None, None


_solve_smooth.defvjp(_solve_smooth_fwd, _solve_smooth_bwd, symbolic_zeros=True)


def _validate_block(name_matrix, name_rhs, matrix, rhs, n, dtype):
    if (matrix is None) != (rhs is None):
        raise ValueError(f"{name_matrix} and {name_rhs} must be given together")
    if matrix is None:
        return jnp.zeros((0, n), dtype), jnp.zeros((0,), dtype)
    matrix, rhs = jnp.asarray(matrix), jnp.asarray(rhs)
    for name, value in ((name_matrix, matrix), (name_rhs, rhs)):
        if value.dtype != dtype:
            raise ValueError(f"{name} has dtype {value.dtype}, expected {dtype} like x")
    if matrix.ndim != 2 or matrix.shape[1] != n:
        raise ValueError(f"{name_matrix} has shape {matrix.shape}, expected (rows, {n})")
    if rhs.shape != (matrix.shape[0],):
        raise ValueError(f"{name_rhs} has shape {rhs.shape}, expected {(matrix.shape[0],)} "
                         f"(one entry per row of {name_matrix} of shape {matrix.shape})")
    return matrix, rhs


def solve_smooth_objective(
    make_objective: Callable,
    theta: Any,
    n: int,
    dtype,
    A=None,
    b=None,
    G=None,
    h=None,
    options: Optional[Options] = None,
    init: Optional[Solution] = None,
    x0: Optional[jax.Array] = None,
) -> Solution:
    """Shared entry of every smooth layer: validate, then the custom_vjp solve.

    ``make_objective(theta, constraints)`` builds the objective (static: a module-level
    function or a ``functools.partial`` of one with hashable arguments).
    """
    A, b = _validate_block("A", "b", A, b, n, dtype)
    G, h = _validate_block("G", "h", G, h, n, dtype)
    options = Options() if options is None else options
    z0 = _initial_iterate(init, n, b.size, h.size, dtype)
    if init is None and x0 is not None:
        z0 = z0._replace(x=x0)
    structure = options.structure()._replace(scaling_iterations=0)
    return _solve_smooth(structure, make_objective, theta, A, b, G, h, options.numerics(dtype), z0)


def _general_objective(fun, theta, constraints):
    C = constraints.A.T @ constraints.A + constraints.G.T @ constraints.G
    return SmoothObjective(fun, theta, C)


def solve_convex(
    objective: Callable[[jax.Array, Any], jax.Array],
    theta: Any,
    A=None,
    b=None,
    G=None,
    h=None,
    options: Optional[Options] = None,
    init: Optional[Solution] = None,
    *,
    x0: Optional[jax.Array] = None,
) -> Solution:
    """Minimise a smooth convex ``objective(x, theta)`` subject to Ax = b, Gx <= h.

    The x-update of ADMM is a damped Newton solve with Hessians from JAX's autodiff, and
    differentiation works as for :func:`altdiff_jax.solve` (``Options.differentiation``):
    ``jax.grad`` gives gradients for every array leaf of ``theta`` and for A, b, G, h.
    The data are not equilibrated (``Options.scaling_iterations`` is ignored), and no
    unboundedness certificate exists for a general objective: an unbounded problem ends
    in ``MAX_ITER`` or ``NONFINITE``.

    Args:
        objective: ``objective(x, theta) -> ()``, smooth and convex in ``x (n,)``; a
            hashable function (defined once, not a new lambda per call, to avoid
            recompilation).
        theta: a pytree of arrays, the parameters.
        A, b: ``(p, n)``, ``(p,)`` equalities, or None.
        G, h: ``(m, n)``, ``(m,)`` inequalities, or None.
        options: :class:`Options`.
        init: a previous :class:`Solution` to start from.
        x0: ``(n,)`` starting point of the primal iterate when ``init`` is None; needed
            when ``objective`` is undefined at 0 (the default start), as an entropy is.
            Its dtype and shape fix ``n`` and the dtype; otherwise they come from ``A``
            or ``G``.

    Returns:
        :class:`Solution`.

    Examples:
        >>> import jax.numpy as jnp
        >>> from altdiff_jax import solve_convex
        >>> def fun(x, theta):
        ...     return jnp.sum((x - theta) ** 2) + jnp.log(jnp.sum(jnp.exp(x)))
        >>> sol = solve_convex(fun, jnp.array([2.0, 0.0]), G=jnp.eye(2), h=jnp.ones(2))
        >>> round(float(sol.x[0]), 3)
        1.0
    """
    template = x0 if x0 is not None else (A if A is not None else G)
    if template is None:
        raise ValueError("solve_convex needs x0, A or G to know the number of variables n")
    template = jnp.asarray(template)
    n = template.shape[0] if x0 is not None else template.shape[1]
    if x0 is not None:
        x0 = jnp.asarray(x0)
        if x0.ndim != 1:
            raise ValueError(f"x0 must have shape (n,), got {x0.shape}")
    make_objective = functools.partial(_general_objective, objective)
    return solve_smooth_objective(
        make_objective, theta, n, template.dtype, A, b, G, h, options, init, x0
    )


def negative_entropy_objective(x: jax.Array, y: jax.Array) -> jax.Array:
    """−yᵀx + Σ xᵢ log xᵢ: the constrained softmax's objective (paper App. B.2)."""
    return -y @ x + jnp.sum(jax.scipy.special.xlogy(x, x))


@dataclasses.dataclass(frozen=True)
class EntropyObjective(SmoothObjective):
    """−yᵀx + Σ xᵢ log xᵢ with A = 1ᵀ and GᵀG = g·I (G = I or absent).

    Its Hessian ∇²f + ρC = diag(1/x + ρg) + ρ11ᵀ is diagonal plus rank one, so every
    Newton system and Jacobian x-update is solved in O(n) per column by
    Sherman–Morrison instead of a dense factorisation.

    Attributes:
        g: ``()``, the diagonal of GᵀG (1 with upper bounds, 0 without).
    """

    g: jax.Array = None

    def x_update(self, x: jax.Array, r: jax.Array, rho: jax.Array) -> jax.Array:
        # Entries whose optimum underflows (y spread by ~1e3) stop at a floor inside the
        # domain, √tiny (1e-154 in float64, 1e-19 in float32): the iterate stays finite
        # and such a solve ends honestly in MAX_ITER rather than in NaNs.
        floor = jnp.sqrt(jnp.finfo(x.dtype).tiny)
        return jnp.maximum(newton_minimise(self, x, r, rho), floor)

    def solve_newton_system(self, x, rho, rhs):
        inverse_diagonal = 1.0 / (1.0 / x + rho * self.g)
        if rhs.ndim == 2:
            inverse_diagonal = inverse_diagonal[:, None]
        scaled = inverse_diagonal * rhs
        correction = rho * jnp.sum(scaled, axis=0) / (1.0 + rho * jnp.sum(inverse_diagonal, axis=0))
        return scaled - inverse_diagonal * correction


jax.tree_util.register_dataclass(EntropyObjective, data_fields=["theta", "C", "g"], meta_fields=["fun"])


def entropy_objective(y, constraints: Constraints) -> EntropyObjective:
    """The softmax layers' objective; C is kept dense only for the KKT strategy and
    the residuals, the x-updates never factor it."""
    C = constraints.A.T @ constraints.A + constraints.G.T @ constraints.G
    g = jnp.asarray(1.0 if constraints.G.shape[0] else 0.0, y.dtype)
    return EntropyObjective(negative_entropy_objective, y, C, g)
