"""Sparsemax and constrained sparsemax layers: exact against independent sort-based
references, closed-form Jacobians, finite differences, strategies, vmap, large inputs,
float32, and the O(n) structure (no n × n array in the compiled layer).

Jitted functions are shared at module level so each shape compiles once.
"""

from __future__ import annotations

import jax
import jax.extend

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from altdiff_jax import Options, Status  # noqa: E402
from altdiff_jax._layers import constrained_sparsemax, sparsemax  # noqa: E402
from altdiff_jax._linalg import DiagonalPlusRankOne  # noqa: E402

N = 10
TIGHT = Options(tol=1e-10)
DEFAULT = Options()
STRATEGIES = ("auto", "altdiff", "adjoint", "kkt")


def simplex_projection(y: np.ndarray) -> np.ndarray:
    """Closed-form sparsemax (Held et al. 1974; Martins & Astudillo 2016), sort-based."""
    z = np.sort(y)[::-1]
    k = np.arange(1, y.size + 1)
    cumulative = np.cumsum(z) - 1.0
    support = k[z - cumulative / k > 0][-1]
    tau = cumulative[support - 1] / support
    return np.maximum(y - tau, 0.0)


def capped_simplex_projection(y: np.ndarray, u: np.ndarray) -> np.ndarray:
    """argmin ‖x − y‖² s.t. 1ᵀx = 1, 0 <= x <= u, exactly: bisection on the threshold τ of
    x = clip(y − τ, 0, u) to locate the active sets, then τ in closed form on them."""
    lo, hi = np.min(y) - 2.0, np.max(y) + 1.0  # Σ clip(y − lo, 0, u) >= min(1ᵀu, 2) >= 1
    for _ in range(200):
        tau = 0.5 * (lo + hi)
        lo, hi = (tau, hi) if np.clip(y - tau, 0, u).sum() > 1 else (lo, tau)
    x = np.clip(y - tau, 0, u)
    free = (x > 0) & (x < u)
    at_cap = x >= u
    tau = (y[free].sum() + u[at_cap].sum() - 1.0) / free.sum()
    return np.where(free, y - tau, np.where(at_cap, u, 0.0))


def capped_jacobian(x: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """dx*/dy and dx*/du of the capped projection off ties: on the free set F,
    dx_F/dy = I − 11ᵀ/|F|; a capped entry follows u: dx_i/du_i = 1, dx_F/du_i = −1/|F|."""
    free = ((x > 0) & (x < u)).astype(float)
    capped = (x >= u).astype(float)
    d_y = np.diag(free) - np.outer(free, free) / free.sum()
    d_u = np.diag(capped) - np.outer(free, capped) / free.sum()
    return d_y, d_u


def _constrained_loss(y, u, g, options):
    solution = constrained_sparsemax(y, u, options)
    return solution.x @ g, solution


sparsemax_batch = jax.jit(jax.vmap(sparsemax, in_axes=(0, None)))
sparsemax_one = jax.jit(sparsemax)
constrained_one = jax.jit(constrained_sparsemax)
constrained_batch = jax.jit(jax.vmap(constrained_sparsemax, in_axes=(0, 0, None)))
constrained_value_and_grad = jax.jit(jax.value_and_grad(_constrained_loss, argnums=(0, 1), has_aux=True))
constrained_batch_value_and_grad = jax.jit(jax.vmap(
    jax.value_and_grad(_constrained_loss, argnums=(0, 1), has_aux=True), in_axes=(0, 0, None, None)
))
warm_started = jax.jit(constrained_sparsemax)  # a Solution as init: another pytree, another compile
sparsemax_jacrev = jax.jit(jax.jacrev(lambda y, options: sparsemax(y, options).x))


def _varied_rows(seed: int) -> np.ndarray:
    """N score vectors of varied spread, offset and support size."""
    rng = np.random.default_rng(seed)
    ys = rng.standard_normal((N, N)) * np.array([0.1, 0.3, 1, 1, 1, 2, 3, 5, 10, 30])[:, None]
    ys[1] += 1e3  # an offset (the layer shifts by max y)
    ys[2, :3] = [40.0, 39.5, -40.0]  # a two-element support
    return ys


def test_diagonal_plus_rank_one_is_sherman_morrison():
    rng = np.random.default_rng(0)
    d, v, rhs = rng.uniform(0.5, 2, N), rng.standard_normal(N), rng.standard_normal((N, 3))
    for w in (0.0, 1e-3, 0.7, 1e4):
        got = DiagonalPlusRankOne(jnp.asarray(d), jnp.asarray(v), jnp.asarray(w)).solve(jnp.asarray(rhs))
        # measured ≤ 2e-11 relative at w = 1e4 (condition number ~1e5), 1e-15 below
        np.testing.assert_allclose(got, np.linalg.solve(np.diag(d) + w * np.outer(v, v), rhs), rtol=1e-10)


def test_sparsemax_is_exact_at_the_default_options():
    ys = _varied_rows(1)
    solution = sparsemax_batch(jnp.asarray(ys), DEFAULT)
    expected = np.stack([simplex_projection(y) for y in ys])
    assert np.all(np.asarray(solution.info.status) == Status.SOLVED)
    assert np.all(np.asarray(solution.info.polished))
    x = np.asarray(solution.x)
    np.testing.assert_array_equal(x > 0, expected > 0)  # the same support
    assert np.all(x >= 0)  # exactly on the simplex: no negative entry at all
    # Exact to round-off of the scores' scale: x within 1.7e-14 (measured 2026-11-29; 4e-16
    # on the machine the test was written on, whose compiled code rounds differently).
    np.testing.assert_allclose(x, expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(x.sum(axis=1), 1.0, rtol=0, atol=1e-14)  # measured 4.4e-16
    # The multipliers certify the answer: 2(x − y) + λ1 + μ = 0, μ <= 0, μ ⟂ x, to each
    # row's scale. Measured 5.9e-15 relative; 2.0e-9 on the row with scores ±40 before the
    # refinement went on past a stalled correction above _kkt.STALL_FLOOR.
    stationarity = 2 * (x - ys) + np.asarray(solution.lam) + np.asarray(solution.mu)
    assert np.all(np.abs(stationarity).max(axis=1) <= 1e-13 * np.maximum(1, np.abs(ys).max(axis=1)))
    assert np.asarray(solution.mu).max() <= 0 and np.abs(np.asarray(solution.mu) * x).max() == 0


def test_sparsemax_jacobian_is_the_closed_form():
    y = np.random.default_rng(2).standard_normal(N)
    x = simplex_projection(y)
    support = (x > 0).astype(float)
    expected = np.diag(support) - np.outer(support, support) / support.sum()
    np.testing.assert_allclose(sparsemax_jacrev(jnp.asarray(y), DEFAULT), expected, rtol=0, atol=1e-14)  # measured 4e-25
    # Shift invariance is exact, in value and derivative, however large the offset.
    np.testing.assert_allclose(sparsemax_jacrev(jnp.asarray(y + 1e3), DEFAULT), expected, rtol=0, atol=1e-14)


def _capped_data(seed: int = 0):
    """y, u where some upper bounds bind and some lower bounds do, with margins >= 0.04."""
    rng = np.random.default_rng(seed)
    y, u = rng.standard_normal(N), rng.uniform(0.1, 0.3, N)
    return y, u, capped_simplex_projection(y, u)


def test_constrained_sparsemax_is_exact_with_binding_bounds():
    y, u, expected = _capped_data()
    assert np.sum(expected == u) >= 2 and np.sum(expected == 0) >= 2  # both sides bind
    for options in (DEFAULT, TIGHT):
        solution = constrained_one(jnp.asarray(y), jnp.asarray(u), options)
        assert int(solution.info.status) == Status.SOLVED and bool(solution.info.polished)
        x = np.asarray(solution.x)
        np.testing.assert_array_equal(x == u, expected == u)
        np.testing.assert_array_equal(x == 0, expected == 0)
        np.testing.assert_allclose(x, expected, rtol=0, atol=1e-14)  # measured 5.6e-17


def test_constrained_batch_with_infinite_and_large_bounds():
    rng = np.random.default_rng(8)
    ys = _varied_rows(3)
    us = rng.uniform(0.15, 0.5, (N, N))
    us[0] = np.inf  # no upper bound: plain sparsemax
    us[1, ::2] = np.inf
    us[2] = 1e6
    solution = constrained_batch(jnp.asarray(ys), jnp.asarray(us), DEFAULT)
    expected = np.stack([capped_simplex_projection(y, u) for y, u in zip(ys, us)])
    assert np.all(np.asarray(solution.info.status) == Status.SOLVED)
    np.testing.assert_allclose(solution.x, expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(solution.x[0], simplex_projection(ys[0]), rtol=0, atol=1e-14)  # measured 5.6e-17


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_constrained_gradients_are_the_closed_form(strategy):
    y, u, x = _capped_data()
    g = np.random.default_rng(3).standard_normal(N)
    d_y, d_u = capped_jacobian(x, u)
    options = Options(differentiation=strategy)
    (_, solution), (grad_y, grad_u) = constrained_value_and_grad(jnp.asarray(y), jnp.asarray(u), jnp.asarray(g), options)
    assert int(solution.info.status) == Status.SOLVED
    # Exact output, exact derivative for "kkt" (≤ 1e-15 measured); the iterative
    # strategies stop at tol = 1e-6 relative (measured ≤ 3e-7 for altdiff, adjoint).
    bound = 1e-12 if strategy == "kkt" else 1e-5
    np.testing.assert_allclose(grad_y, d_y.T @ g, rtol=0, atol=bound * np.abs(g).max())
    np.testing.assert_allclose(grad_u, d_u.T @ g, rtol=0, atol=bound * np.abs(g).max())


def test_constrained_gradients_match_finite_differences():
    y, u, _ = _capped_data()
    g = np.random.default_rng(3).standard_normal(N)
    eps = 1e-6
    steps = eps * np.eye(N)
    values = []
    for ys, us in ((y + steps, u), (y - steps, u), (y, u + steps), (y, u - steps)):
        ys, us = np.broadcast_to(ys, (N, N)), np.broadcast_to(us, (N, N))
        (value, solution), _ = constrained_batch_value_and_grad(jnp.asarray(ys), jnp.asarray(us), jnp.asarray(g), TIGHT)
        values.append(np.asarray(value))
    fd_y, fd_u = (values[0] - values[1]) / (2 * eps), (values[2] - values[3]) / (2 * eps)
    _, (grad_y, grad_u) = constrained_value_and_grad(jnp.asarray(y), jnp.asarray(u), jnp.asarray(g), TIGHT)
    # The layer is piecewise linear and exact: differences are exact up to round-off.
    np.testing.assert_allclose(grad_y, fd_y, rtol=0, atol=1e-8)
    np.testing.assert_allclose(grad_u, fd_u, rtol=0, atol=1e-8)
    assert np.count_nonzero(np.abs(fd_u) > 1e-6) > 0


def test_vmap_equals_loop():
    rng = np.random.default_rng(4)
    ys = jnp.asarray(rng.standard_normal((N, N)) * rng.uniform(0.1, 5, (N, 1)))
    us = jnp.asarray(rng.uniform(0.1, 0.3, (N, N)))
    g = jnp.asarray(rng.standard_normal(N))
    (_, batched), (grad_y, grad_u) = constrained_batch_value_and_grad(ys, us, g, TIGHT)
    assert len(set(np.asarray(batched.info.iterations).tolist())) > 1  # lanes stop on their own
    for i in range(N):
        (_, single), (single_y, single_u) = constrained_value_and_grad(ys[i], us[i], g, TIGHT)
        np.testing.assert_allclose(batched.x[i], single.x, rtol=0, atol=1e-15)  # batched round-off
        np.testing.assert_allclose(grad_y[i], single_y, rtol=0, atol=1e-14)  # measured 1.1e-16
        np.testing.assert_allclose(grad_u[i], single_u, rtol=0, atol=1e-14)  # measured 3.3e-16
        assert int(batched.info.iterations[i]) == int(single.info.iterations)


def test_float32_in_float32_out():
    y, u, expected = _capped_data()
    y32, u32 = jnp.asarray(y, jnp.float32), jnp.asarray(u, jnp.float32)
    g = jnp.ones(N, jnp.float32).at[0].set(2.0)
    (_, solution), (grad_y, grad_u) = constrained_value_and_grad(y32, u32, g, DEFAULT)  # tol 1e-4
    assert all(v.dtype == jnp.float32 for v in (solution.x, solution.lam, solution.mu, grad_y, grad_u))
    assert int(solution.info.status) == Status.SOLVED
    # Polished: exact to float32 round-off (measured 6e-8).
    np.testing.assert_allclose(solution.x, expected, rtol=0, atol=1e-6)
    d_y, d_u = capped_jacobian(expected, u)
    # The exact active set's Jacobian, in float32 round-off (measured 3e-8 and 0).
    np.testing.assert_allclose(grad_y, d_y.T @ np.asarray(g), rtol=0, atol=1e-6)
    np.testing.assert_allclose(grad_u, d_u.T @ np.asarray(g), rtol=0, atol=1e-6)
    plain = sparsemax_one(y32, DEFAULT)
    assert plain.x.dtype == jnp.float32 and int(plain.info.status) == Status.SOLVED
    np.testing.assert_allclose(plain.x, simplex_projection(y), rtol=0, atol=1e-6)


def test_infeasible_bounds_are_reported():
    y = jnp.asarray(np.random.default_rng(6).standard_normal(N))
    solution = constrained_one(y, jnp.asarray(np.full(N, 0.05)), DEFAULT)  # 1ᵀu = 0.5 < 1
    assert int(solution.info.status) == Status.PRIMAL_INFEASIBLE
    solution = constrained_one(y, jnp.asarray(np.full(N, -0.1)), DEFAULT)  # u < 0 = lb
    assert int(solution.info.status) == Status.PRIMAL_INFEASIBLE
    assert int(solution.info.iterations) == 0  # lb > ub is seen before the loop


def test_validation_names_the_argument():
    y = jnp.zeros(3)
    with pytest.raises(ValueError, match=r"y must be a non-empty vector .*\(2, 3\)"):
        sparsemax(jnp.zeros((2, 3)))
    with pytest.raises(ValueError, match="y must have dtype float32 or float64"):
        sparsemax(jnp.arange(3))
    with pytest.raises(ValueError, match="y must have dtype float32 or float64"):
        sparsemax(jnp.zeros(3, jnp.bfloat16))
    with pytest.raises(ValueError, match=r"u has shape \(4,\), expected \(3,\)"):
        constrained_sparsemax(y, jnp.ones(4))
    with pytest.raises(ValueError, match="u has dtype float32 but y has dtype float64"):
        constrained_sparsemax(y, jnp.ones(3, jnp.float32))
    with pytest.raises(ValueError, match="options must be an altdiff_jax.Options"):
        sparsemax(y, options={"tol": 1e-6})


def test_warm_start_from_a_previous_solution():
    y, u, _ = _capped_data()
    y, u = jnp.asarray(y), jnp.asarray(u)
    moved = y + 1e-3
    exact = capped_simplex_projection(np.asarray(moved), np.asarray(u))
    # Polished: the warm start is exact to round-off like the cold start.
    warm = warm_started(moved, u, TIGHT, constrained_one(y, u, TIGHT))
    assert int(warm.info.status) == Status.SOLVED
    np.testing.assert_allclose(warm.x, exact, rtol=0, atol=1e-14)  # measured 1.9e-16
    # ADMM alone shows what the warm start saves: fewer iterations to the same tolerance.
    admm = Options(tol=1e-10, polish=False)
    cold_admm = constrained_one(moved, u, admm)
    warm_admm = warm_started(moved, u, admm, constrained_one(y, u, admm))
    assert int(warm_admm.info.status) == int(cold_admm.info.status) == Status.SOLVED
    assert int(warm_admm.info.iterations) < int(cold_admm.info.iterations)
    np.testing.assert_allclose(warm_admm.x, exact, rtol=0, atol=1e-8)  # measured 4.1e-10


def _largest_intermediate(fn, *args) -> int:
    """The largest number of elements of any array in the jaxpr of ``fn`` (recursively)."""
    closed = jax.make_jaxpr(fn)(*args)
    largest = 0

    def visit(jaxpr):
        nonlocal largest
        for eqn in jaxpr.eqns:
            for var in list(eqn.outvars) + [v for v in eqn.invars if hasattr(v, "aval")]:
                shape = getattr(var.aval, "shape", ())
                largest = max(largest, int(np.prod(shape)) if shape else 1)
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                visit(sub)

    visit(closed.jaxpr)
    return largest


@pytest.mark.parametrize("layer", ["sparsemax", "constrained_sparsemax"])
def test_no_n_by_n_array_in_the_layer_or_its_gradient(layer):
    """O(n) memory: the forward and backward hold no array of n²/4 entries. (Their largest
    arrays are O(n): the stack of residual blocks that one norm reduction reads,
    ``_iterate.inf_norms``, holds 32 n entries, which n 256 keeps well below n²/4.)"""
    n = 256
    y, u, g = jnp.zeros(n), jnp.full(n, 0.5), jnp.ones(n)
    if layer == "sparsemax":
        def loss(y, u):
            return sparsemax(y, Options(differentiation="adjoint")).x @ g
    else:
        def loss(y, u):
            return constrained_sparsemax(y, u, Options(differentiation="kkt")).x @ g
    assert _largest_intermediate(jax.grad(loss, argnums=(0, 1)), y, u) < n * n // 4
