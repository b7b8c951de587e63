"""One ADMM iteration (paper eqs. 5a–5d, with over-relaxation), residuals and
infeasibility certificates."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from ._problem import Constraints


class Iterate(NamedTuple):
    """ADMM iterate, or (with a trailing column axis) its Jacobian.

    Attributes:
        x: ``(n,)`` primal, or ``(n, k)`` for a Jacobian with k columns.
        s: ``(m,)`` slack of ``Gx + s = h``.
        lam: ``(p,)`` equality multiplier λ.
        nu: ``(m,)`` inequality multiplier ν.
    """

    x: jax.Array
    s: jax.Array
    lam: jax.Array
    nu: jax.Array


def inf_norm(v: jax.Array) -> jax.Array:
    """‖v‖∞, defined as 0 for an empty array (an absent constraint block)."""
    return jnp.max(jnp.abs(v), initial=0.0)


def relaxed_Gx(constraints: Constraints, Gx: jax.Array, s: jax.Array, alpha) -> jax.Array:
    """Over-relaxed Gx⁺: α Gx⁺ + (1 − α)(h − s); α = 1 is the paper's iteration."""
    return alpha * Gx + (1.0 - alpha) * (constraints.h - s)


def slack_argument(constraints: Constraints, Gx_hat: jax.Array, nu: jax.Array, rho) -> jax.Array:
    """−ν/ρ − (Gx̂ − h): its positive part is the slack update (5b)."""
    return -nu / rho - (Gx_hat - constraints.h)


def admm_step(objective, constraints: Constraints, z: Iterate, rho, alpha) -> Iterate:
    """One iteration of paper eqs. (5a)–(5d), Gauss–Seidel order, relaxed by α."""
    A, b, G, h = constraints
    # (5a) x⁺ = argmin L(x, s, λ, ν): ∇f(x⁺) + Aᵀ(λ + ρ(Ax⁺ − b)) + Gᵀ(ν + ρ(Gx⁺ + s − h)) = 0
    r = A.T @ (z.lam - rho * b) + G.T @ (z.nu + rho * (z.s - h))
    x = objective.x_update(z.x, r, rho)
    Gx_hat = relaxed_Gx(constraints, G @ x, z.s, alpha)
    # (5b) s⁺ = max(0, −ν/ρ − (Gx̂ − h))
    s = jnp.maximum(0.0, slack_argument(constraints, Gx_hat, z.nu, rho))
    # (5c) λ⁺ = λ + ρ(Ax̂ − b), Ax̂ = αAx⁺ + (1 − α)b
    lam = z.lam + rho * alpha * (A @ x - b)
    # (5d) ν⁺ = ν + ρ(Gx̂ + s⁺ − h)
    nu = z.nu + rho * (Gx_hat + s - h)
    return Iterate(x, s, lam, nu)


class Residuals(NamedTuple):
    """Residuals in the user's scaling, their OSQP-style scales, and the same ratio in
    the solver's scaling (which drives the adaptive ρ)."""

    primal: jax.Array
    dual: jax.Array
    primal_scale: jax.Array
    dual_scale: jax.Array
    scaled_balance: jax.Array  # (r_prim / scale) / (r_dual / scale), scaled space


def _max_norm(*vectors) -> jax.Array:
    return jnp.max(jnp.stack([inf_norm(v) for v in vectors]))


def residuals(objective, constraints: Constraints, z: Iterate, scaling) -> Residuals:
    """Primal ‖(Ax − b, Gx + s − h)‖∞ and dual ‖∇f(x) + Aᵀλ + Gᵀν‖∞ of the user's problem,
    computed from the scaled iterate through the diagonal maps of ``scaling``."""
    A, b, G, h = constraints
    D, E_A, E_G, c = scaling
    Ax, Gx = A @ z.x, G @ z.x
    grad, At_lam, Gt_nu = objective.gradient(z.x), A.T @ z.lam, G.T @ z.nu
    eq, ineq, stat = Ax - b, Gx + z.s - h, grad + At_lam + Gt_nu
    primal = jnp.maximum(inf_norm(eq / E_A), inf_norm(ineq / E_G))
    dual = inf_norm(stat / D) / c
    primal_scale = _max_norm(Ax / E_A, b / E_A, Gx / E_G, z.s / E_G, h / E_G)
    dual_scale = _max_norm(grad / D, At_lam / D, Gt_nu / D) / c
    tiny = jnp.finfo(z.x.dtype).tiny
    scaled_primal = jnp.maximum(inf_norm(eq), inf_norm(ineq)) / (_max_norm(Ax, b, Gx, z.s, h) + tiny)
    scaled_dual = inf_norm(stat) / (_max_norm(grad, At_lam, Gt_nu) + tiny)
    balance = scaled_primal / (scaled_dual + tiny)
    return Residuals(primal, dual, primal_scale, dual_scale, balance)


def primal_infeasible(constraints: Constraints, d_lam, d_nu, scaling, tol) -> jax.Array:
    """Farkas certificate from successive dual differences (δλ, δν), OSQP-style:
    ‖Aᵀδλ + Gᵀδν‖∞ <= tol ‖δy‖∞, bᵀδλ + hᵀδν < −tol ‖δy‖∞ and δν >= −tol ‖δy‖∞,
    all in the user's scaling."""
    A, b, G, h = constraints
    D, E_A, E_G, c = scaling
    # Unscaled differences are E δỹ / c; c cancels from every homogeneous test.
    size = jnp.maximum(inf_norm(E_A * d_lam), inf_norm(E_G * d_nu))
    normal = inf_norm((A.T @ d_lam + G.T @ d_nu) / D)
    support = b @ d_lam + h @ d_nu
    sign_ok = jnp.min(E_G * d_nu, initial=0.0) >= -tol * size
    return (size > 0) & (normal <= tol * size) & (support < -tol * size) & sign_ok


def dual_infeasible(objective, constraints: Constraints, x, d_x, scaling, tol) -> jax.Array:
    """Unboundedness certificate from successive primal differences δx, OSQP-style:
    ‖Pδx‖∞ <= tol ‖δx‖∞, qᵀδx < −tol ‖δx‖∞, Aδx = 0 and Gδx <= 0 up to tol ‖δx‖∞."""
    A, _, G, _ = constraints
    D, E_A, E_G, c = scaling
    size = inf_norm(D * d_x)
    curvature = inf_norm(objective.hessian_vector(x, d_x) / D) / c
    descent = objective.recession_slope(d_x) / c  # qᵀδx for a QP
    equalities = inf_norm(A @ d_x / E_A)
    inequalities = jnp.max(G @ d_x / E_G, initial=0.0)
    return (
        (size > 0)
        & (curvature <= tol * size)
        & (descent < -tol * size)
        & (equalities <= tol * size)
        & (inequalities <= tol * size)
    )
