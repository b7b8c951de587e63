"""Differentiation strategies of reverse mode: one value per ``Options.differentiation``.

A strategy says what the forward pass must carry and keep for the backward pass, and
how a cotangent of the solution is pulled back to the cotangents of the user's (q, b, h,
lb, ub). ``Options`` keeps accepting the strings; :func:`strategy_for` resolves them
(and ``"auto"``) in one place, and the custom_vjp rules (``_solve``, ``_smooth``) call
the resolved value instead of comparing strings. A strategy is a frozen, field-less
dataclass: hashable and equal to any other instance of its class, so it travels in the
residuals' tree structure as static data.

Every strategy ends in the same place: cotangents of the scaled seeds (∂∇f, ∂b, ∂h, ∂lb,
∂ub), mapped to the user's q, b, h, lb, ub (``docs/mathematics.md``, "Gradients of every
parameter"). The masking of a failed solve is common to all and stays in
``_solve.pull_back``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax.numpy as jnp

from ._adjoint import AdjointInfo, adjoint_vjp
from ._iterate import Iterate, all_finite
from ._kkt import kkt_vjp
from ._options import Numerics, Structure
from ._solution import Status


@dataclasses.dataclass(frozen=True)
class Strategy:
    """The interface of a differentiation strategy.

    Attributes:
        name: the ``Options.differentiation`` string it is chosen by.
        carries_jacobians: the forward loop carries the Alt-Diff Jacobians of the
            parameter columns (eqs. 5ga–5gd), and the pullback contracts them.
    """

    name: ClassVar[str]
    carries_jacobians: ClassVar[bool] = False

    def residuals(self, forward: Any) -> Any:
        """``forward`` (a ``_solve._Run``) pruned to what :meth:`cotangents` reads."""
        raise NotImplementedError

    def cotangents(self, structure: Structure, numerics: Numerics, forward: Any, blocks,
                   cotangent: Iterate) -> tuple[list, AdjointInfo]:
        """Cotangent of the solution -> ``([q̄, b̄, h̄, l̄b, ūb], AdjointInfo)``, unmasked
        (None where not computed). ``blocks``: the carried Jacobian blocks of q, b, h,
        lb, ub (None where not carried, and all None unless :attr:`carries_jacobians`)."""
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class AltDiff(Strategy):
    """The paper's method: the forward loop carries the Jacobians (one column per
    parameter entry); the pullback contracts them with the cotangent."""

    name: ClassVar[str] = "altdiff"
    carries_jacobians: ClassVar[bool] = True

    def residuals(self, forward):
        return forward._replace(objective=None, constraints=None, J=None, polished_system=None)

    def cotangents(self, structure, numerics, forward, blocks, cotangent):
        bars = []
        for J in blocks:
            bars.append(None if J is None else sum(block.T @ g for block, g in zip(J, cotangent)))
        info = forward.solution.info
        return bars, AdjointInfo(info.status, info.iterations, info.jacobian_change)


def _scaled_cotangent(forward, cotangent: Iterate) -> Iterate:
    # The output map (x, s, λ, ν, z, μ) = U(x̃, s̃, λ̃, ν̃, z̃, μ̃) is diagonal, so Uᵀ = U.
    return forward.scaling.unscale(cotangent)


@dataclasses.dataclass(frozen=True)
class Adjoint(Strategy):
    """Nothing carried forward; the backward pass iterates the transposed Alt-Diff
    recursion on the cotangent (``_adjoint.adjoint_vjp``)."""

    name: ClassVar[str] = "adjoint"

    def residuals(self, forward):
        return forward._replace(polished_system=None)

    def cotangents(self, structure, numerics, forward, blocks, cotangent):
        scaled_cotangent = _scaled_cotangent(forward, cotangent)
        sigma_bar, info = adjoint_vjp(
            forward.objective, forward.constraints, forward.z, forward.solution.info.rho, numerics.alpha,
            scaled_cotangent, numerics.tol, structure.max_iter,
        )
        return list(forward.scaling.parameter_cotangents(sigma_bar)), info


@dataclasses.dataclass(frozen=True)
class KKT(Strategy):
    """Nothing carried forward; the backward pass solves the KKT system on the active set
    at the solution, as OptNet does (``_kkt.kkt_vjp``), with the polish's factor when the
    solution is polished."""

    name: ClassVar[str] = "kkt"

    def residuals(self, forward):
        return forward

    def cotangents(self, structure, numerics, forward, blocks, cotangent):
        solution, z = forward.solution, forward.z
        scaled_cotangent = _scaled_cotangent(forward, cotangent)
        sigma_bar, change = kkt_vjp(forward.objective, forward.constraints, z, solution.info.rho, numerics.tol,
                                    scaled_cotangent, solution.info.polished, forward.polished_system)
        finite = all_finite(sigma_bar.grad)
        # On the sparse path, a solve whose refinement did not settle to the tolerance
        # (inexact solves on an ill-conditioned system) is reported as truncated.
        settled = change <= numerics.tol
        info = AdjointInfo(
            jnp.where(finite, jnp.where(settled, Status.SOLVED, Status.MAX_ITER), Status.NONFINITE).astype(jnp.int32),
            jnp.int32(0), change.astype(z.x.dtype),
        )
        return list(forward.scaling.parameter_cotangents(sigma_bar)), info


STRATEGIES = {strategy.name: strategy for strategy in (AltDiff(), Adjoint(), KKT())}


def strategy_for(structure: Structure, kkt_available: bool) -> Strategy:
    """The differentiation strategy of ``structure.differentiation``, with ``"auto"``
    resolved at trace time.

    ``"auto"`` is ``"kkt"`` wherever the reduced KKT system is available (QPs, and smooth
    objectives with a diagonal Hessian), the adjoint otherwise: for ``jax.grad`` the KKT
    pullback at the (polished, exact) solution is faster than the adjoint pass, which is
    faster than carried Alt-Diff Jacobians already at one column
    (``benchmarks/results/speed.md``). ``jacobians`` and ``jvp`` do not use this choice:
    they run the Alt-Diff recursion (see ``_solve.jacobians``)."""
    name = structure.differentiation
    if name == "auto":
        name = "kkt" if kkt_available else "adjoint"
    return STRATEGIES[name]
