"""Independent NumPy/cvxpy reference implementations for the test suite.

Nothing here imports JAX or ``altdiff_jax``: these functions are the ground
truth the library is checked against.

Problem (all arrays float64)::

    minimize    1/2 x^T P x + q^T x
    subject to  A x = b          (omitted when A, b are None)
                G x <= h         (omitted when G, h are None)

Shapes: P (n, n), q (n,), A (p, n), b (p,), G (m, n), h (m,).

Dual convention used throughout (KKT stationarity)::

    P x + q + A^T lam + G^T nu = 0,    nu >= 0,    nu_i (G x - h)_i = 0.
"""

from __future__ import annotations

from typing import Callable, Optional

import cvxpy as cp
import numpy as np

Array = np.ndarray

# Clarabel settings forwarded by cvxpy (any clarabel.DefaultSettings attribute
# is accepted; unknown names raise TypeError).
CLARABEL_OPTS = dict(
    tol_gap_abs=1e-10,
    tol_gap_rel=1e-10,
    tol_feas=1e-10,
    tol_ktratio=1e-10,
    max_iter=500,
)


def _dims(A: Optional[Array], G: Optional[Array]) -> tuple[int, int]:
    """Returns (p, m): number of equality and inequality constraints."""
    p = 0 if A is None else A.shape[0]
    m = 0 if G is None else G.shape[0]
    return p, m


def random_qp(seed: int, n: int, p: int, m: int, *, singular_p: bool = False,
              with_feasible_point: bool = False):
    """Random feasible QP following the paper's generator.

    P = M^T M with M standard Gaussian (n, n) (or (n // 2, n) when
    ``singular_p``, giving a rank-n/2 PSD P; the caller must then pick
    constraints making P + A^T A + G^T G positive definite, e.g. m >= n;
    that alone does not rule out an unbounded QP: with n=8, m=10 some seeds
    are unbounded, m=2n was fine for seeds 0-5).
    q, A, G are standard Gaussian; feasibility is ensured via a Gaussian
    point x0: b = A x0 and h = G x0 + uniform(0, 1) slack.

    Args:
        seed: seed for ``numpy.random.default_rng``.
        n: number of variables.
        p: number of equality constraints (0 for none).
        m: number of inequality constraints (0 for none).
        singular_p: if True, P is singular PSD of rank n // 2.
        with_feasible_point: also return x0 (n,), the point the constraints were built
            around (Ax0 = b, Gx0 < h).

    Returns:
        Dict with keys P (n, n), q (n,), A (p, n), b (p,), G (m, n), h (m,).
        A and b are None when p == 0; G and h are None when m == 0. With
        ``with_feasible_point``: ``(dict, x0)``.
    """
    rng = np.random.default_rng(seed)
    M = rng.standard_normal((n // 2 if singular_p else n, n))
    P = M.T @ M
    q = rng.standard_normal(n)
    A = rng.standard_normal((p, n)) if p > 0 else None
    G = rng.standard_normal((m, n)) if m > 0 else None
    x0 = rng.standard_normal(n)
    b = A @ x0 if p > 0 else None
    h = G @ x0 + rng.uniform(0.0, 1.0, m) if m > 0 else None
    data = dict(P=P, q=q, A=A, b=b, G=G, h=h)
    return (data, x0) if with_feasible_point else data


def clarabel_solve(P, q, A, b, G, h) -> tuple[Array, Array, Array]:
    """Solves the QP with Clarabel (through cvxpy) at tight tolerances.

    P is symmetrized, (P + P^T) / 2, before solving.

    Args:
        P: (n, n) PSD matrix.
        q: (n,) linear term.
        A: (p, n) equality matrix, or None.
        b: (p,) equality right-hand side, or None.
        G: (m, n) inequality matrix, or None.
        h: (m,) inequality right-hand side, or None.

    Returns:
        (x, lam, nu): primal solution (n,), equality duals (p,) and
        inequality duals (m,) (>= 0), with P x + q + A^T lam + G^T nu = 0.
        Absent blocks give zeros(0).

    Raises:
        RuntimeError: if the solver status is not "optimal".
    """
    P = 0.5 * (np.asarray(P, float) + np.asarray(P, float).T)
    q = np.asarray(q, float)
    n = q.shape[0]
    x = cp.Variable(n)
    cons = []
    if A is not None:
        cons.append(np.asarray(A, float) @ x == np.asarray(b, float))
    if G is not None:
        cons.append(np.asarray(G, float) @ x <= np.asarray(h, float))
    obj = 0.5 * cp.quad_form(x, cp.psd_wrap(P)) + q @ x
    prob = cp.Problem(cp.Minimize(obj), cons)
    prob.solve(solver=cp.CLARABEL, **CLARABEL_OPTS)
    if prob.status != cp.OPTIMAL:
        raise RuntimeError(f"Clarabel status: {prob.status}")

    xs = np.asarray(x.value, float).reshape(n)
    cons = list(cons)
    lam = np.asarray(cons.pop(0).dual_value, float).reshape(-1) if A is not None else np.zeros(0)
    nu = np.asarray(cons.pop(0).dual_value, float).reshape(-1) if G is not None else np.zeros(0)
    nu = np.maximum(nu, 0.0)  # clip round-off negatives (~1e-14)
    # cvxpy's equality dual already satisfies "+ A^T lam" (checked with
    # cvxpy 1.9); guard against a convention change by testing both signs.
    if A is not None:
        rest = P @ xs + q + (G.T @ nu if G is not None else 0.0)
        if np.linalg.norm(rest - A.T @ lam) < np.linalg.norm(rest + A.T @ lam):
            lam = -lam
    return xs, lam, nu


def degenerate_vertex_qp(seed: int, n: int = 30, support: int = 10, p: int = 15) -> tuple[dict, Array]:
    """An LP-like QP (P = 1e-3·I, x >= 0 as G = −I, h = 0) whose solution is a degenerate
    vertex, and that solution: ``support`` positive entries and ``p`` random equalities, so
    that p + n − support > n rows are active there and the multipliers are not unique.
    q is built from chosen multipliers (ν > 0 on every zero entry), so the solution is known
    exactly."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    x = np.zeros(n)
    x[order[:support]] = rng.uniform(0.5, 1.5, support)
    nu = np.zeros(n)
    nu[order[support:]] = rng.uniform(0.5, 1.5, n - support)
    A = rng.standard_normal((p, n))
    P, G = 1e-3 * np.eye(n), -np.eye(n)
    q = -P @ x - A.T @ rng.standard_normal(p) - G.T @ nu
    return dict(P=P, q=q, A=A, b=A @ x, G=G, h=np.zeros(n)), x


def active_set(G, h, x, nu) -> Array:
    """The deterministic active-set rule of the references: inequality i is active iff
    s_i / ‖s‖∞ <= ν_i / ‖ν‖∞ with s = h − Gx (strict complementarity read relative to
    each vector's size, so the rule does not depend on how rows or the cost are scaled).

    An interior-point solution leaves active slacks and inactive multipliers at ~1e-9, so
    a weakly active constraint (s = ν = 0 in exact arithmetic) is decided by round-off
    here: a test of one passes its active set explicitly (``active=``).

    Returns:
        ``(m,)`` boolean mask (``(0,)`` without inequalities).
    """
    if G is None or G.shape[0] == 0:
        return np.zeros(0, dtype=bool)
    slack = h - G @ x
    slack_size = max(np.abs(slack).max(), 1e-300)
    nu_size = max(np.abs(nu).max(), 1e-300)
    return slack / slack_size <= nu / nu_size


def _active_kkt(P, A, G, h, x, nu, active=None):
    """Dense KKT matrix restricted to the active inequalities (``active`` (m,) or the
    rule of :func:`active_set`).

    Returns:
        (K, idx): K of shape (n + p + k, n + p + k) and the (k,) integer
        indices of the active rows of G.
    """
    n = P.shape[0]
    p, m = _dims(A, G)
    if m > 0:
        mask = active_set(G, h, x, nu) if active is None else np.asarray(active, bool)
        idx = np.flatnonzero(mask)
    else:
        idx = np.zeros(0, dtype=int)
    C = np.zeros((p + idx.size, n))
    if p > 0:
        C[:p] = A
    if idx.size > 0:
        C[p:] = G[idx]
    K = np.block([[P, C.T], [C, np.zeros((C.shape[0], C.shape[0]))]])
    return K, idx


def _solve(K: Array, rhs: Array) -> Array:
    """Solves K z = rhs; falls back to least squares if K is singular."""
    try:
        z = np.linalg.solve(K, rhs)
        if np.all(np.isfinite(z)):
            return z
    except np.linalg.LinAlgError:
        pass
    return np.linalg.lstsq(K, rhs, rcond=None)[0]


def kkt_jacobians(P, q, A, b, G, h, x, lam, nu, active=None) -> dict:
    """Exact Jacobians of x* by implicit differentiation of the active KKT system.

    Active set I from :func:`active_set` (or ``active``). Differentiating
    [P x + q + A^T lam + G_I^T nu_I, A x - b, G_I x - h_I] = 0 gives
    K dz = -d(residual) with K = [[P, A^T, G_I^T], [A, 0, 0], [G_I, 0, 0]].

    Args:
        P, q, A, b, G, h: problem data (see module docstring); A, b / G, h
            may be None.
        x: (n,) solution; lam: (p,) (unused), nu: (m,) duals, which pick the
            active set.
        active: optional (m,) boolean active set.

    Returns:
        Dict with "q": dx/dq (n, n), "b": dx/db (n, p), "h": dx/dh (n, m)
        (columns of inactive constraints are zero). "b" / "h" are None when
        the corresponding block is absent.
    """
    P = 0.5 * (P + P.T)
    n = P.shape[0]
    p, m = _dims(A, G)
    K, idx = _active_kkt(P, A, G, h, x, nu, active)
    k = idx.size
    # Right-hand sides -d(residual)/d(theta) for theta = (q, b, h_I).
    rhs = np.zeros((n + p + k, n + p + k))
    rhs[:n, :n] = -np.eye(n)
    rhs[n:, n:] = np.eye(p + k)
    dz = _solve(K, rhs)[:n]
    out = {"q": dz[:, :n], "b": dz[:, n:n + p] if p > 0 else None, "h": None}
    if m > 0:
        Jh = np.zeros((n, m))
        Jh[:, idx] = dz[:, n + p:]
        out["h"] = Jh
    return out


def kkt_gradients(P, q, A, b, G, h, x, lam, nu, g, active=None) -> dict:
    """Gradient of the linear loss g^T x* w.r.t. all problem data (adjoint method).

    One adjoint solve K d = [-g, 0, 0] (K symmetric, see ``kkt_jacobians``)
    gives q_bar = d_x, b_bar = -d_lam, h_bar_I = -d_nu (zero off I); then
    grad P = (q_bar x^T + x q_bar^T) / 2, grad A = lam q_bar^T - b_bar x^T,
    grad G = nu q_bar^T - h_bar x^T.

    Args:
        P, q, A, b, G, h: problem data; A, b / G, h may be None.
        x: (n,) solution; lam: (p,) and nu: (m,) duals in the module's sign
            convention.
        g: (n,) loss vector.
        active: optional (m,) boolean active set (default: :func:`active_set`).

    Returns:
        Dict with keys P (n, n), q (n,), A (p, n), b (p,), G (m, n), h (m,);
        entries for absent blocks are None.
    """
    P = 0.5 * (P + P.T)
    n = P.shape[0]
    p, m = _dims(A, G)
    K, idx = _active_kkt(P, A, G, h, x, nu, active)
    rhs = np.zeros(K.shape[0])
    rhs[:n] = -g
    d = _solve(K, rhs)
    q_bar = d[:n]
    out = {"P": 0.5 * (np.outer(q_bar, x) + np.outer(x, q_bar)), "q": q_bar,
           "A": None, "b": None, "G": None, "h": None}
    if p > 0:
        b_bar = -d[n:n + p]
        out["b"] = b_bar
        out["A"] = np.outer(lam, q_bar) - np.outer(b_bar, x)
    if m > 0:
        h_bar = np.zeros(m)
        h_bar[idx] = -d[n + p:]
        out["h"] = h_bar
        out["G"] = np.outer(nu, q_bar) - np.outer(h_bar, x)
    return out


def finite_difference_grad(fun: Callable[[Array], float], arr: Array, eps: float = 1e-6) -> Array:
    """Central finite-difference gradient of a scalar function of one array.

    Args:
        fun: maps an array shaped like ``arr`` to a float.
        arr: point of evaluation, any shape.
        eps: step size.

    Returns:
        Array shaped like ``arr``: (fun(arr + eps e_i) - fun(arr - eps e_i)) / (2 eps).
    """
    arr = np.asarray(arr, float)
    grad = np.zeros_like(arr)
    for i in np.ndindex(arr.shape):
        plus, minus = arr.copy(), arr.copy()
        plus[i] += eps
        minus[i] -= eps
        grad[i] = (fun(plus) - fun(minus)) / (2.0 * eps)
    return grad


def primal_infeasible_qp(seed: int, n: int, p: int, m: int) -> dict:
    """A problem of the paper's shape whose inequalities contradict each other.

    Two rows of G are a direction g and −g with h = −1 for both: gᵀx <= −1 and
    gᵀx >= 1 cannot hold together. The other rows are as in :func:`random_qp`.
    """
    data = random_qp(seed, n, p, m)
    rng = np.random.default_rng(seed + 10_000)
    g = rng.standard_normal(n)
    data["G"][0], data["G"][1] = g, -g
    data["h"][0] = data["h"][1] = -rng.uniform(0.5, 2.0)
    return data


def dual_infeasible_qp(seed: int, n: int, p: int, m: int) -> dict:
    """A feasible problem unbounded below along a direction d.

    P = MᵀM with M of rank n − 1 and d spanning its null space, A with Ad = 0, every row
    of G turned so that Gd <= 0 (with m >= n these rows make P + AᵀA + GᵀG definite),
    and q with qᵀd < 0, so x0 + t d is feasible for t >= 0 and the cost falls without end.
    """
    rng = np.random.default_rng(seed)
    d = rng.standard_normal(n)
    d /= np.linalg.norm(d)
    project = np.eye(n) - np.outer(d, d)
    M = rng.standard_normal((n - 1, n)) @ project
    A = rng.standard_normal((p, n)) @ project
    G = rng.standard_normal((m, n))
    G *= -np.sign(G @ d)[:, None]
    x0 = rng.standard_normal(n)
    q = rng.standard_normal(n)
    q -= (q @ d + rng.uniform(0.5, 2.0)) * d  # qᵀd < 0
    return dict(P=M.T @ M, q=q, A=A if p else None, b=A @ x0 if p else None,
                G=G, h=G @ x0 + rng.uniform(size=m))


def bounds_as_rows(data: dict, lb: Optional[Array], ub: Optional[Array]) -> tuple[dict, Array, Array]:
    """The problem with its bounds written as rows of G (the reference formulation).

    Rows ``x_i <= ub_i`` for finite ub_i, then ``−x_i <= −lb_i`` for finite lb_i, appended
    after G.

    Returns:
        ``(data, upper_rows, lower_rows)``: the expanded problem and the variable index of
        each appended row, so that ∇ub_i = h̄ of its upper row and ∇lb_i = −h̄ of its lower row.
    """
    n = data["q"].shape[0]
    rows, rhs = [], []
    upper = np.flatnonzero(np.isfinite(ub)) if ub is not None else np.zeros(0, int)
    lower = np.flatnonzero(np.isfinite(lb)) if lb is not None else np.zeros(0, int)
    eye = np.eye(n)
    G = [data["G"]] if data["G"] is not None else []
    h = [data["h"]] if data["h"] is not None else []
    G += [eye[upper], -eye[lower]]
    h += [ub[upper] if ub is not None else np.zeros(0), -lb[lower] if lb is not None else np.zeros(0)]
    expanded = dict(data, G=np.vstack(G), h=np.concatenate(h))
    return expanded, upper, lower


def bound_gradients(expanded_grads: dict, m: int, upper: Array, lower: Array, n: int) -> tuple[Array, Array]:
    """∇lb, ∇ub from the gradient of h of a :func:`bounds_as_rows` problem (m: rows of the
    original G)."""
    h_bar = expanded_grads["h"][m:]
    ub_bar, lb_bar = np.zeros(n), np.zeros(n)
    ub_bar[upper] = h_bar[: upper.size]
    lb_bar[lower] = -h_bar[upper.size:]
    return lb_bar, ub_bar
