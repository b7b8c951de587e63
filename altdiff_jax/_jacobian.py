"""One Alt-Diff Jacobian iteration (paper eqs. 5ga–5gd), run beside the ADMM step, and
the active sets that freeze it at a solution."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from ._iterate import Iterate, Seeds
from ._linalg import all_over
from ._xupdate import equality_weight
from ._problem import Constraints


def active_margin(values: jax.Array, tol) -> jax.Array:
    """tol·(1 + |value|): a constraint within this of switching is treated as active.

    Strictly complementary constraints are far from it at the solution; a weakly active
    one (slack and multiplier both 0) has no unique derivative, and the margin makes its
    tie-break deterministic (active) instead of a matter of round-off."""
    return tol * (1.0 + jnp.abs(values))


class ActiveSet(NamedTuple):
    """Which constraints hold with equality: ``inequality (m,)``, ``upper (nb,)`` and
    ``lower (nb,)`` booleans (equalities always do)."""

    inequality: jax.Array
    upper: jax.Array
    lower: jax.Array


def same_active_set(first: ActiveSet, second: ActiveSet) -> jax.Array:
    """Whether two active sets are equal, as a traced bool."""
    return all_over(jnp.concatenate([jnp.ravel(a == b) for a, b in zip(first, second)]))


def bound_sides(constraints: Constraints, v: jax.Array, tol) -> tuple[jax.Array, jax.Array]:
    """Which bounds the projection Π_[lb, ub](v) lands on, with the weak-activity margin.

    Returns:
        ``(upper, lower)`` booleans ``(nb,)``: v >= ub − margin, or v <= lb + margin (a
        variable with lb = ub counts on the side v is further beyond).
    """
    lb, ub = constraints.lb, constraints.ub
    finite_u, finite_l = jnp.isfinite(ub), jnp.isfinite(lb)
    ub_f, lb_f = jnp.where(finite_u, ub, 0.0), jnp.where(finite_l, lb, 0.0)
    upper = finite_u & (v >= ub_f - active_margin(ub_f, tol))
    lower = finite_l & (v <= lb_f + active_margin(lb_f, tol))
    upper = upper & (~lower | (v - ub_f >= lb_f - v))
    return upper, lower & ~upper


def active_set(constraints: Constraints, slack: jax.Array, nu, x, mu, rho, tol) -> ActiveSet:
    """The active set at a (near-)solution: inequality i is active iff s_i − ν_i/ρ is
    within the margin of 0 (the Alt-Diff mask of eq. 5gb at its fixed point: it treats a
    weakly active constraint as active); a bound is active iff x + μ/ρ projects onto it.

    Applied to a point that is not a fixed point (a polished one, with ``slack = h − Gx``),
    this is the primal-dual active-set rule: a violated inactive row, or a positive bound
    overshoot, joins; a row with a wrong-signed multiplier leaves.
    """
    inequality = slack - nu / rho <= active_margin(constraints.h, tol)
    upper, lower = bound_sides(constraints, constraints.B.mv(x) + mu / rho, tol)
    return ActiveSet(inequality, upper, lower)


def jacobian_step(
    objective,
    constraints: Constraints,
    seeds: Seeds,
    z_old: Iterate,
    z_new: Iterate,
    J: Iterate,
    rho,
    alpha,
    tol,
) -> Iterate:
    """Differentiate the ADMM step ``z_old -> z_new`` (eqs. 5a–5d with relaxation α and
    the bound block): ``J -> J⁺``.

    ρ is held constant within the step (an adaptive ρ changes the transient, not the
    fixed point, which is the differentiated KKT system: ``docs/mathematics.md``,
    "Alternating differentiation"). ``tol`` sets the tie-break of weakly active constraints
    (see :func:`active_margin`).
    """
    A, _, G, _, _, _ = constraints
    B, f = constraints.B, constraints.bound_rows()
    rho_eq = equality_weight(A) * rho
    # (5ga) J_x⁺ = H⁻¹ (σJ_x − ∂_θ∇f − Aᵀ(J_λ − ρ∂_θb) − Gᵀ(J_ν + ρ(J_s − ∂_θh)) − f(J_μ − ρJ_z))
    R = A.rmv(J.lam - rho_eq * seeds.b) + G.rmv(J.nu + rho * (J.s - seeds.h)) + B.rmv(f[:, None] * (J.mu - rho * J.z))
    J_x = objective.jacobian_x_update(z_new.x, J.x, seeds.grad, R, rho)
    # Relaxation: ∂(Gx̂) = α G J_x⁺ + (1 − α)(∂_θh − J_s)
    J_Gx_hat = alpha * G.mv(J_x) + (1.0 - alpha) * (seeds.h - J.s)
    # (5gb) J_s⁺ = D⁺ (−J_ν/ρ − ∂(Gx̂) + ∂_θh), D⁺ = diag(1[s⁺ > margin]); a weakly
    # active constraint (argument within the margin of 0) is treated as active. s⁺ is the
    # positive part of the slack argument and the margin is positive, so s⁺ > margin
    # exactly when the argument is.
    positive = z_new.s > active_margin(constraints.h, tol)
    J_s = jnp.where(positive[:, None], -J.nu / rho - J_Gx_hat + seeds.h, 0.0)
    # (5gc) J_λ⁺ = J_λ + ρα(A J_x⁺ − ∂_θb)
    J_lam = J.lam + rho_eq * alpha * (A.mv(J_x) - seeds.b)
    # (5gd) J_ν⁺ = J_ν + ρ(∂(Gx̂) + J_s⁺ − ∂_θh)
    J_nu = J.nu + rho * (J_Gx_hat + J_s - seeds.h)
    # Bound block, the same rules: with v = x̂ + μ/ρ, J_z⁺ = ∂_θ(bound) on an active
    # side, else J_v;  J_μ⁺ = ρ(J_v − J_z⁺)
    v = alpha * B.mv(z_new.x) + (1.0 - alpha) * z_old.z + z_old.mu / rho
    upper, lower = bound_sides(constraints, v, tol)
    J_v = alpha * B.mv(J_x) + (1.0 - alpha) * J.z + J.mu / rho
    J_z = jnp.where(upper[:, None], seeds.ub, jnp.where(lower[:, None], seeds.lb, J_v))
    J_mu = rho * (J_v - J_z)
    return Iterate(J_x, J_s, J_lam, J_nu, J_z, J_mu)
