"""Constrained softmax and solve_convex (the damped-Newton x-update): jax.nn.softmax,
cvxpy, a water-filling closed form, finite differences, the entropy's KKT system, the QP
layer, vmap, large inputs and float32.

Jitted functions are shared at module level so each shape compiles once.
"""

from __future__ import annotations

import jax

jax.config.update("jax_enable_x64", True)

import cvxpy as cp  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from scipy.optimize import brentq  # noqa: E402

import altdiff_jax as ad  # noqa: E402
from altdiff_jax import Options, Status  # noqa: E402
from altdiff_jax._layers import constrained_softmax  # noqa: E402

from conftest import SMALL, case, cosine, relative_error  # noqa: E402

N = 8
TIGHT = Options(tol=1e-10)
UNPOLISHED = Options(tol=1e-10, polish=False)  # ADMM's own trajectory: lanes stop at their own count
STRATEGIES = ("altdiff", "adjoint", "kkt")
# Clarabel through cvxpy. Its exponential cone needs gaps of 1e-12: at reference.py's 1e-10
# the capped softmax below is off by 7e-7, at 1e-12 by 1e-11 (the closed form checks it).
CLARABEL_TIGHT = dict(tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12, tol_ktratio=1e-12, max_iter=500)


def _softmax_loss(y, u, g, options):
    solution = constrained_softmax(y, u, options)
    return solution.x @ g, solution


def _convex_loss(objective, theta, A, b, G, h, g, options):
    solution = ad.solve_convex(objective, theta, A, b, G, h, options)
    return solution.x @ g, solution


def _qp_loss(problem, g, options):
    solution = ad.solve(problem, options)
    return solution.x @ g, solution


softmax_one = jax.jit(constrained_softmax)
softmax_batch = jax.jit(jax.vmap(constrained_softmax, in_axes=(0, None, None)))
# (gᵀx*, Solution) and the gradients with respect to (y, u): one compile per strategy.
softmax_value_and_grad = jax.jit(jax.value_and_grad(_softmax_loss, argnums=(0, 1), has_aux=True))
# The objective is static (a module-level function); gradients for θ, A, b, G, h.
convex_value_and_grad = jax.jit(
    jax.value_and_grad(_convex_loss, argnums=(1, 2, 3, 4, 5), has_aux=True), static_argnums=0
)
qp_value_and_grad = jax.jit(jax.value_and_grad(_qp_loss, has_aux=True))


def quadratic(x, theta):
    P, q = theta
    return 0.5 * x @ P @ x + q @ x


def log_sum_exp_objective(x, c):
    return jax.nn.logsumexp(x) + 0.5 * jnp.sum((x - c) ** 2)


def capped_softmax(y: np.ndarray, u: np.ndarray):
    """Closed form of argmin −yᵀx + Σ xᵢ log xᵢ s.t. 1ᵀx = 1, x <= u (water filling):
    x = min(u, exp(y − 1 − λ)) with λ the root of 1ᵀx(λ) = 1, and ν = max(0, y − 1 − λ − log u)."""
    def excess(lam):
        return np.minimum(u, np.exp(y - 1 - lam)).sum() - 1.0

    low = np.min(y - 1 - np.log(u)) - 1.0  # every entry at its bound: excess = 1ᵀu − 1 > 0
    high = np.log(np.sum(np.exp(y))) - 1.0 + 1.0  # beyond the unbounded softmax: excess < 0
    lam = brentq(excess, low, high, xtol=1e-15, rtol=1e-15, maxiter=500)
    x = np.minimum(u, np.exp(y - 1 - lam))
    return x, lam, np.maximum(0.0, y - 1 - lam - np.log(u))


def bounded_data():
    """y, u with three binding bounds (ν >= 0.08; the other slacks >= 0.029), the closed
    form (x, λ, ν) and Clarabel's x."""
    rng = np.random.default_rng(0)
    y, u = 2 * rng.standard_normal(N), rng.uniform(0.1, 0.4, N)
    x, lam, nu = capped_softmax(y, u)
    variable = cp.Variable(N)
    problem = cp.Problem(cp.Minimize(-y @ variable - cp.sum(cp.entr(variable))), [cp.sum(variable) == 1, variable <= u])
    problem.solve(solver=cp.CLARABEL, **CLARABEL_TIGHT)
    assert problem.status == cp.OPTIMAL
    return y, u, x, lam, nu, np.asarray(variable.value)


def entropy_kkt_gradients(x, u, nu, g):
    """∂(gᵀx*)/∂y and ∂(gᵀx*)/∂u from the entropy's KKT system on the active set
    I = {i : xᵢ = uᵢ}: −y + log x + 1 + λ1 + ν_I = 0, 1ᵀx = 1, x_I = u_I differentiate to
    K [dx; dλ; dν_I] = [dy; 0; du_I] with K = [[diag(1/x), 1, E_Iᵀ], [1ᵀ, 0, 0], [E_I, 0, 0]]
    symmetric, so one adjoint solve K w = [g; 0; 0] gives ∂/∂y = w_x and ∂/∂u_I = w_ν."""
    active = np.flatnonzero(nu > 0)
    k = active.size
    K = np.zeros((N + 1 + k, N + 1 + k))
    K[:N, :N] = np.diag(1.0 / x)
    K[:N, N] = K[N, :N] = 1.0
    K[active, N + 1 + np.arange(k)] = K[N + 1 + np.arange(k), active] = 1.0
    w = np.linalg.solve(K, np.concatenate([g, np.zeros(1 + k)]))
    grad_u = np.zeros(N)
    grad_u[active] = w[N + 1:]
    return w[:N], grad_u


def test_unbounded_equals_jax_softmax():
    rng = np.random.default_rng(1)
    scales = np.array([0.1, 0.3, 1, 1, 2, 3, 5, 10])
    ys = rng.standard_normal((N, N)) * scales[:, None]
    solution = softmax_batch(jnp.asarray(ys), None, TIGHT)
    assert np.all(np.asarray(solution.info.status) == Status.SOLVED)
    errors = np.abs(np.asarray(solution.x) - np.asarray(jax.nn.softmax(ys, axis=1))).max(axis=1)
    # The stop rule bounds the stationarity residual log xᵢ − yᵢ + 1 + λ by tol (1 + its
    # scale, ~ the spread of y) and |1ᵀx − 1| by ~tol, so each xᵢ is off by a relative
    # ~tol (2 + spread). Measured: at most 1.1e-10, against bounds 4e-10 to 5e-9.
    spreads = ys.max(axis=1) - ys.min(axis=1)
    assert np.all(errors <= 2 * TIGHT.tol * (2 + spreads)), (errors, spreads)
    assert errors.max() < 1e-9
    # λ is reported for the unshifted y: −y + log x + 1 + λ = 0 gives λ = logsumexp(y) − 1
    # (measured ≤ 1.6e-14 relative; λ reaches 8).
    np.testing.assert_allclose(solution.lam[:, 0], jax.nn.logsumexp(ys, axis=1) - 1, atol=0, rtol=1e-12)
    assert solution.s.shape == (N, 0) and solution.nu.shape == (N, 0)


def test_bounded_matches_cvxpy_and_the_closed_form():
    y, u, x_ref, lam_ref, nu_ref, x_clarabel = bounded_data()
    assert np.abs(x_clarabel - x_ref).max() < 1e-10  # the two references agree (1e-11)
    active = nu_ref > 0
    assert active.sum() == 3 and nu_ref[active].min() > 0.05 and (u - x_ref)[~active].min() > 0.02
    (_, solution), _ = softmax_value_and_grad(
        jnp.asarray(y), jnp.asarray(u), jnp.ones(N), Options(tol=1e-10, differentiation="kkt")
    )
    assert int(solution.info.status) == Status.SOLVED
    x = np.asarray(solution.x)
    np.testing.assert_allclose(x, x_clarabel, atol=1e-9, rtol=0)  # measured 1.2e-11 (Clarabel's error)
    np.testing.assert_allclose(x, x_ref, atol=1e-15, rtol=0)  # measured 2.1e-17: polished
    np.testing.assert_allclose(x[active], u[active], atol=1e-14, rtol=0)  # the bounds bind (measured 0)
    assert np.all(x[~active] < u[~active] - 0.02)
    np.testing.assert_allclose(solution.lam, [lam_ref], atol=1e-13, rtol=0)  # measured ≤ 2e-15
    # μ is the multiplier of x <= u (>= 0): the closed form's ν (measured ≤ 3e-15).
    np.testing.assert_allclose(solution.mu, nu_ref, atol=1e-13, rtol=0)
    np.testing.assert_array_equal(x[active], u[active])  # polished: exactly on the bound
    assert solution.s.shape == solution.nu.shape == (0,)


def _finite_differences(y, u, g, eps=1e-5):
    """∂(gᵀx*)/∂y and ∂(gᵀx*)/∂u by central differences, each solve at tol 1e-12."""
    options = Options(tol=1e-12, differentiation="kkt")

    def value(y, u):
        (value, solution), _ = softmax_value_and_grad(jnp.asarray(y), jnp.asarray(u), jnp.asarray(g), options)
        assert int(solution.info.status) == Status.SOLVED
        return float(value)

    steps = eps * np.eye(N)
    grad_y = np.array([value(y + e, u) - value(y - e, u) for e in steps]) / (2 * eps)
    grad_u = np.array([value(y, u + e) - value(y, u - e) for e in steps]) / (2 * eps)
    return grad_y, grad_u


@pytest.fixture(scope="module")
def bounded_gradients():
    """Gradients of gᵀx* with respect to (y, u): each strategy, finite differences, KKT."""
    y, u, x_ref, _, nu_ref, _ = bounded_data()
    g = np.random.default_rng(3).standard_normal(N)
    grads = {}
    for strategy in STRATEGIES:
        (_, solution), (grad_y, grad_u) = softmax_value_and_grad(
            jnp.asarray(y), jnp.asarray(u), jnp.asarray(g), Options(tol=1e-10, differentiation=strategy)
        )
        assert int(solution.info.status) == Status.SOLVED
        grads[strategy] = (np.asarray(grad_y), np.asarray(grad_u), int(solution.info.iterations))
    return grads, _finite_differences(y, u, g), entropy_kkt_gradients(x_ref, u, nu_ref, g), nu_ref > 0


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_bounded_gradients_match_finite_differences_and_kkt(bounded_gradients, strategy):
    grads, (fd_y, fd_u), (kkt_y, kkt_u), active = bounded_gradients
    grad_y, grad_u, _ = grads[strategy]
    for reference_y, reference_u in ((fd_y, fd_u), (kkt_y, kkt_u)):
        assert cosine(grad_y, reference_y) >= 1 - 1e-12
        assert cosine(grad_u, reference_u) >= 1 - 1e-12
    # Cosines measured 1 − 2e-16 or closer. Largest differences (2026-11-29, all strategies):
    # from the KKT reference 7.9e-11 (y) and 1.1e-9 (u); from finite differences 8.1e-11 and 1.1e-9.
    np.testing.assert_allclose(grad_y, kkt_y, atol=5e-9, rtol=0)
    np.testing.assert_allclose(grad_u, kkt_u, atol=1e-8, rtol=0)
    np.testing.assert_allclose(grad_y, fd_y, atol=5e-9, rtol=0)
    np.testing.assert_allclose(grad_u, fd_u, atol=5e-8, rtol=0)
    # u matters only where its bound binds; the y of a capped entry moves nothing.
    assert np.abs(grad_u[~active]).max() < 1e-9 and np.abs(grad_u[active]).min() > 1e-2
    assert np.abs(grad_y[active]).max() < 1e-8


def test_finite_differences_agree_with_kkt(bounded_gradients):
    _, (fd_y, fd_u), (kkt_y, kkt_u), _ = bounded_gradients
    np.testing.assert_allclose(fd_y, kkt_y, atol=1e-10, rtol=0)  # measured 2.6e-12
    np.testing.assert_allclose(fd_u, kkt_u, atol=1e-10, rtol=0)  # measured 3.1e-12


@pytest.fixture(scope="module")
def small_qp():
    return case(*SMALL)


def test_solve_convex_quadratic_reproduces_the_qp_layer(small_qp):
    _, problem, (x_clarabel, _, _) = small_qp
    g = jnp.asarray(np.random.default_rng(4).standard_normal(problem.q.size))
    (_, convex), (theta_bar, A_bar, b_bar, G_bar, h_bar) = convex_value_and_grad(
        quadratic, (problem.P, problem.q), problem.A, problem.b, problem.G, problem.h, g, TIGHT
    )
    (_, qp), qp_bar = qp_value_and_grad(problem, g, TIGHT)
    assert int(convex.info.status) == Status.SOLVED and int(qp.info.status) == Status.SOLVED
    # Measured: 9.4e-16 between the two (both polished), 5.3e-10 from Clarabel; ν 3.6e-15 apart.
    np.testing.assert_allclose(convex.x, qp.x, atol=1e-13, rtol=0)
    np.testing.assert_allclose(convex.x, x_clarabel, atol=1e-8, rtol=0)
    np.testing.assert_allclose(convex.nu, qp.nu, atol=1e-12, rtol=0)
    # Measured: relative errors ≤ 1.5e-10.
    for name, actual, expected in (
        ("P", theta_bar[0], qp_bar.P), ("q", theta_bar[1], qp_bar.q), ("A", A_bar, qp_bar.A),
        ("b", b_bar, qp_bar.b), ("G", G_bar, qp_bar.G), ("h", h_bar, qp_bar.h),
    ):
        assert relative_error(actual, expected) < 1e-8, name


@pytest.fixture(scope="module")
def log_sum_exp_problem(small_qp):
    """logsumexp(x) + ½‖x − c‖² on SMALL's constraints: three inequalities bind (seed 3:
    ν >= 1.2, the other slacks >= 1.07), and the Clarabel and SCS solutions."""
    data, _, _ = small_qp
    A, b, G, h = (data[key] for key in "AbGh")
    c = 3 * np.random.default_rng(3).standard_normal(A.shape[1])
    references = []
    for solver, settings in ((cp.CLARABEL, CLARABEL_TIGHT), (cp.SCS, dict(eps_abs=1e-12, eps_rel=1e-12, max_iters=100_000))):
        x = cp.Variable(c.size)
        constraints = [A @ x == b, G @ x <= h]
        problem = cp.Problem(cp.Minimize(cp.log_sum_exp(x) + 0.5 * cp.sum_squares(x - c)), constraints)
        problem.solve(solver=solver, **settings)
        assert problem.status == cp.OPTIMAL
        references.append((np.asarray(x.value), np.asarray(constraints[1].dual_value)))
    return c, (A, b, G, h), references


def _log_sum_exp_solve(c, constraints, g, options):
    return convex_value_and_grad(log_sum_exp_objective, jnp.asarray(c), *map(jnp.asarray, constraints), g, options)


def test_solve_convex_log_sum_exp_matches_cvxpy(log_sum_exp_problem):
    c, constraints, ((x_clarabel, nu_clarabel), (x_scs, _)) = log_sum_exp_problem
    assert np.sum(nu_clarabel > 1e-3) == 3
    (_, solution), _ = _log_sum_exp_solve(c, constraints, jnp.ones(c.size), TIGHT)
    assert int(solution.info.status) == Status.SOLVED
    # Measured: 6.8e-14 from SCS, 4.8e-8 from Clarabel (Clarabel and SCS differ by as much:
    # Clarabel's exponential cone is the less accurate reference here); ν 7.6e-9 apart.
    np.testing.assert_allclose(solution.x, x_scs, atol=5e-12, rtol=0)
    np.testing.assert_allclose(solution.x, x_clarabel, atol=2e-7, rtol=0)
    np.testing.assert_allclose(solution.nu, nu_clarabel, atol=1e-7, rtol=0)


def test_solve_convex_theta_gradient_matches_finite_differences(log_sum_exp_problem):
    c, constraints, _ = log_sum_exp_problem
    g = jnp.asarray(np.random.default_rng(5).standard_normal(c.size))
    precise = Options(tol=1e-12)
    (_, solution), (grad_c, *_) = _log_sum_exp_solve(c, constraints, g, TIGHT)
    assert int(solution.info.status) == Status.SOLVED
    eps = 1e-4  # with solves at 1e-12, the truncation error ~eps² dominates

    def value(c):
        (value, solution), _ = _log_sum_exp_solve(c, constraints, g, precise)
        assert int(solution.info.status) == Status.SOLVED
        return float(value)

    fd = np.array([value(c + e) - value(c - e) for e in eps * np.eye(c.size)]) / (2 * eps)
    assert cosine(grad_c, fd) >= 1 - 1e-12
    np.testing.assert_allclose(grad_c, fd, atol=1e-8, rtol=0)  # measured 2.8e-10


def _large_batch():
    rng = np.random.default_rng(6)
    ys = rng.standard_normal((N, N)) * np.array([0.1, 0.5, 1, 2, 3, 5, 10, 30])[:, None]
    ys[2] *= 1e3  # spread ~3e3: every entry but the largest would underflow
    ys[5] += 1e3  # a shift, exact (the layer shifts y by max(y))
    return ys


def test_vmap_equals_loop_and_large_entries_stay_finite():
    ys = _large_batch()
    batched = softmax_batch(jnp.asarray(ys), None, UNPOLISHED)
    status, iterations = np.asarray(batched.info.status), np.asarray(batched.info.iterations)
    assert len(set(iterations.tolist())) > 1  # lanes stop on their own
    for i in range(N):
        single = softmax_one(jnp.asarray(ys[i]), None, UNPOLISHED)
        # Measured: 3e-16 apart (before the line search's rounding allowance, Newton stopped
        # at |∇φ| ~ 1e-10 and lanes drifted 1e-10 apart, taking up to 22 more iterations).
        np.testing.assert_allclose(batched.x[i], single.x, atol=1e-14, rtol=0)
        np.testing.assert_allclose(batched.lam[i], single.lam, atol=1e-14, rtol=0)  # measured 4.4e-16
        assert iterations[i] == int(single.info.iterations) and status[i] == int(single.info.status)
    assert np.all(np.isfinite(np.asarray(batched.x)))
    # Without bounds the far-below entries are raised to log √tiny + log n + 3 before the
    # solve, so the large lane converges too, to jax.nn.softmax (measured 2e-10; iterations
    # 33 to 71).
    assert np.all(status == Status.SOLVED)
    np.testing.assert_allclose(batched.x, jax.nn.softmax(ys, axis=1), atol=1e-9, rtol=0)


def test_bounded_large_entries_stay_finite():
    """With bounds the optima underflow below the x-update's floor: MAX_ITER, finite.

    (Measured: MAX_ITER after 10 000 iterations with x far from the answer, 0.7 on one entry
    whose bound is 0.4 and √tiny elsewhere; the status is the only sign.)"""
    rng = np.random.default_rng(5)
    y, u = 1e3 * rng.standard_normal(N), np.full(N, 0.4)
    (_, solution), grads = softmax_value_and_grad(
        jnp.asarray(y), jnp.asarray(u), jnp.ones(N), Options(tol=1e-10, differentiation="kkt")
    )
    assert int(solution.info.status) in (Status.SOLVED, Status.MAX_ITER)
    assert all(np.all(np.isfinite(np.asarray(v))) for v in (solution.x, solution.lam, solution.nu, *grads))


def test_float32_in_float32_out():
    rng = np.random.default_rng(7)
    ys = [rng.standard_normal(N), 3 * rng.standard_normal(N), np.linspace(0.0, -60.0, N)]
    for y in ys:  # the last spans 60: beyond log(1/√tiny) ≈ 44 in float32
        solution = softmax_one(jnp.asarray(y, jnp.float32), None, Options(tol=1e-5))
        assert all(v.dtype == jnp.float32 for v in (solution.x, solution.s, solution.lam, solution.nu))
        assert int(solution.info.status) == Status.SOLVED
        # Measured: at most 1.8e-8 at tol 1e-5 (polished; before polishing, 1.04e-5).
        np.testing.assert_allclose(solution.x, jax.nn.softmax(y), atol=1e-6, rtol=0)


def test_validation():
    with pytest.raises(ValueError, match=r"u has shape \(4,\), expected \(3,\)"):
        constrained_softmax(jnp.zeros(3), jnp.ones(4))
    with pytest.raises(ValueError, match=r"u has shape \(3, 1\), expected \(3,\)"):
        constrained_softmax(jnp.zeros(3), jnp.ones((3, 1)))
    with pytest.raises(ValueError, match="solve_convex needs x0, A, G, lb or ub"):
        ad.solve_convex(log_sum_exp_objective, jnp.zeros(3))
    with pytest.raises(ValueError, match=r"x0 must be a floating vector of shape \(n,\), got shape \(3, 1\)"):
        ad.solve_convex(log_sum_exp_objective, jnp.zeros(3), x0=jnp.zeros((3, 1)))
