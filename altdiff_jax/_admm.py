"""One ADMM iteration (paper eqs. 5a–5d, with over-relaxation and a bound block),
residuals with the duality gap, and infeasibility certificates."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from ._iterate import Iterate, inf_norms
from ._linalg import inner, max_over, packed_scalars
from ._objective import support
from ._xupdate import equality_weight
from ._problem import Constraints


def relaxed_Gx(constraints: Constraints, Gx: jax.Array, s: jax.Array, alpha) -> jax.Array:
    """Over-relaxed Gx⁺: α Gx⁺ + (1 − α)(h − s); α = 1 is the paper's iteration."""
    return alpha * Gx + (1.0 - alpha) * (constraints.h - s)


def slack_argument(constraints: Constraints, Gx_hat: jax.Array, nu: jax.Array, rho) -> jax.Array:
    """−ν/ρ − (Gx̂ − h): its positive part is the slack update (5b)."""
    return -nu / rho - (Gx_hat - constraints.h)


def admm_step(objective, constraints: Constraints, z: Iterate, rho, alpha) -> Iterate:
    """One iteration of paper eqs. (5a)–(5d), Gauss–Seidel order, relaxed by α.

    The bound block lb <= x <= ub is the same splitting with the identity for G and a
    two-sided projection: its copy z_B of x and multiplier μ follow (5b)/(5d) with
    s = ub − z_B (upper side) and z_B − lb (lower side) merged into one clip.
    """
    A, b, G, h, lb, ub = constraints
    B, f = constraints.B, constraints.bound_rows()
    rho_eq = equality_weight(A) * rho
    # (5a) x⁺ = argmin L(x, s, λ, ν) + σ/2‖x − xᵏ‖²:
    # ∇f(x⁺) + σ(x⁺ − xᵏ) + Aᵀ(λ + ρ(Ax⁺ − b)) + Gᵀ(ν + ρ(Gx⁺ + s − h)) + f(μ + ρ(x⁺ − z_B)) = 0
    r = A.rmv(z.lam - rho_eq * b) + G.rmv(z.nu + rho * (z.s - h)) + B.rmv(f * (z.mu - rho * z.z))
    x = objective.x_update(z.x, r, rho)
    Gx_hat = relaxed_Gx(constraints, G.mv(x), z.s, alpha)
    # (5b) s⁺ = max(0, −ν/ρ − (Gx̂ − h))
    argument = slack_argument(constraints, Gx_hat, z.nu, rho)
    s = jnp.maximum(0.0, argument)
    # (5c) λ⁺ = λ + ρ(Ax̂ − b), Ax̂ = αAx⁺ + (1 − α)b
    lam = z.lam + rho_eq * alpha * (A.mv(x) - b)
    # (5d) ν⁺ = ν + ρ(Gx̂ + s⁺ − h) = ρ(s⁺ − argument): written so, ν⁺ >= 0 exactly
    nu = rho * (s - argument)
    # Bound block: v = x̂ + μ/ρ, z_B⁺ = Π_[lb, ub](v), μ⁺ = μ + ρ(x̂ − z_B⁺) = ρ(v − z_B⁺),
    # with x̂ = αx⁺ + (1 − α)z_B; written so, μ⁺ is exactly 0 between the bounds and
    # never points along an infinite side.
    v = alpha * B.mv(x) + (1.0 - alpha) * z.z + z.mu / rho
    z_B = jnp.clip(v, lb, ub)
    mu = rho * (v - z_B)
    return Iterate(x, s, lam, nu, z_B, mu)


class Residuals(NamedTuple):
    """Residuals and duality gap in the user's scaling, their tolerance scales, and the
    primal/dual balance in the solver's scaling (which drives the adaptive ρ), packed in one
    vector: one compiled kernel computes them and the loops carry one array (each scalar on
    its own would be a kernel of its own: ``_linalg.packed_scalars``)."""

    values: jax.Array  # (7,): the properties below, in their order

    primal = property(lambda self: self.values[0])
    dual = property(lambda self: self.values[1])
    gap = property(lambda self: self.values[2])
    primal_scale = property(lambda self: self.values[3])
    dual_scale = property(lambda self: self.values[4])
    gap_scale = property(lambda self: self.values[5])
    scaled_balance = property(lambda self: self.values[6])  # (r_prim / scale) / (r_dual / scale), scaled space

    def merit(self, tol: jax.Array) -> jax.Array:
        """The largest of the three ratios residual / (tol (1 + scale)); <= 1 is converged."""
        return jnp.max(self.values[:3] / (tol * (1 + self.values[3:6])))


def residuals(objective, constraints: Constraints, z: Iterate, scaling) -> Residuals:
    """Primal ‖(Ax − b, Gx + s − h, x − z_B)‖∞, dual ‖∇f(x) + Aᵀλ + Gᵀν + μ‖∞ and the
    duality gap |f(x) − d(λ, ν, μ)| of the user's problem, computed from the scaled
    iterate through the diagonal maps of ``scaling``.

    The scales follow OSQP (‖Ax‖, ‖b‖, ‖Gx‖, ‖h − s‖, ‖x_B‖ for the primal, the terms of
    the gradient of the Lagrangian for the dual), so a huge right-hand side of an
    inactive row does not loosen the test; the gap is relative to the objective
    (Clarabel's rule), which is what makes SOLVED mean optimal, not only nearly feasible.
    """
    A, b, G, h, lb, ub = constraints
    B, f = constraints.B, constraints.bound_rows()
    D, E_A, E_G, c = scaling
    Ax, Gx, Bx, D_B = A.mv(z.x), G.mv(z.x), B.mv(z.x), B.mv(D)
    grad, At_lam, Gt_nu = objective.gradient(z.x), A.rmv(z.lam), G.rmv(z.nu)
    eq, ineq, bound_gap = Ax - b, Gx + z.s - h, f * (Bx - z.z)
    stat = grad + At_lam + Gt_nu + B.rmv(z.mu)
    primal_terms = [eq / E_A, ineq / E_G, D_B * bound_gap]
    scale_terms = [Ax / E_A, b / E_A, Gx / E_G, (h - z.s) / E_G, f * D_B * Bx, f * D_B * z.z]
    dual_terms = [grad / D, At_lam / D, Gt_nu / D, z.mu / D_B]
    scaled_primal_terms = [eq, ineq, bound_gap]
    scaled_scale_terms = [Ax, b, Gx, h - z.s, f * Bx, f * z.z]
    scaled_dual_terms = [grad, At_lam, Gt_nu, z.mu]
    (primal, dual, primal_scale, dual_scale, scaled_primal, scaled_primal_scale, scaled_dual,
     scaled_dual_scale) = inf_norms(primal_terms, stat / D, scale_terms, dual_terms, scaled_primal_terms,
                                    scaled_scale_terms, stat, scaled_dual_terms)
    dual, dual_scale = dual / c, dual_scale / c
    gap, gap_scale = jnp.zeros((), z.x.dtype), jnp.zeros((), z.x.dtype)
    dual_value = objective.dual_objective(z.lam, z.nu, z.mu, constraints, z.x)
    if dual_value is not None:
        primal_value = objective.value(z.x)
        gap = jnp.abs(primal_value - dual_value) / c
        gap = jnp.where(jnp.isnan(gap), jnp.inf, gap)
        gap_scale = jnp.minimum(jnp.abs(primal_value), jnp.abs(dual_value)) / c
    tiny = jnp.finfo(z.x.dtype).tiny
    balance = (scaled_primal / (scaled_primal_scale + tiny)) / (scaled_dual / (scaled_dual_scale + tiny) + tiny)
    return Residuals(packed_scalars(primal, dual, gap, primal_scale, dual_scale, gap_scale, balance))


def primal_infeasible(constraints: Constraints, d: Iterate, scaling, tol) -> jax.Array:
    """Farkas certificate from successive dual differences δy = (δλ, δν, δμ), OSQP-style:
    ‖Aᵀδλ + Gᵀδν + δμ‖∞ <= tol ‖δy‖∞, bᵀδλ + hᵀδν + max_{lb<=z<=ub} δμᵀz < −tol ‖δy‖∞
    and δν >= −tol ‖δy‖∞, all in the user's scaling (``d`` is the difference of two
    scaled iterates)."""
    A, b, G, h, lb, ub = constraints
    D, E_A, E_G, c = scaling
    # Unscaled differences are E δỹ / c (and δμ̃ / (cD)); c cancels from every homogeneous test.
    normal = A.rmv(d.lam) + G.rmv(d.nu) + constraints.B.rmv(d.mu)
    size, normal_size = inf_norms((E_A * d.lam, E_G * d.nu, d.mu / constraints.B.mv(D)), normal / D)
    value = inner(b, d.lam) + inner(h, d.nu) + support(d.mu, lb, ub)
    sign_ok = -max_over(-E_G * d.nu) >= -tol * size
    return (size > 0) & (normal_size <= tol * size) & (value < -tol * size) & sign_ok


def dual_infeasible(objective, constraints: Constraints, x, d_x, scaling, tol) -> jax.Array:
    """Unboundedness certificate from successive primal differences δx, OSQP-style:
    ‖Pδx‖∞ <= tol ‖δx‖∞, qᵀδx < −tol ‖δx‖∞, Aδx = 0, Gδx <= 0 and δx in the recession
    cone of [lb, ub] (δx_i <= 0 where ub_i is finite, >= 0 where lb_i is), up to tol ‖δx‖∞."""
    A, _, G, _, lb, ub = constraints
    D, E_A, E_G, c = scaling
    size, curvature, equalities = inf_norms(D * d_x, objective.hessian_vector(x, d_x) / D, A.mv(d_x) / E_A)
    curvature = curvature / c
    descent = objective.recession_slope(d_x) / c  # qᵀδx for a QP
    user = constraints.B.mv(D * d_x)
    above = max_over(jnp.where(jnp.isfinite(ub), user, -jnp.inf))
    below = max_over(jnp.where(jnp.isfinite(lb), -user, -jnp.inf))
    inequalities = jnp.maximum(max_over(G.mv(d_x) / E_G), jnp.maximum(above, below))
    return (
        (size > 0)
        & (curvature <= tol * size)
        & (descent < -tol * size)
        & (equalities <= tol * size)
        & (inequalities <= tol * size)
    )
