"""One ADMM iteration (paper eqs. 5a–5d) and the residuals of the stopping rule."""

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


def slack_argument(constraints: Constraints, x: jax.Array, nu: jax.Array, rho: jax.Array):
    """−ν/ρ − (Gx⁺ − h): its positive part is the slack update (5b)."""
    return -nu / rho - (constraints.G @ x - constraints.h)


def admm_step(objective, constraints: Constraints, z: Iterate, rho: jax.Array) -> Iterate:
    """One iteration of paper eqs. (5a)–(5d), Gauss–Seidel order."""
    A, b, G, h = constraints
    # (5a) x⁺ = argmin L(x, s, λ, ν): ∇f(x⁺) + Aᵀ(λ + ρ(Ax⁺ − b)) + Gᵀ(ν + ρ(Gx⁺ + s − h)) = 0
    r = A.T @ (z.lam - rho * b) + G.T @ (z.nu + rho * (z.s - h))
    x = objective.x_update(z.x, r, rho)
    # (5b) s⁺ = max(0, −ν/ρ − (Gx⁺ − h))
    s = jnp.maximum(0.0, slack_argument(constraints, x, z.nu, rho))
    # (5c) λ⁺ = λ + ρ(Ax⁺ − b)
    lam = z.lam + rho * (A @ x - b)
    # (5d) ν⁺ = ν + ρ(Gx⁺ + s⁺ − h)
    nu = z.nu + rho * (G @ x + s - h)
    return Iterate(x, s, lam, nu)


class Residuals(NamedTuple):
    """Residuals and the OSQP-style scales their tolerances are relative to."""

    primal: jax.Array
    dual: jax.Array
    primal_scale: jax.Array
    dual_scale: jax.Array


def residuals(objective, constraints: Constraints, z: Iterate) -> Residuals:
    """Primal ‖(Ax − b, Gx + s − h)‖∞ and dual ‖∇f(x) + Aᵀλ + Gᵀν‖∞ with their scales."""
    A, b, G, h = constraints
    Ax, Gx = A @ z.x, G @ z.x
    grad = objective.gradient(z.x)
    At_lam, Gt_nu = A.T @ z.lam, G.T @ z.nu
    primal = jnp.maximum(inf_norm(Ax - b), inf_norm(Gx + z.s - h))
    dual = inf_norm(grad + At_lam + Gt_nu)
    primal_scale = jnp.max(jnp.stack([inf_norm(v) for v in (Ax, b, Gx, z.s, h)]))
    dual_scale = jnp.max(jnp.stack([inf_norm(v) for v in (grad, At_lam, Gt_nu)]))
    return Residuals(primal, dual, primal_scale, dual_scale)
