"""Sparsemax and constrained sparsemax layers: closed form, Clarabel, finite differences,
strategies, vmap, large inputs and float32.

Jitted functions are shared at module level so each shape compiles once.
"""

from __future__ import annotations

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from altdiff_jax import Options, Status  # noqa: E402
from altdiff_jax._objective import QUADRATIC_FACTORS, IdentityPlusOnesQuadratic  # noqa: E402
from altdiff_jax._problem import Constraints  # noqa: E402
from altdiff_jax._layers import constrained_sparsemax, sparsemax  # noqa: E402

from reference import clarabel_solve  # noqa: E402

N = 10
TIGHT = Options(tol=1e-10)
# Options()'s tol=None is no leaf: a different pytree, a new compile. DEFAULT shares TIGHT's.
DEFAULT = Options(tol=1e-6)
STRATEGIES = ("altdiff", "adjoint", "kkt")


def simplex_projection(y: np.ndarray) -> np.ndarray:
    """Closed-form sparsemax (Held et al. 1974; Martins & Astudillo 2016), sort-based."""
    z = np.sort(y)[::-1]
    k = np.arange(1, y.size + 1)
    cumulative = np.cumsum(z) - 1.0
    support = k[z - cumulative / k > 0][-1]
    tau = cumulative[support - 1] / support
    return np.maximum(y - tau, 0.0)


def sparsemax_jacobian(x: np.ndarray) -> np.ndarray:
    """dx*/dy of sparsemax off ties: diag(σ) − σσᵀ/|S|, σ the support indicator."""
    support = (x > 0).astype(float)
    return np.diag(support) - np.outer(support, support) / support.sum()


def capped_simplex_data(seed: int = 0):
    """y and u where some upper bounds bind (seed 0: 4 at u, 4 at 0, 2 interior, with
    slacks and multipliers >= 0.04 away from zero), and the Clarabel solution."""
    rng = np.random.default_rng(seed)
    y, u = rng.standard_normal(N), rng.uniform(0.1, 0.3, N)
    eye = np.eye(N)
    x, lam, nu = clarabel_solve(
        2 * eye, -2 * y, np.ones((1, N)), np.ones(1), np.vstack([eye, -eye]), np.concatenate([u, np.zeros(N)])
    )
    return y, u, x, lam, nu


def _constrained_loss(y, u, g, options):
    solution = constrained_sparsemax(y, u, options)
    return solution.x @ g, solution


def constrained_grad(y, u, g, options):
    """Gradients of gᵀx* with respect to (y, u) (one compile per dtype and strategy)."""
    return constrained_value_and_grad(y, u, g, options)[1]


sparsemax_batch = jax.jit(jax.vmap(sparsemax, in_axes=(0, None)))
sparsemax_one = jax.jit(sparsemax)
constrained_one = jax.jit(constrained_sparsemax)
# jit(vmap(grad)): per lane, (gᵀx*, Solution) and the gradients with respect to (y, u).
constrained_batch_value_and_grad = jax.jit(jax.vmap(
    jax.value_and_grad(_constrained_loss, argnums=(0, 1), has_aux=True), in_axes=(0, 0, None, None)
))
constrained_value_and_grad = jax.jit(jax.value_and_grad(_constrained_loss, argnums=(0, 1), has_aux=True))
warm_started = jax.jit(constrained_sparsemax)  # a Solution as init: another pytree, another compile
sparsemax_jacrev = jax.jit(jax.jacrev(lambda y, options: sparsemax(y, options).x))


@jax.jit
def _structured_solves(P, q, A, G, r, dgrad, R, rho):
    constraints = Constraints(A, jnp.zeros(A.shape[0]), G, jnp.zeros(G.shape[0]))
    objective = QUADRATIC_FACTORS["identity_plus_ones"](P, q, constraints)
    assert isinstance(objective, IdentityPlusOnesQuadratic)
    return (
        objective.x_update(None, r, rho), objective.jacobian_x_update(None, dgrad, R, rho),
        objective.P, objective.gradient(r),
    )


def test_identity_plus_ones_solves_are_sherman_morrison():
    """x-updates and Jacobian x-updates equal dense solves with H = P + ρ(AᵀA + GᵀG)."""
    rng = np.random.default_rng(0)
    eye = np.eye(N)
    q, r, R = rng.standard_normal(N), rng.standard_normal(N), rng.standard_normal((N, 3))
    dgrad = rng.standard_normal((N, 3))
    for P, A, G in (
        (2 * eye, np.ones((1, N)), np.vstack([eye, -eye])),
        (2 * eye, np.ones((1, N)), -eye),
        (0.5 * eye, 3 * np.ones((2, N)), eye),  # AᵀA = 18·11ᵀ
        (2 * eye, np.zeros((0, N)), np.zeros((0, N))),
    ):
        for rho in (1e-3, 0.7, 1e4):
            x, J, P_dense, gradient = _structured_solves(P, q, A, G, r, dgrad, R, rho)
            H = P + rho * (A.T @ A + G.T @ G)
            np.testing.assert_allclose(x, -np.linalg.solve(H, q + r), rtol=1e-12)
            np.testing.assert_allclose(J, -np.linalg.solve(H, dgrad + R), rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(P_dense, P)
        np.testing.assert_allclose(gradient, P @ r + q)


def test_sparsemax_equals_simplex_projection():
    rng = np.random.default_rng(1)
    ys = rng.standard_normal((N, N)) * np.array([0.1, 0.3, 1, 1, 1, 2, 3, 5, 10, 30])[:, None]
    solution = sparsemax_batch(jnp.asarray(ys), TIGHT)
    expected = np.stack([simplex_projection(y) for y in ys])
    assert np.all(np.asarray(solution.info.status) == Status.SOLVED)
    np.testing.assert_allclose(solution.x, expected, atol=1e-9)
    # The multipliers certify the answer: 2(x − y) + λ1 − ν = 0, ν >= 0, ν ⟂ x.
    stationarity = 2 * (solution.x - ys) + solution.lam - solution.nu
    # OSQP-style rule: the dual residual is below tol (1 + scale), scale = the largest term.
    # In the solver's (max-shifted) problem every term is at most 2 + 4‖y‖∞.
    scale = 1 + 2 + 4 * np.abs(ys).max(axis=1)
    assert (np.abs(stationarity).max(axis=1) <= 1e-10 * scale * 1.01).all()
    assert np.asarray(solution.nu).min() > -1e-9


def test_sparsemax_jacobian_is_the_closed_form():
    y = jnp.asarray(np.random.default_rng(2).standard_normal(N))
    expected = sparsemax_jacobian(simplex_projection(np.asarray(y)))
    np.testing.assert_allclose(sparsemax_jacrev(y, TIGHT), expected, atol=1e-7)
    # Shift invariance is exact, in value and derivative, however large the offset.
    shifted = sparsemax_jacrev(y + 1e3, TIGHT)
    np.testing.assert_allclose(shifted, expected, atol=1e-7)


def test_constrained_sparsemax_matches_clarabel_with_binding_bounds():
    y, u, x_ref, lam_ref, nu_ref = capped_simplex_data()
    assert np.sum(np.abs(x_ref - u) < 1e-8) >= 2  # some upper bounds bind
    assert np.sum(x_ref < 1e-8) >= 2  # and some lower bounds
    solution = constrained_one(jnp.asarray(y), jnp.asarray(u), TIGHT)
    assert int(solution.info.status) == Status.SOLVED
    np.testing.assert_allclose(solution.x, x_ref, atol=1e-8)
    np.testing.assert_allclose(solution.lam, lam_ref, atol=1e-7)
    np.testing.assert_allclose(solution.nu, nu_ref, atol=1e-7)
    np.testing.assert_allclose(solution.s, np.concatenate([u - x_ref, x_ref]), atol=1e-8)


def _central_differences(y, u, g, eps=1e-6):
    """∂(gᵀx*)/∂y and ∂(gᵀx*)/∂u by central differences: 4 batches of n solves."""
    steps = eps * np.eye(N)
    values = []
    for ys, us in ((y + steps, u), (y - steps, u), (y, u + steps), (y, u - steps)):
        ys, us = np.broadcast_to(ys, (N, N)), np.broadcast_to(us, (N, N))
        (value, solution), _ = constrained_batch_value_and_grad(jnp.asarray(ys), jnp.asarray(us), jnp.asarray(g), TIGHT)
        assert np.all(np.asarray(solution.info.status) == Status.SOLVED)
        values.append(np.asarray(value))
    plus_y, minus_y, plus_u, minus_u = values
    return (plus_y - minus_y) / (2 * eps), (plus_u - minus_u) / (2 * eps)


def _cosine(a, b) -> float:
    a, b = np.ravel(a), np.ravel(b)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture(scope="module")
def constrained_gradients():
    """Gradients of gᵀx* with respect to (y, u) by each strategy, and by finite differences."""
    y, u, *_ = capped_simplex_data()
    g = np.random.default_rng(3).standard_normal(N)
    grads = {
        strategy: tuple(
            np.asarray(v)
            for v in constrained_grad(
                jnp.asarray(y), jnp.asarray(u), jnp.asarray(g),
                Options(tol=1e-10, differentiation=strategy),
            )
        )
        for strategy in STRATEGIES
    }
    return grads, _central_differences(y, u, g)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_constrained_gradients_match_finite_differences(constrained_gradients, strategy):
    grads, (fd_y, fd_u) = constrained_gradients
    grad_y, grad_u = grads[strategy]
    assert _cosine(grad_y, fd_y) >= 0.9999
    assert _cosine(grad_u, fd_u) >= 0.9999
    np.testing.assert_allclose(grad_y, fd_y, atol=1e-6)
    np.testing.assert_allclose(grad_u, fd_u, atol=1e-6)
    # u only matters where its bound binds: elsewhere its gradient is exactly zero.
    assert np.count_nonzero(np.abs(fd_u) > 1e-6) > 0


def test_constrained_strategies_agree(constrained_gradients):
    grads, _ = constrained_gradients
    reference_y, reference_u = grads["kkt"]
    for strategy in ("altdiff", "adjoint"):
        grad_y, grad_u = grads[strategy]
        np.testing.assert_allclose(grad_y, reference_y, atol=1e-7, err_msg=strategy)
        np.testing.assert_allclose(grad_u, reference_u, atol=1e-7, err_msg=strategy)


def test_vmap_equals_loop():
    rng = np.random.default_rng(4)
    ys = jnp.asarray(rng.standard_normal((N, N)) * rng.uniform(0.1, 5, (N, 1)))
    us = jnp.asarray(rng.uniform(0.1, 0.3, (N, N)))
    g = jnp.asarray(rng.standard_normal(N))
    (_, batched), (grad_y, grad_u) = constrained_batch_value_and_grad(ys, us, g, TIGHT)
    assert len(set(np.asarray(batched.info.iterations).tolist())) > 1  # lanes stop on their own
    for i in range(N):
        (_, single), (single_y, single_u) = constrained_value_and_grad(ys[i], us[i], g, TIGHT)
        np.testing.assert_allclose(batched.x[i], single.x, atol=1e-12)
        np.testing.assert_allclose(batched.nu[i], single.nu, atol=1e-10)
        np.testing.assert_allclose(grad_y[i], single_y, atol=1e-10)
        np.testing.assert_allclose(grad_u[i], single_u, atol=1e-10)
        assert int(batched.info.iterations[i]) == int(single.info.iterations)


def test_batch_with_large_entries_stays_finite_and_solved():
    rng = np.random.default_rng(5)
    ys = rng.standard_normal((N, N))  # N rows: the batch shape every test shares
    ys[1] *= 1e3  # one-hot answer
    ys[2] += 1e3  # sparsemax is shift invariant (and the layer shifts y by max(y))
    ys[3, :3] = [1e3, 1e3 - 0.5, -1e3]  # a two-element support and a spread of 2e3
    ys[4] *= 1e2
    plain = sparsemax_batch(jnp.asarray(ys), DEFAULT)
    assert np.all(np.asarray(plain.info.status) == Status.SOLVED)
    errors = np.abs(np.asarray(plain.x) - np.stack([simplex_projection(y) for y in ys])).max(axis=1)
    # The stopping rule is relative to the multipliers, ν_i ≈ 2(τ − y_i) ~ 4e3 in row 3.
    assert errors[3] < 5e-3 and np.delete(errors, 3).max() < 1e-4
    us = jnp.asarray(np.full((N, N), 0.4))
    g = jnp.asarray(rng.standard_normal(N))
    (_, solution), grads = constrained_batch_value_and_grad(jnp.asarray(ys), us, g, DEFAULT)
    assert np.all(np.asarray(solution.info.status) == Status.SOLVED)
    assert np.all(np.isfinite(np.asarray(solution.x)))
    assert all(np.all(np.isfinite(np.asarray(v))) for v in grads)


def test_float32_in_float32_out():
    y, u, x_ref, *_ = capped_simplex_data()
    y32, u32 = jnp.asarray(y, jnp.float32), jnp.asarray(u, jnp.float32)
    g = jnp.ones(N, jnp.float32).at[0].set(2.0)
    (_, solution), (grad_y, grad_u) = constrained_value_and_grad(y32, u32, g, Options())  # tol 1e-4
    assert all(v.dtype == jnp.float32 for v in (solution.x, solution.s, solution.lam, solution.nu, grad_y, grad_u))
    assert int(solution.info.status) == Status.SOLVED
    np.testing.assert_allclose(solution.x, x_ref, atol=2e-3)
    grad_ref = constrained_grad(jnp.asarray(y), jnp.asarray(u), jnp.asarray(g, jnp.float64), TIGHT)
    assert _cosine(grad_y, grad_ref[0]) > 0.999 and _cosine(grad_u, grad_ref[1]) > 0.999
    plain = sparsemax_one(y32, Options())
    assert plain.x.dtype == jnp.float32 and int(plain.info.status) == Status.SOLVED
    np.testing.assert_allclose(plain.x, simplex_projection(y), atol=2e-3)


def test_infeasible_bounds_are_reported():
    y = jnp.asarray(np.random.default_rng(6).standard_normal(N))
    solution = constrained_one(y, jnp.asarray(np.full(N, 0.05)), TIGHT)  # 1ᵀu = 0.5 < 1
    assert int(solution.info.status) == Status.PRIMAL_INFEASIBLE


def test_validation_names_the_argument():
    y = jnp.zeros(3)
    with pytest.raises(ValueError, match=r"y must be a non-empty vector .*\(2, 3\)"):
        sparsemax(jnp.zeros((2, 3)))
    with pytest.raises(ValueError, match="y must have a floating dtype"):
        sparsemax(jnp.arange(3))
    with pytest.raises(ValueError, match=r"u has shape \(4,\), expected \(3,\)"):
        constrained_sparsemax(y, jnp.ones(4))
    with pytest.raises(ValueError, match="u has dtype float32 but y has dtype float64"):
        constrained_sparsemax(y, jnp.ones(3, jnp.float32))
    with pytest.raises(ValueError, match="options must be an altdiff_jax.Options"):
        sparsemax(y, options={"tol": 1e-6})


def test_bounds_above_one_and_infinite_bounds():
    y = np.random.default_rng(7).standard_normal(N)
    expected = simplex_projection(y)
    for bound in (1e6, np.inf):
        u = np.full(N, bound)
        u[0] = 0.2
        solution = constrained_one(jnp.asarray(y), jnp.asarray(u), DEFAULT)
        assert int(solution.info.status) == Status.SOLVED
        reference = constrained_one(jnp.asarray(y), jnp.asarray(np.where(u > 1, 1.5, u)), DEFAULT)
        np.testing.assert_allclose(solution.x, reference.x, atol=1e-5)
        np.testing.assert_allclose(solution.s[:N], u - np.asarray(solution.x), atol=1e-5)  # the user's slack
        assert abs(float(solution.x.sum()) - 1) < 1e-5
    u = np.full(N, np.inf)
    solution = constrained_one(jnp.asarray(y), jnp.asarray(u), TIGHT)
    np.testing.assert_allclose(solution.x, expected, atol=1e-9)
    tau = float(np.mean((y - expected)[expected > 0]))  # x = max(y − τ, 0)
    np.testing.assert_allclose(solution.lam, [2 * tau], atol=1e-8)  # 2(x − y) + λ = 0 on the support


def test_warm_start_from_a_previous_solution():
    y, u, x_ref, *_ = capped_simplex_data()
    y, u = jnp.asarray(y), jnp.asarray(u)
    cold = constrained_one(y, u, TIGHT)
    warm = warm_started(y + 1e-3, u, TIGHT, cold)
    assert int(warm.info.status) == Status.SOLVED
    assert int(warm.info.iterations) < int(cold.info.iterations)
    np.testing.assert_allclose(warm.x, constrained_one(y + 1e-3, u, TIGHT).x, atol=1e-8)
