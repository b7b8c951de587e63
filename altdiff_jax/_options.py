"""Solver options: structural settings are static, numeric ones may be traced."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

_DEFAULT_TOL = {jnp.dtype("float64"): 1e-6, jnp.dtype("float32"): 1e-4}


@dataclasses.dataclass(frozen=True)
class Options:
    """Settings of the ADMM solve and its Alt-Diff differentiation.

    ``Options`` is hashable, so it can be closed over by a jitted function. It is
    also a pytree whose numeric fields (``tol``, ``rho``) are leaves: pass it as an
    argument of a jitted function and new values of those fields reuse the compiled
    code. ``max_iter`` is static (it is part of the compiled loop's cache key).

    Attributes:
        tol: absolute and relative tolerance of the OSQP-style stopping rule
            ``r <= tol + tol * scale`` applied to the primal residual, the dual
            residual and, when Jacobians are carried, the per-iteration change of
            the Jacobians. ``None`` means 1e-6 in float64 and 1e-4 in float32.
            A loose tolerance truncates both the solve and its derivative.
        max_iter: iteration cap; a solve that reaches it reports ``Status.MAX_ITER``.
        rho: ADMM penalty ρ > 0 (paper eq. 4).
    """

    tol: Any = None
    max_iter: int = 10_000
    rho: Any = 1.0

    def __post_init__(self) -> None:
        if isinstance(self.tol, (int, float)) and not self.tol > 0:
            raise ValueError(f"Options.tol must be > 0, got {self.tol}")
        if isinstance(self.rho, (int, float)) and not self.rho > 0:
            raise ValueError(f"Options.rho must be > 0, got {self.rho}")
        if not isinstance(self.max_iter, int) or self.max_iter < 1:
            raise ValueError(f"Options.max_iter must be an int >= 1, got {self.max_iter!r}")

    def numerics(self, dtype: jnp.dtype) -> tuple[jax.Array, jax.Array]:
        """The traced numeric settings ``(tol, rho)`` as scalars of ``dtype``."""
        tol = _DEFAULT_TOL[jnp.dtype(dtype)] if self.tol is None else self.tol
        return jnp.asarray(tol, dtype), jnp.asarray(self.rho, dtype)


jax.tree_util.register_dataclass(Options, data_fields=["tol", "rho"], meta_fields=["max_iter"])
