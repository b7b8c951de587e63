"""Solver options: structural settings are static, numeric ones may be traced."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp

_DEFAULT_TOL = {jnp.dtype("float64"): 1e-6, jnp.dtype("float32"): 1e-4}
_NUMERIC = ("tol", "rho", "alpha", "sigma", "infeasibility_tol")
_STATIC = (
    "max_iter", "adaptive_rho", "check_interval", "scaling_iterations",
    "differentiation", "polish", "factorization",
)
DIFFERENTIATION = ("auto", "altdiff", "adjoint", "kkt")
FACTORIZATION = ("auto", "cholesky", "eigen")


class Numerics(NamedTuple):
    """The traced settings of one solve, as scalars of the problem's dtype."""

    tol: jax.Array
    rho: jax.Array
    alpha: jax.Array
    sigma: jax.Array
    infeasibility_tol: jax.Array


class Structure(NamedTuple):
    """The static settings of one solve: hashable, part of the compiled loop's identity."""

    max_iter: int
    adaptive_rho: bool
    check_interval: int
    scaling_iterations: int
    differentiation: str
    polish: bool
    factorization: str


@dataclasses.dataclass(frozen=True)
class Options:
    """Settings of the ADMM solve and of its differentiation.

    ``Options`` is hashable, so it can be closed over by a jitted function. It is also a
    pytree whose numeric fields (``tol``, ``rho``, ``alpha``, ``sigma``,
    ``infeasibility_tol``) are leaves: pass it as an argument of a jitted function and new
    values of those fields, ``tol=None`` included, reuse the compiled code. The other
    fields are static: a new value compiles again.

    The defaults are an OSQP-like engine. The paper's configuration is
    ``Options(rho=1.0, alpha=1.0, sigma=..., adaptive_rho=False, scaling_iterations=0,
    polish=False)`` (σ cannot be 0: it keeps every x-update well posed).

    Attributes:
        tol: absolute and relative tolerance of the stopping rule
            ``r <= tol + tol * scale`` applied to the primal residual, the dual residual,
            the duality gap (relative to the objective) and, when Jacobians are carried,
            their per-iteration change. ``None`` means 1e-6 in float64 and 1e-4 in
            float32. A loose tolerance truncates both the solve and its derivative.
        max_iter: iteration cap; a solve that reaches it (and whose polished point does
            not meet the tolerance) reports ``Status.MAX_ITER``.
        rho: initial ADMM penalty ρ > 0 (paper eq. 4), in the equilibrated problem.
        alpha: over-relaxation α in (0, 2); 1 is the paper's plain iteration.
        sigma: proximal weight σ > 0 of the x-update (OSQP's σ, relative to the
            equilibrated P): x⁺ minimises the augmented Lagrangian plus σ/2‖x − xᵏ‖², so
            the x-update is well posed for every PSD P and every A, G. It vanishes at a
            fixed point: the solution and its derivative do not depend on it.
        adaptive_rho: rebalance ρ from the ratio of primal to dual residuals, per problem,
            at termination checks.
        check_interval: iterations between two termination checks (residuals, duality
            gap, infeasibility certificates, adaptive ρ); iteration counts are multiples
            of it, except at ``max_iter``.
        scaling_iterations: Ruiz equilibration passes over the data (0: none). The
            structured layers (sparsemax, softmax) run on their own O(1) data instead.
        infeasibility_tol: tolerance of the infeasibility certificates.
        polish: once the active set has settled (the same at two checks in a row; for
            a dense problem, alone or in a batch, the first time also when it moved by
            at most 3 rows, which the later rounds correct), stop
            the loop, solve the reduced KKT system on it exactly (regularised, iteratively
            refined) and keep that point if it meets the tolerance, else go on iterating;
            a solve that ends by its residuals is polished once and keeps the better point.
            ``info.polished`` says whether a polished point was kept.
        factorization: how the x-update matrix H(ρ) = P + σI + ρC is factored:
            ``"cholesky"`` (once, and again when ρ changes: cheapest for one solve),
            ``"eigen"`` (a generalised eigen-decomposition that serves every ρ: each lane
            of a batch adapts ρ without refactoring, and a batch sharing P, A, G shares the
            factor), or ``"auto"``: eigen for a ``vmap`` batch that shares P, A and G or
            runs without polishing stops (float32, ``polish=False``), Cholesky otherwise
            (a batch keeps the inverse it forms from each lane's factor: one batched
            product per iteration; ``benchmarks/results/factorization.md``). Structured
            layers need neither.
        differentiation: how reverse mode differentiates the solve:
            ``"altdiff"`` (the paper's method) carries the Jacobians with respect to
            the differentiated parameters in the forward loop (cost per iteration grows
            with the number of parameter entries); ``"adjoint"`` carries nothing forward
            and iterates the transposed Alt-Diff recursion on the one cotangent in the
            backward pass (cost of a primal iteration per iteration); ``"kkt"`` solves the
            KKT system on the active set at the solution, as OptNet does; ``"auto"``
            (default) is ``"kkt"`` wherever that system is available (every QP and
            layer) and ``"adjoint"`` otherwise (``solve_convex``), the fastest in
            ``benchmarks/results/speed.md`` (guide: ``docs/guides/differentiation.md``).
            For ``jacobians`` and ``jvp``, which run Alt-Diff's recursion, ``"altdiff"``
            returns the carried Jacobians and ``"auto"`` the exact ones at a polished
            solution (see ``jacobians``).

    Examples:
        >>> import jax
        >>> import altdiff_jax as ad
        >>> options = ad.Options(tol=1e-8, differentiation="adjoint")
        >>> jax.tree_util.tree_leaves(options)  # tol, rho, alpha, sigma, infeasibility_tol
        [1e-08, 0.1, 1.6, 1e-06, 1e-05]
        >>> options.max_iter, options.polish  # static fields
        (10000, True)
        >>> ad.Options(alpha=2.5)
        Traceback (most recent call last):
            ...
        ValueError: Options.alpha must be in (0, 2), got 2.5
    """

    tol: Any = None
    max_iter: int = 10_000
    rho: Any = 0.1
    alpha: Any = 1.6
    sigma: Any = 1e-6
    adaptive_rho: bool = True
    check_interval: int = 10
    scaling_iterations: int = 10
    infeasibility_tol: Any = 1e-5
    polish: bool = True
    factorization: str = "auto"
    differentiation: str = "auto"

    def __post_init__(self) -> None:
        for name in ("tol", "rho", "sigma", "infeasibility_tol"):
            value = getattr(self, name)
            if isinstance(value, (int, float)) and not value > 0:
                raise ValueError(f"Options.{name} must be > 0, got {value}")
        if isinstance(self.alpha, (int, float)) and not 0 < self.alpha < 2:
            raise ValueError(f"Options.alpha must be in (0, 2), got {self.alpha}")
        for name, allowed in (("differentiation", DIFFERENTIATION), ("factorization", FACTORIZATION)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"Options.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        for name, least in (("max_iter", 1), ("check_interval", 1), ("scaling_iterations", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise ValueError(f"Options.{name} must be an int >= {least}, got {value!r}")
        for name in ("adaptive_rho", "polish"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"Options.{name} must be a bool, got {getattr(self, name)!r}")

    def numerics(self, dtype) -> Numerics:
        """The traced settings as scalars of ``dtype``; ``tol=None`` resolved by dtype."""
        default = _DEFAULT_TOL[jnp.dtype(dtype)]
        tol = self.tol
        if tol is None or (isinstance(tol, float) and math.isnan(tol)):
            tol = default
        else:  # a traced tol is NaN when the caller's Options had tol=None (see _flatten)
            tol = jnp.where(jnp.isnan(jnp.asarray(tol, dtype)), default, tol)
        values = (tol, self.rho, self.alpha, self.sigma, self.infeasibility_tol)
        return Numerics(*(jnp.asarray(v, dtype) for v in values))

    def structure(self) -> Structure:
        """The static settings, hashable: part of the compiled loop's identity."""
        return Structure(*(getattr(self, name) for name in _STATIC))


def resolve_options(options: Optional[Options]) -> Options:
    """``options``, or the defaults for ``None``; a ``ValueError`` for anything else (every
    public entry point takes its options through here)."""
    if options is None:
        return Options()
    if not isinstance(options, Options):
        raise ValueError(f"options must be an altdiff_jax.Options, got {type(options).__name__}")
    return options


def _flatten(options: Options):
    # tol=None travels as a NaN leaf, so that None and a number share one tree structure
    # and switching between them does not recompile; numerics() maps NaN back to the default.
    tol = math.nan if options.tol is None else options.tol
    leaves = (tol, *(getattr(options, name) for name in _NUMERIC[1:]))
    return leaves, tuple(getattr(options, name) for name in _STATIC)


def _unflatten(static, leaves) -> Options:
    # Leaves may be tracers or placeholders: rebuild without __post_init__'s checks.
    options = object.__new__(Options)
    for name, value in zip(_NUMERIC + _STATIC, (*leaves, *static)):
        object.__setattr__(options, name, value)
    if isinstance(options.tol, float) and math.isnan(options.tol):
        object.__setattr__(options, "tol", None)
    return options


jax.tree_util.register_pytree_node(Options, _flatten, _unflatten)
