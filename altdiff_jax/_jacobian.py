"""One Alt-Diff Jacobian iteration (paper eqs. 5ga–5gd), run beside the ADMM step."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from ._admm import Iterate, relaxed_Gx, slack_argument
from ._problem import Constraints


class Seeds(NamedTuple):
    """Derivatives of the problem data with respect to the k carried parameters.

    Attributes:
        grad: ``(n, k)`` ∂_θ∇f; for a QP, the block of I_n on the columns of q.
        b: ``(p, k)`` ∂_θb; I_p on the columns of b.
        h: ``(m, k)`` ∂_θh; I_m on the columns of h.
    """

    grad: jax.Array
    b: jax.Array
    h: jax.Array


def parameter_seeds(n: int, p: int, m: int, wrt: tuple[bool, bool, bool], dtype) -> Seeds:
    """Seeds for the columns of q, b and h, each block present only if carried.

    Args:
        wrt: whether to carry columns for (q, b, h), in that column order.
    """
    sizes = [size if carried else 0 for size, carried in zip((n, p, m), wrt)]
    k = sum(sizes)
    blocks, offset = [], 0
    for rows, size in zip((n, p, m), sizes):
        block = jnp.zeros((rows, k), dtype)
        if size:
            block = block.at[:, offset : offset + size].set(jnp.eye(rows, dtype=dtype))
        blocks.append(block)
        offset += size
    return Seeds(*blocks)


def active_margin(constraints: Constraints, tol) -> jax.Array:
    """``(m,)`` tol·(1 + |h|): a constraint whose slack-update argument −ν/ρ + s is within
    this of 0 is treated as active. Strictly complementary constraints are far from
    it at the solution; a weakly active one (s = ν = 0) has no unique derivative, and
    this makes its tie-break deterministic instead of a matter of round-off."""
    return tol * (1.0 + jnp.abs(constraints.h))


def zero_jacobian(z: Iterate, k: int) -> Iterate:
    """The paper's initial Jacobians: all zero, with k columns."""
    return Iterate(*(jnp.zeros(v.shape + (k,), v.dtype) for v in z))


def jacobian_step(
    objective,
    constraints: Constraints,
    seeds: Seeds,
    z_old: Iterate,
    z_new: Iterate,
    J: Iterate,
    rho,
    alpha,
    margin,
) -> Iterate:
    """Differentiate the ADMM step ``z_old -> z_new`` (eqs. 5a–5d with relaxation α): ``J -> J⁺``.

    ρ is held constant within the step (an adaptive ρ changes the transient, not the
    fixed point, which is the differentiated KKT system: math note §4). ``margin``
    ``(m,)`` is the tie-break of weakly active constraints (see :func:`active_margin`).
    """
    A, _, G, _ = constraints
    # (5ga) J_x⁺ = −H⁻¹ (∂_θ∇f + Aᵀ(J_λ − ρ∂_θb) + Gᵀ(J_ν + ρ(J_s − ∂_θh)))
    R = A.T @ (J.lam - rho * seeds.b) + G.T @ (J.nu + rho * (J.s - seeds.h))
    J_x = objective.jacobian_x_update(z_new.x, seeds.grad, R, rho)
    # Relaxation: ∂(Gx̂) = α G J_x⁺ + (1 − α)(∂_θh − J_s)
    J_Gx_hat = alpha * (G @ J_x) + (1.0 - alpha) * (seeds.h - J.s)
    # (5gb) J_s⁺ = D⁺ (−J_ν/ρ − ∂(Gx̂) + ∂_θh), D⁺ = diag(1[s⁺ > margin]); a weakly
    # active constraint (argument within the margin of 0) is treated as active.
    Gx_hat = relaxed_Gx(constraints, G @ z_new.x, z_old.s, alpha)
    positive = slack_argument(constraints, Gx_hat, z_old.nu, rho) > margin
    J_s = jnp.where(positive[:, None], -J.nu / rho - J_Gx_hat + seeds.h, 0.0)
    # (5gc) J_λ⁺ = J_λ + ρα(A J_x⁺ − ∂_θb)
    J_lam = J.lam + rho * alpha * (A @ J_x - seeds.b)
    # (5gd) J_ν⁺ = J_ν + ρ(∂(Gx̂) + J_s⁺ − ∂_θh)
    J_nu = J.nu + rho * (J_Gx_hat + J_s - seeds.h)
    return Iterate(J_x, J_s, J_lam, J_nu)
