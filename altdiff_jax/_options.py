"""Solver options: structural settings are static, numeric ones may be traced."""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

_DEFAULT_TOL = {jnp.dtype("float64"): 1e-6, jnp.dtype("float32"): 1e-4}
_NUMERIC = ("tol", "rho", "alpha", "infeasibility_tol")
DIFFERENTIATION = ("altdiff", "adjoint", "kkt")


class Numerics(NamedTuple):
    """The traced settings of one solve, as scalars of the problem's dtype."""

    tol: jax.Array
    rho: jax.Array
    alpha: jax.Array
    infeasibility_tol: jax.Array


class Structure(NamedTuple):
    """The static settings of one solve: hashable, part of the compiled loop's identity."""

    max_iter: int
    adaptive_rho: bool
    adaptive_rho_interval: int
    scaling_iterations: int
    differentiation: str
    quadratic: str = "dense"  # how a layer factors its quadratic: see _objective.QUADRATIC_FACTORS


@dataclasses.dataclass(frozen=True)
class Options:
    """Settings of the ADMM solve and its Alt-Diff differentiation.

    ``Options`` is hashable, so it can be closed over by a jitted function. It is
    also a pytree whose numeric fields (``tol``, ``rho``, ``alpha``,
    ``infeasibility_tol``) are leaves: pass it as an argument of a jitted function and
    new values of those fields reuse the compiled code. The other fields are static.

    The defaults are an OSQP-like engine. The paper's configuration is
    ``Options(rho=1.0, alpha=1.0, adaptive_rho=False, scaling_iterations=0)``.

    Attributes:
        tol: absolute and relative tolerance of the OSQP-style stopping rule
            ``r <= tol + tol * scale`` applied to the primal residual, the dual
            residual and, when Jacobians are carried, the per-iteration change of
            the Jacobians. ``None`` means 1e-6 in float64 and 1e-4 in float32.
            A loose tolerance truncates both the solve and its derivative.
        max_iter: iteration cap; a solve that reaches it reports ``Status.MAX_ITER``.
        rho: initial ADMM penalty ρ > 0 (paper eq. 4), in the equilibrated problem.
        alpha: over-relaxation α in (0, 2); 1 is the paper's plain iteration.
        adaptive_rho: rebalance ρ from the ratio of primal to dual residuals, per problem.
        adaptive_rho_interval: iterations between two updates of ρ.
        scaling_iterations: Ruiz equilibration passes over the data (0: none).
        infeasibility_tol: tolerance of the infeasibility certificates.
        differentiation: how reverse mode differentiates the solve:
            ``"altdiff"`` (the paper's method) carries the Jacobians with respect to
            the differentiated parameters in the forward loop: the full Jacobian at once,
            cost per iteration grows with the number of parameter entries;
            ``"adjoint"`` carries nothing forward and iterates the transposed Alt-Diff
            recursion on the one cotangent in the backward pass: cost per iteration of a
            primal iteration, whatever the number of parameters;
            ``"kkt"`` solves the dense KKT system on the active set at the solution, as
            OptNet does: exact, O((n + p + m)³).
    """

    tol: Any = None
    max_iter: int = 10_000
    rho: Any = 0.1
    alpha: Any = 1.6
    adaptive_rho: bool = True
    adaptive_rho_interval: int = 10
    scaling_iterations: int = 10
    infeasibility_tol: Any = 1e-5
    differentiation: str = "altdiff"

    def __post_init__(self) -> None:
        for name in ("tol", "rho", "infeasibility_tol"):
            value = getattr(self, name)
            if isinstance(value, (int, float)) and not value > 0:
                raise ValueError(f"Options.{name} must be > 0, got {value}")
        if isinstance(self.alpha, (int, float)) and not 0 < self.alpha < 2:
            raise ValueError(f"Options.alpha must be in (0, 2), got {self.alpha}")
        if self.differentiation not in DIFFERENTIATION:
            raise ValueError(
                f"Options.differentiation must be one of {DIFFERENTIATION}, got {self.differentiation!r}"
            )
        for name, least in (("max_iter", 1), ("adaptive_rho_interval", 1), ("scaling_iterations", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or value < least:
                raise ValueError(f"Options.{name} must be an int >= {least}, got {value!r}")

    def numerics(self, dtype) -> Numerics:
        """The traced settings as scalars of ``dtype``; ``tol=None`` resolved by dtype."""
        tol = _DEFAULT_TOL[jnp.dtype(dtype)] if self.tol is None else self.tol
        return Numerics(*(jnp.asarray(v, dtype) for v in (tol, self.rho, self.alpha, self.infeasibility_tol)))

    def structure(self) -> Structure:
        """The static settings, hashable: part of the compiled loop's identity."""
        return Structure(*(getattr(self, name) for name in Structure._fields[:5]))


jax.tree_util.register_dataclass(
    Options,
    data_fields=list(_NUMERIC),
    meta_fields=list(Structure._fields[:5]),
)
