"""Exact references: x* of a dense QP (Clarabel through cvxpy, or a dense NumPy/LAPACK
interior point where Clarabel's sparse LDLᵀ is too slow), polished on its active set, and the
exact gradient of gᵀx* by the active-set KKT adjoint (``tests/reference.py``); the cosine and
relative error of a gradient against it."""

from __future__ import annotations

import dataclasses
import importlib
import math
import sys
from typing import Any, Mapping, Sequence

import numpy as np

from .problems import QP_KEYS
from .provenance import ROOT


def _tests_module(name: str):
    """A helper module of the test suite, ``tests/NAME.py``."""
    tests = str(ROOT / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    return importlib.import_module(name)


def _tests_reference():
    """The test suite's NumPy/cvxpy ground truth, ``tests/reference.py``."""
    return _tests_module("reference")


def interior_point(P, q, A, b, G, h, tol: float = 1e-10, max_iter: int = 60):
    """Dense Mehrotra predictor-corrector for min ½xᵀPx + qᵀx s.t. Ax = b, Gx <= h.

    Each iteration factors H = P + Gᵀ diag(ν/s) G (Cholesky) and the Schur complement
    A H⁻¹ Aᵀ, with LAPACK: for dense problems too large for Clarabel's sparse LDLᵀ. It stops
    at ``tol`` (relative to the data's size) or when the complementarity gap is below it and
    the residuals stall (H is then too ill-conditioned for further progress): :func:`polish`
    makes the point exact.

    Returns:
        (x, lam, nu, iterations) with P x + q + Aᵀλ + Gᵀν = 0, ν >= 0.
    """
    from scipy.linalg import cho_factor, cho_solve, solve_triangular

    n, m = q.size, h.size
    x, lam, s, nu = np.zeros(n), np.zeros(b.size), np.ones(m), np.ones(m)
    scale = 1.0 + max(np.abs(q).max(), np.abs(b).max(initial=0.0), np.abs(h).max())

    best = math.inf

    def max_step(v, dv):
        negative = dv < 0
        return min(1.0, float(np.min(-v[negative] / dv[negative], initial=np.inf)))

    for iteration in range(1, max_iter + 1):
        r_dual = P @ x + q + A.T @ lam + G.T @ nu
        r_eq, r_ineq = A @ x - b, G @ x + s - h
        mu = s @ nu / m
        residual = max(np.abs(r_dual).max(), np.abs(r_eq).max(initial=0.0), np.abs(r_ineq).max())
        if mu <= tol * scale and (residual <= tol * scale or residual > 0.5 * best):
            break
        best = min(best, residual) if iteration > 1 else residual
        L = _cholesky(P + (G.T * (nu / s)) @ G)
        Y = solve_triangular(L, A.T, lower=True)
        schur = cho_factor(Y.T @ Y)

        def newton(r_comp):  # the step for s∘ν → s∘ν − r_comp
            r1 = -r_dual - G.T @ ((nu * r_ineq - r_comp) / s)
            h_r1 = cho_solve((L, True), r1)
            d_lam = cho_solve(schur, A @ h_r1 + r_eq)
            dx = h_r1 - cho_solve((L, True), A.T @ d_lam)
            ds = -r_ineq - G @ dx
            return dx, d_lam, ds, (-r_comp - nu * ds) / s

        dx, d_lam, ds, d_nu = newton(s * nu)
        alpha = min(max_step(s, ds), max_step(nu, d_nu))
        sigma = ((s + alpha * ds) @ (nu + alpha * d_nu) / m / mu) ** 3
        dx, d_lam, ds, d_nu = newton(s * nu + ds * d_nu - sigma * mu)
        alpha = 0.99 * min(max_step(s, ds), max_step(nu, d_nu))
        x, lam, s, nu = x + alpha * dx, lam + alpha * d_lam, s + alpha * ds, nu + alpha * d_nu
    return x, lam, nu, iteration


def _cholesky(H: np.ndarray) -> np.ndarray:
    """Lower Cholesky factor of H, with the smallest diagonal shift (1e-14, 1e-12, ... times
    its largest diagonal entry) that makes round-off-indefinite H factorable: near the end of
    an interior-point solve the weights ν/s of the active rows reach 1e12 and more."""
    shift = 0.0
    for _ in range(6):
        try:
            return np.linalg.cholesky(H + shift * np.eye(H.shape[0]) if shift else H)
        except np.linalg.LinAlgError:
            shift = 100.0 * shift if shift else 1e-14 * float(np.max(np.diag(H)))
    return np.linalg.cholesky(H + shift * np.eye(H.shape[0]))


def polish(P, q, A, b, G, h, x, lam, nu):
    """The exact KKT point on the active set of (x, ν) (slack s_i/‖s‖∞ <= ν_i/‖ν‖∞): the
    dense equality-constrained system [[P, Cᵀ], [C, 0]] with C = (A; G_active). Returns
    (x, λ, ν, accepted): the input when the result is not primal-dual feasible."""
    slack = h - G @ x
    active = slack / max(np.abs(slack).max(), 1e-300) <= nu / max(nu.max(), 1e-300)
    C = np.vstack([A, G[active]])
    K = np.block([[P, C.T], [C, np.zeros((C.shape[0], C.shape[0]))]])
    z = np.linalg.solve(K, np.concatenate([-q, b, h[active]]))
    n, p = q.size, b.size
    nu_new = np.zeros_like(nu)
    nu_new[active] = z[n + p:]
    scale = 1.0 + max(np.abs(q).max(), np.abs(b).max(initial=0.0), np.abs(h).max())
    feasible = (G @ z[:n] - h).max() <= 1e-9 * scale and nu_new.min() >= -1e-9 * scale
    return (z[:n], z[n:n + p], np.maximum(nu_new, 0.0), True) if feasible else (x, lam, nu, False)


CLARABEL_MAX = 4000  # n + p + m above which the reference uses interior_point (LAPACK) instead


@dataclasses.dataclass
class Reference:
    """Exact x*, duals and gradient of gᵀx* with respect to P, q, A, b, G, h."""

    x: np.ndarray
    lam: np.ndarray
    nu: np.ndarray
    grads: dict
    note: str


def reference(problem: Mapping[str, np.ndarray], g: np.ndarray, solver: str = "auto") -> Reference:
    """The exact solution and gradient of gᵀx* of a dense QP.

    x* from Clarabel through cvxpy at tolerance 1e-10 (``tests/reference.clarabel_solve``),
    or from :func:`interior_point` (``solver="auto"`` picks it when n + p + m exceeds
    :data:`CLARABEL_MAX`: Clarabel's sparse LDLᵀ of a dense KKT matrix is too slow there),
    made exact by :func:`polish`; then the adjoint of the KKT system restricted to the active
    set (slack s_i/‖s‖∞ <= ν_i/‖ν‖∞), solved densely (``tests/reference.kkt_gradients``).
    The note gives the solver, the active count, and the KKT residuals of x*.
    """
    ref = _tests_reference()
    P, q, A, b, G, h = (np.asarray(problem[k], float) for k in QP_KEYS)
    size = q.size + b.size + h.size
    if solver == "clarabel" or (solver == "auto" and size <= CLARABEL_MAX):
        x, lam, nu = ref.clarabel_solve(P, q, A, b, G, h)
        how = "Clarabel (cvxpy, tol 1e-10)"
    else:
        x, lam, nu, iterations = interior_point(P, q, A, b, G, h)
        how = f"dense interior point (NumPy/LAPACK, {iterations} iterations)"
    x, lam, nu, polished = polish(P, q, A, b, G, h, x, lam, nu)
    how += ", polished on its active set" if polished else ", polish rejected (not feasible)"
    grads = ref.kkt_gradients(P, q, A, b, G, h, x, lam, nu, g)
    slack = h - G @ x
    active = int(np.sum(slack / max(np.abs(slack).max(), 1e-300) <= nu / max(nu.max(), 1e-300)))
    residuals = (np.abs(P @ x + q + A.T @ lam + G.T @ nu).max(), np.abs(A @ x - b).max(),
                 max(0.0, float(-slack.min())), float(np.abs(slack * nu).max()))
    note = (f"reference x*: {how}, {active} of {h.size} inequalities active; KKT residuals: stationarity "
            f"{residuals[0]:.1e}, equality {residuals[1]:.1e}, inequality {residuals[2]:.1e}, "
            f"complementarity {residuals[3]:.1e}; gradient by the dense active-set KKT adjoint")
    return Reference(x, lam, nu, grads, note)


def flatten(grads: Mapping[str, Any], keys: Sequence[str]) -> np.ndarray:
    return np.concatenate([np.ravel(np.asarray(grads[k], float)) for k in keys])


def cosine(grad, ref) -> float:
    """Cosine similarity of two gradients (dicts: over the keys of ``grad``)."""
    if isinstance(grad, Mapping):
        keys = [k for k in grad if grad[k] is not None]
        grad, ref = flatten(grad, keys), flatten(ref, keys)
    grad, ref = np.ravel(grad), np.ravel(ref)
    return float(grad @ ref / (np.linalg.norm(grad) * np.linalg.norm(ref)))


def relative_error(grad, ref) -> float:
    """‖grad − ref‖ / ‖ref‖ (dicts: over the keys of ``grad``)."""
    if isinstance(grad, Mapping):
        keys = [k for k in grad if grad[k] is not None]
        grad, ref = flatten(grad, keys), flatten(ref, keys)
    grad, ref = np.ravel(grad), np.ravel(ref)
    return float(np.linalg.norm(grad - ref) / np.linalg.norm(ref))


def symmetric(gradient_P) -> np.ndarray:
    """The symmetric part of a gradient with respect to P: P is symmetric, so only that part
    is a derivative (peers differ on whether they return it or q̄xᵀ)."""
    gradient_P = np.asarray(gradient_P, float)
    return 0.5 * (gradient_P + gradient_P.T)
