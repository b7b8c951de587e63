"""Smooth convex objectives: a Newton x-update in the same loop driver as the QP.

``solve_convex`` runs ADMM (eqs. 5a–5d) with an x-update that minimises
f(x; θ) + rᵀx + ρ/2 xᵀCx + σ/2‖x − xᵏ‖² (C = w·AᵀA + GᵀG + diag(f)) by a damped Newton
method, polishes by Newton on the active set, and differentiates by the same
strategies as the QP. The Jacobian recursion (eq. 5ga) uses the Hessian ∇²f(x) + σI + ρC
at the current iterate; gradients for θ follow from the cotangent q̄ of a virtual linear
term (a perturbation dθ moves the stationarity condition exactly as dq = ∂_θ∇f dθ
would), so θ̄ = (∂_θ∇f)ᵀ q̄ whatever the size of θ.

Every Newton system goes through ``_linalg.factor_system``: a diagonal Hessian (a
separable f such as the entropy), one equality row and bounds give a diagonal plus
rank-one system, solved in O(n); anything else is a dense Cholesky factor.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
from jax import lax

from ._linalg import Dense, Diagonal, Operator, factor_system
from ._xupdate import bound_diagonal, equality_weight
from ._options import Options, resolve_options
from ._problem import QP, Constraints, bounds, constraint_block, data_gradients
from ._scaling import cost_scaling
from ._solution import Solution
from ._driver import initial_status
from ._solve import (
    carried_parameters,
    constant_seeds,
    initial_iterate,
    masked_solution,
    output_cotangent,
    pull_back,
    raise_forward_mode,
    run_objective,
    split_columns,
)
from ._strategies import strategy_for

_NEWTON_MAX_ITER = 50
_LINE_SEARCH_HALVINGS = 40
_ARMIJO = 1e-4


@dataclasses.dataclass(frozen=True)
class SmoothObjective:
    """f(x; θ), smooth and convex, with the constraint operators of the augmented Lagrangian:
    an ``_objective.Objective`` whose x-update is damped Newton (:func:`newton_minimise`).

    Attributes:
        fun: ``fun(x, theta) -> ()``, written in JAX (static).
        diagonal_hessian: whether ∇²f is diagonal (f separable): the Hessian is then the
            O(n) vector ∇²f·1 (static).
        floor: a lower bound kept by the x-update (static; ``None`` for none): the
            entropy's iterates stay at least √tiny inside its domain x > 0.
        theta: a pytree of arrays, the parameters.
        A: ``(p, n)`` equality operator.
        G: ``(m, n)`` inequality operator.
        f: ``(n,)`` weights of the bound block (zeros without bounds).
        sigma: ``()`` proximal weight (cσ).
        c: ``()`` cost scale: the solver minimises c·f (see ``_scaling.cost_scaling``).
    """

    fun: Callable
    diagonal_hessian: bool
    floor: Optional[float]
    theta: Any
    A: Operator
    G: Operator
    f: jax.Array
    sigma: jax.Array
    c: jax.Array = 1.0

    quadratic = False  # polishing takes Newton steps until they settle

    def value(self, x: jax.Array) -> jax.Array:
        return self.c * self.fun(x, self.theta)

    def gradient(self, x: jax.Array) -> jax.Array:
        return self.c * jax.grad(self.fun)(x, self.theta)

    def hessian_vector(self, x: jax.Array, v: jax.Array) -> jax.Array:
        return jax.jvp(self.gradient, (x,), (v,))[1]

    def hessian_operator(self, x: jax.Array) -> Operator:
        if self.diagonal_hessian:
            return Diagonal(self.hessian_vector(x, jnp.ones_like(x)))
        return Dense(self.c * jax.hessian(self.fun)(x, self.theta))

    def recession_slope(self, d_x: jax.Array) -> jax.Array:
        """No linear cost to certify unboundedness with: never certifies."""
        return jnp.full((), jnp.inf, d_x.dtype)

    def dual_objective(self, lam, nu, mu, constraints, x):
        """No closed-form dual: the stopping rule uses the residuals only."""
        return None

    def newton_system(self, x: jax.Array, rho: jax.Array):
        """The factor of ∇²f(x) + σI + ρC."""
        p, m = self.A.shape[0], self.G.shape[0]
        dtype = x.dtype
        return factor_system(
            self.hessian_operator(x), self.sigma + rho * self.f,
            self.A, jnp.full((p,), equality_weight(self.A), dtype) * rho, self.G, jnp.full((m,), 1.0, dtype) * rho,
        )

    def augmented_gradient(self, x: jax.Array, rho: jax.Array) -> jax.Array:
        """ρCx, by the operators' products (C is never formed)."""
        Cx = equality_weight(self.A) * self.A.rmv(self.A.mv(x)) + self.G.rmv(self.G.mv(x)) + self.f * x
        return rho * Cx

    def x_update(self, x: jax.Array, r: jax.Array, rho: jax.Array) -> jax.Array:
        # (5a) x⁺ = argmin f(x) + rᵀx + ρ/2 xᵀCx + σ/2‖x − xᵏ‖², by Newton from xᵏ
        x_new = newton_minimise(self, x, r, rho)
        return x_new if self.floor is None else jnp.maximum(x_new, self.floor)

    def jacobian_x_update(self, x, J_x, dgrad, R, rho) -> jax.Array:
        # (5ga) J_x⁺ = (∇²f(x⁺) + σI + ρC)⁻¹ (σJ_x − ∂_θ∇f − R)
        return self.newton_system(x, rho).solve(self.sigma * J_x - dgrad - R)

    rho_dependent = False  # at_rho returns the objective itself

    def at_rho(self, rho: jax.Array, changed: jax.Array) -> "SmoothObjective":
        return self

    def constraint_gram(self) -> None:
        """None: the Newton x-update keeps no Gram matrix for polishing to reuse."""
        return None


jax.tree_util.register_dataclass(
    SmoothObjective,
    data_fields=["theta", "A", "G", "f", "sigma", "c"],
    meta_fields=["fun", "diagonal_hessian", "floor"],
)


def _backtracking_step(phi, gradient_phi, x: jax.Array, step: jax.Array, gradient: jax.Array) -> jax.Array:
    """The step length t, halved from 1 until x + t·step is in f's open domain and φ
    decreases enough (Armijo), at most ``_LINE_SEARCH_HALVINGS`` times."""
    eps = jnp.finfo(x.dtype).eps
    slope, value = gradient @ step, phi(x)

    def rejected(t, count):
        x_trial = x + t * step
        trial, trial_gradient = phi(x_trial), gradient_phi(x_trial)
        # A trial point must lie in the open domain of f: finite value and gradient
        # (an entropy's x = 0 has a finite value but an infinite gradient).
        in_domain = jnp.isfinite(trial) & jnp.all(jnp.isfinite(trial_gradient))
        armijo = trial <= value + _ARMIJO * t * slope
        # Near the minimiser the decrease a Newton step promises, ~|∇φ|², falls below
        # the rounding of φ once |∇φ| ~ √eps: Armijo then rejects the step on noise.
        # Within rounding of φ, a step that does not increase ‖∇φ‖∞ is accepted
        # instead, so Newton goes on to round-off level.
        within_rounding = trial <= value + 10 * eps * jnp.abs(value)
        gradient_ok = jnp.max(jnp.abs(trial_gradient)) <= jnp.max(jnp.abs(gradient))
        bad = ~in_domain | ~(armijo | (within_rounding & gradient_ok))
        return bad & (count < _LINE_SEARCH_HALVINGS)

    def shrink(carry):
        t, count, _ = carry
        t, count = t * 0.5, count + 1
        return t, count, rejected(t, count)

    # The verdict on the current t is carried, and the loop's condition only reads it:
    # under vmap, a condition that recomputed the Armijo test could round differently
    # from the body's evaluation on a near-tie, and the batch would spin forever.
    one, zero = jnp.ones((), x.dtype), jnp.int32(0)
    return lax.while_loop(lambda carry: carry[2], shrink, (one, zero, rejected(one, zero)))[0]


def newton_minimise(objective: SmoothObjective, x0: jax.Array, r: jax.Array, rho) -> jax.Array:
    """Damped Newton on φ(x) = f(x) + rᵀx + ρ/2 xᵀCx + σ/2‖x − x0‖² from ``x0``.

    Backtracking halves the step until φ and ∇φ are finite and φ decreases enough
    (Armijo), so iterates never leave f's open domain (an entropy's x > 0 included)
    when ``x0`` is in it. Stops when the Newton step is at round-off level, or after 50
    steps.
    """
    eps = jnp.finfo(x0.dtype).eps
    sigma = objective.sigma

    def phi(x):
        Cx = objective.augmented_gradient(x, rho)
        return objective.value(x) + r @ x + 0.5 * x @ Cx + 0.5 * sigma * jnp.sum((x - x0) ** 2)

    def gradient_phi(x):
        return objective.gradient(x) + r + objective.augmented_gradient(x, rho) + sigma * (x - x0)

    def newton_step(carry):
        x, _, iteration = carry
        gradient = gradient_phi(x)
        step = -objective.newton_system(x, rho).solve(gradient)
        t = _backtracking_step(phi, gradient_phi, x, step, gradient)
        x_new = x + t * step
        small = jnp.max(jnp.abs(t * step)) <= 10 * eps * (1 + jnp.max(jnp.abs(x_new)))
        return x_new, small | ~jnp.all(jnp.isfinite(step)), iteration + 1

    def going(carry):
        _, done, iteration = carry
        return ~done & (iteration < _NEWTON_MAX_ITER)

    x, _, _ = lax.while_loop(going, newton_step, (x0, jnp.bool_(False), jnp.int32(0)))
    return x


def _smooth_forward(structure, make_objective, theta, constraints: Constraints, numerics, init, seeds):
    """Build the objective, scale its cost (``_scaling.cost_scaling`` at the starting
    point), and run the loop."""
    objective = make_objective(theta, constraints, numerics.sigma)
    x0 = init.x
    scaling = cost_scaling(objective.hessian_operator(x0), objective.gradient(x0),
                           constraints.b.shape[0], constraints.h.shape[0])
    objective = dataclasses.replace(objective, c=scaling.c, sigma=scaling.c * numerics.sigma)
    status0 = initial_status((theta, constraints.A, constraints.b, constraints.G, constraints.h), constraints)
    return run_objective(
        structure, objective, constraints, scaling, numerics, init, seeds, status0, (constraints.lb, constraints.ub)
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _solve_smooth(structure, make_objective, theta, constraints, numerics, init):
    return _smooth_forward(structure, make_objective, theta, constraints, numerics, init, None).solution


def _solve_smooth_fwd(structure, make_objective, theta, constraints, numerics, init):
    flags = {name: any(leaf.perturbed for leaf in jax.tree_util.tree_leaves(field))
             for name, field in zip(Constraints._fields, constraints)}
    theta_perturbed = any(leaf.perturbed for leaf in jax.tree_util.tree_leaves(theta))
    # θ enters like P does: through the cotangent of a virtual linear term (q's columns).
    perturbed = dict(flags, P=theta_perturbed, q=False)
    theta, constraints, numerics, init = jax.tree_util.tree_map(
        lambda leaf: leaf.value, (theta, constraints, numerics, init)
    )
    n, dtype = init.x.shape[0], init.x.dtype
    wrt = carried_parameters(perturbed)
    nb = constraints.lb.shape[0]
    sizes = (n, constraints.b.shape[0], constraints.h.shape[0], nb, nb)
    strategy = strategy_for(structure, make_objective(theta, constraints, numerics.sigma).diagonal_hessian)
    seeds = constant_seeds(sizes, wrt, dtype) if strategy.carries_jacobians else None
    forward = _smooth_forward(structure, make_objective, theta, constraints, numerics, init, seeds)
    blocks = split_columns(forward.J, sizes, wrt) if seeds is not None else (None,) * 5
    flags = tuple(flags[name] for name in Constraints._fields)
    return forward.solution, ({(strategy, flags): (forward._replace(J=None, polished_system=None), blocks)}, numerics, theta)


def _solve_smooth_bwd(structure, make_objective, residuals, cotangent: Solution):
    by_key, numerics, theta = residuals
    (((strategy, flags), (forward, blocks)),) = by_key.items()
    outputs = output_cotangent(cotangent, forward.solution)
    bars, _ = pull_back(strategy, structure, numerics, forward, blocks, outputs)
    x, lam, nu = masked_solution(forward.solution)
    wanted = dict(zip(Constraints._fields, flags))
    grads = data_gradients(x, lam, nu, *bars, matrices=(False, wanted["A"], wanted["G"]))
    q_bar = jnp.zeros_like(x) if bars[0] is None else bars[0]
    # θ̄ = (∂_θ∇f(x*; θ))ᵀ q̄: θ enters the stationarity condition as a linear term would.
    fun = forward.objective.fun
    _, pull_theta = jax.vjp(lambda t: jax.grad(fun)(x, t), theta)
    (theta_bar,) = pull_theta(q_bar)
    constraint_bars = []
    for name, wanted in zip(Constraints._fields, flags):
        grad = getattr(grads, name) if wanted else None
        if grad is not None and name in ("A", "G"):
            grad = Dense(grad)
        constraint_bars.append(grad)
    return theta_bar, Constraints(*constraint_bars), None, None


_solve_smooth.defvjp(_solve_smooth_fwd, _solve_smooth_bwd, symbolic_zeros=True)


def solve_smooth_objective(
    make_objective: Callable,
    theta: Any,
    constraints: Constraints,
    options: Optional[Options],
    init: Optional[Solution],
    x0: Optional[jax.Array],
    name: str,
) -> Solution:
    """Shared entry of every smooth layer: options, the starting point, the custom_vjp solve.

    ``make_objective(theta, constraints, sigma)`` builds the :class:`SmoothObjective`
    (static: a module-level function or a ``functools.partial`` of one with hashable
    arguments).
    """
    options = resolve_options(options)
    n, dtype = constraints.A.shape[1], constraints.b.dtype
    z0 = initial_iterate(init, constraints, n, dtype)
    if init is None and x0 is not None:
        z0 = z0._replace(x=x0, z=jnp.clip(constraints.B.mv(x0), constraints.lb, constraints.ub))
    structure = options.structure()._replace(scaling_iterations=0)
    try:
        return _solve_smooth(structure, make_objective, theta, constraints, options.numerics(dtype), z0)
    except TypeError as error:
        raise_forward_mode(error, name, "For forward-mode derivatives of a QP use altdiff_jax.jvp.")


def _general_objective(fun, theta, constraints: Constraints, sigma) -> SmoothObjective:
    return SmoothObjective(fun, False, None, theta, constraints.A, constraints.G, bound_diagonal(constraints), sigma)


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
    lb=None,
    ub=None,
    x0: Optional[jax.Array] = None,
) -> Solution:
    """Minimise a smooth convex ``objective(x, theta)`` subject to Ax = b, Gx <= h, lb <= x <= ub.

    The x-update of ADMM is a damped Newton solve with Hessians from JAX's autodiff, the
    result is polished by Newton steps on its active set, and differentiation works as
    for :func:`altdiff_jax.solve` (``Options.differentiation``, whose ``"auto"`` is
    ``"adjoint"`` here): ``jax.grad`` gives gradients for every array leaf of ``theta``
    and for A, b, G, h, lb, ub. Differences
    from :func:`altdiff_jax.solve`, by necessity: the data are not equilibrated
    (``Options.scaling_iterations`` is ignored: the objective is a black box), the
    stopping rule has no duality gap (no closed-form dual), and no unboundedness
    certificate exists for a general objective: an unbounded problem ends in
    ``MAX_ITER`` or ``NONFINITE``, never in a wrong ``SOLVED``.

    Args:
        objective: ``objective(x, theta) -> ()``, smooth and convex in ``x (n,)``; a
            hashable function (defined once, not a new lambda per call, to avoid
            recompilation).
        theta: a pytree of arrays, the parameters.
        A: ``(p, n)`` equality matrix, or None (given together with ``b``).
        b: ``(p,)`` equality right-hand side, or None (given together with ``A``).
        G: ``(m, n)`` inequality matrix, or None (given together with ``h``).
        h: ``(m,)`` inequality right-hand side, or None (given together with ``G``).
        options: :class:`Options`.
        init: a previous :class:`Solution` to start from.
        lb: ``(n,)`` lower bounds (entries may be ``-inf``), or None.
        ub: ``(n,)`` upper bounds (entries may be ``inf``), or None.
        x0: ``(n,)`` floating starting point of the primal iterate when ``init`` is None;
            needed when ``objective`` is undefined at 0 (the default start), as an
            entropy is. Its dtype and shape fix ``n`` and the dtype; otherwise they come
            from ``A`` or ``G``.

    Returns:
        :class:`Solution`.

    Raises:
        ValueError: at trace time, for inconsistent shapes or dtypes (naming the argument).

    Examples:
        >>> import jax.numpy as jnp
        >>> from altdiff_jax import solve_convex
        >>> def fun(x, theta):
        ...     return jnp.sum((x - theta) ** 2) + jnp.log(jnp.sum(jnp.exp(x)))
        >>> sol = solve_convex(fun, jnp.array([2.0, 0.0]), ub=jnp.ones(2))
        >>> round(float(sol.x[0]), 3)
        1.0
    """
    if x0 is not None:
        x0 = jnp.asarray(x0)
        if x0.ndim != 1 or not jnp.issubdtype(x0.dtype, jnp.floating):
            raise ValueError(f"x0 must be a floating vector of shape (n,), got shape {x0.shape} and dtype {x0.dtype}")
    template = next((v for v in (x0, A, G, lb, ub) if v is not None), None)
    if template is None:
        raise ValueError("solve_convex needs x0, A, G, lb or ub to know the number of variables n")
    template = jnp.asarray(template)
    if template.dtype not in (jnp.dtype("float32"), jnp.dtype("float64")):
        raise ValueError(
            f"solve_convex: x0/A/G/lb/ub must have dtype float32 or float64, got {template.dtype}"
        )
    n = template.shape[1] if template.ndim == 2 else template.shape[0]
    dtype = template.dtype
    source, reference = f"the problem's n = {n}", "x0/A/G/lb/ub"
    A, b = constraint_block("solve_convex", A, b, ("A", "b"), n, dtype, source, reference)
    G, h = constraint_block("solve_convex", G, h, ("G", "h"), n, dtype, source, reference)
    lb, ub = bounds("solve_convex", lb, ub, n, dtype, source, reference)
    constraints = Constraints(Dense(A), b, Dense(G), h, lb, ub)
    make_objective = functools.partial(_general_objective, objective)
    return solve_smooth_objective(make_objective, theta, constraints, options, init, x0, "solve_convex")
