"""Bounds lb <= x <= ub as a diagonal block: against Clarabel and a KKT reference that
writes the bounds as rows of G, finite differences, every strategy, jacobians and jvp,
vmap with batched bounds, and the rows-of-G formulation of the same problem."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import relative_error, solve_jit, to_qp, value_and_grad_jit
from reference import bound_gradients, bounds_as_rows, clarabel_solve, kkt_gradients, kkt_jacobians, random_qp

import altdiff_jax as ad

N, P_ROWS, M_ROWS = 12, 3, 6
TIGHT = ad.Options(tol=1e-10)
STRATEGIES = ("auto", "altdiff", "adjoint", "kkt")


@functools.lru_cache(maxsize=None)
def bounded_case(seed: int, p: int = P_ROWS, m: int = M_ROWS):
    """A random QP (paper generator) with a box around its feasible point x0: some bounds
    infinite, some loose, several binding on each side at the optimum.

    Returns:
        ``(data, lb, ub, reference)``; the reference holds the solution of the problem with
        the bounds written as rows of G: x, λ, ν of G's own rows, and μ = ν_upper − ν_lower.
    """
    rng = np.random.default_rng(seed)
    data, x0 = random_qp(seed, N, p, m, with_feasible_point=True)
    lb, ub = x0 - rng.uniform(0.05, 0.6, N), x0 + rng.uniform(0.05, 0.6, N)
    lb[:2] = -np.inf  # one-sided and free variables
    ub[1:3] = np.inf
    expanded, upper, lower = bounds_as_rows(data, lb, ub)
    x, lam, nu_all = clarabel_solve(**expanded)
    nu, nu_bounds = nu_all[:m], nu_all[m:]
    mu = np.zeros(N)
    mu[upper] += nu_bounds[: upper.size]
    mu[lower] -= nu_bounds[upper.size:]
    return data, lb, ub, dict(x=x, lam=lam, nu=nu, mu=mu, expanded=expanded, nu_all=nu_all,
                              upper=upper, lower=lower)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bounded_qp_matches_clarabel(seed):
    data, lb, ub, ref = bounded_case(seed)
    assert ref["upper"].size and ref["lower"].size
    binding_upper = np.sum(np.abs(ref["x"] - ub) < 1e-7)
    binding_lower = np.sum(np.abs(ref["x"] - lb) < 1e-7)
    assert binding_upper >= 1 and binding_lower >= 1, (binding_upper, binding_lower)
    solution = solve_jit(to_qp(data, lb=lb, ub=ub), TIGHT)
    assert int(solution.info.status) == ad.Status.SOLVED and bool(solution.info.polished)
    # Polished: the error is Clarabel's (measured ≤ 4e-10 in x, multipliers ≤ 4e-9
    # relative to the largest).
    np.testing.assert_allclose(solution.x, ref["x"], rtol=0, atol=1e-8)
    scale = max(1.0, np.abs(ref["mu"]).max(), np.abs(ref["lam"]).max(initial=0), np.abs(ref["nu"]).max(initial=0))
    for name in ("mu", "lam", "nu"):
        np.testing.assert_allclose(getattr(solution, name), ref[name], rtol=0, atol=1e-7 * scale)
    x = np.asarray(solution.x)
    assert np.all(x >= lb) and np.all(x <= ub)  # polished: exactly within the bounds


def test_one_side_and_bounds_alone():
    """Only lb, only ub, and a bound-constrained QP with no A, G (nonnegative least squares)."""
    data, lb, ub, _ = bounded_case(0)
    for lower, upper in ((lb, None), (None, ub)):
        expanded, _, _ = bounds_as_rows(data, lower, upper)
        x_ref, _, _ = clarabel_solve(**expanded)
        solution = solve_jit(to_qp(data, lb=lower, ub=upper), TIGHT)
        assert int(solution.info.status) == ad.Status.SOLVED
        np.testing.assert_allclose(solution.x, x_ref, rtol=0, atol=1e-8)
    alone = dict(P=data["P"], q=data["q"], A=None, b=None, G=None, h=None)
    zero = np.zeros(N)
    expanded, _, _ = bounds_as_rows(alone, zero, None)
    x_ref, _, _ = clarabel_solve(**expanded)
    solution = solve_jit(to_qp(alone, lb=zero, ub=None), TIGHT)
    assert int(solution.info.status) == ad.Status.SOLVED
    np.testing.assert_allclose(solution.x, x_ref, rtol=0, atol=1e-10)  # measured 4.4e-12
    assert np.sum(np.asarray(solution.x) == 0) >= 2  # binding, and exactly on the bound


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_gradients_of_every_leaf_match_the_rows_of_G_reference(strategy):
    data, lb, ub, ref = bounded_case(0)
    g = np.random.default_rng(5).standard_normal(N)
    expected = kkt_gradients(**ref["expanded"], x=ref["x"], lam=ref["lam"], nu=ref["nu_all"], g=g)
    lb_bar, ub_bar = bound_gradients(expected, M_ROWS, ref["upper"], ref["lower"], N)
    (_, solution), grads = value_and_grad_jit(to_qp(data, lb=lb, ub=ub), jnp.asarray(g),
                                              ad.Options(tol=1e-10, differentiation=strategy))
    assert int(solution.info.status) == ad.Status.SOLVED
    wanted = dict(P=expected["P"], q=expected["q"], A=expected["A"], b=expected["b"],
                  G=expected["G"][:M_ROWS], h=expected["h"][:M_ROWS], lb=lb_bar, ub=ub_bar)
    for leaf, value in wanted.items():
        got = np.asarray(getattr(grads, leaf))
        if leaf in ("lb", "ub"):  # infinite bounds have a zero gradient, not NaN
            assert np.all(np.isfinite(got))
        # measured: ≤ 2.1e-9 for kkt/auto (the reference's own accuracy: Clarabel's x), ≤ 8.7e-8
        # for altdiff/adjoint (their truncation at tol 1e-10)
        bound = 1e-7 if strategy in ("kkt", "auto") else 1e-6
        assert relative_error(got, value) <= bound, (leaf, relative_error(got, value))


def test_bound_gradients_match_finite_differences():
    data, lb, ub, _ = bounded_case(1)
    g = jnp.asarray(np.random.default_rng(6).standard_normal(N))
    problem = to_qp(data, lb=lb, ub=ub)
    _, grads = value_and_grad_jit(problem, g, TIGHT)
    eps = 1e-6
    rng = np.random.default_rng(7)
    for leaf in ("lb", "ub"):
        bound = np.asarray(getattr(problem, leaf))
        direction = np.where(np.isfinite(bound), rng.standard_normal(N), 0.0)

        def value(sign):
            moved = problem._replace(**{leaf: jnp.asarray(bound + sign * eps * direction)})
            return float(solve_jit(moved, TIGHT).x @ g)

        fd = (value(1.0) - value(-1.0)) / (2 * eps)
        analytic = float(np.asarray(getattr(grads, leaf)) @ direction)
        assert abs(analytic - fd) <= 1e-7 * max(abs(fd), 1.0), (leaf, analytic, fd)  # measured 2e-10
        assert abs(fd) > 1e-3  # the direction moves the solution


def test_bounds_equal_the_same_rows_in_G():
    """One problem, two formulations: identical solutions and gradients to 1e-9."""
    data, lb, ub, ref = bounded_case(2)
    g = jnp.asarray(np.random.default_rng(8).standard_normal(N))
    exact = ad.Options(tol=1e-10, differentiation="kkt")  # exact gradients: no truncation error to compare
    (_, with_bounds), bounds_grads = value_and_grad_jit(to_qp(data, lb=lb, ub=ub), g, exact)
    (_, with_rows), rows_grads = value_and_grad_jit(to_qp(ref["expanded"]), g, exact)
    assert int(with_bounds.info.status) == int(with_rows.info.status) == ad.Status.SOLVED
    # Both polished and differentiated exactly: they agree to round-off (measured ≤ 2.7e-15).
    np.testing.assert_allclose(with_bounds.x, with_rows.x, rtol=0, atol=1e-13)
    for leaf in "PqAb":
        assert relative_error(getattr(bounds_grads, leaf), getattr(rows_grads, leaf)) <= 1e-13, leaf
    h_bar = np.asarray(rows_grads.h)
    lb_bar, ub_bar = bound_gradients(dict(h=h_bar), M_ROWS, ref["upper"], ref["lower"], N)
    np.testing.assert_allclose(bounds_grads.ub, ub_bar, rtol=0, atol=1e-13)
    np.testing.assert_allclose(bounds_grads.lb, lb_bar, rtol=0, atol=1e-13)
    np.testing.assert_allclose(bounds_grads.G, np.asarray(rows_grads.G)[:M_ROWS], rtol=0, atol=1e-13)


@pytest.mark.parametrize("strategy, tolerance", [("auto", 1e-12), ("altdiff", 1e-7)])
def test_jacobians_and_jvp_of_the_bounds(strategy, tolerance):
    """auto: exact at the polished solution (measured ≤ 1.2e-14); altdiff: the carried
    recursion through the bound block, truncated at tol 1e-10 (measured ≤ 7e-9)."""
    data, lb, ub, ref = bounded_case(0)
    problem = to_qp(data, lb=lb, ub=ub)
    options = dataclasses.replace(TIGHT, differentiation=strategy)
    solution, jac = jax.jit(ad.jacobians)(problem, options)
    assert set(jac) == {"q", "b", "h", "lb", "ub"} and jac["lb"].shape == (N, N)
    expected = kkt_jacobians(**ref["expanded"], x=ref["x"], lam=ref["lam"], nu=ref["nu_all"])
    d_h = expected["h"][:, M_ROWS:]
    ub_jac, lb_jac = np.zeros((N, N)), np.zeros((N, N))
    ub_jac[:, ref["upper"]] = d_h[:, : ref["upper"].size]
    lb_jac[:, ref["lower"]] = -d_h[:, ref["upper"].size:]
    for key, want in (("q", expected["q"]), ("ub", ub_jac), ("lb", lb_jac), ("h", expected["h"][:, :M_ROWS])):
        assert relative_error(jac[key], want) <= tolerance, key
    direction = np.where(np.isfinite(ub), np.random.default_rng(9).standard_normal(N), 0.0)
    _, dx = jax.jit(ad.jvp)(problem, ad.QP(P=None, q=None, ub=jnp.asarray(direction)), options)
    assert relative_error(dx, ub_jac @ direction) <= tolerance


def test_vmap_with_batched_bounds_equals_loop():
    data, lb, ub, _ = bounded_case(0)
    shifts = np.linspace(-0.2, 0.2, 4)
    problem = to_qp(data, lb=lb, ub=ub)
    batch = problem._replace(lb=jnp.stack([problem.lb + s for s in shifts]),
                             ub=jnp.stack([problem.ub + s for s in shifts]))
    in_axes = ad.QP(P=None, q=None, A=None, b=None, G=None, h=None, lb=0, ub=0)
    g = jnp.ones(N)

    def loss(pr):
        return ad.solve(pr, TIGHT).x @ g

    solutions = jax.jit(jax.vmap(ad.solve, in_axes=(in_axes, None)))(batch, TIGHT)
    grads = jax.jit(jax.vmap(jax.grad(loss), in_axes=(in_axes,)))(batch)
    single_grad = jax.jit(jax.grad(loss))
    for i, shift in enumerate(shifts):
        single = problem._replace(lb=problem.lb + shift, ub=problem.ub + shift)
        alone = solve_jit(single, TIGHT)
        # batched round-off only (measured ≤ 6.7e-16)
        np.testing.assert_allclose(solutions.x[i], alone.x, rtol=0, atol=1e-14)
        single_grads = single_grad(single)
        for leaf in ("q", "lb", "ub"):
            np.testing.assert_allclose(getattr(grads, leaf)[i], getattr(single_grads, leaf), rtol=0, atol=1e-13)


def test_infinite_and_crossed_bounds():
    data, lb, ub, _ = bounded_case(0)
    everywhere = to_qp(data, lb=np.full(N, -np.inf), ub=np.full(N, np.inf))
    free = to_qp(data)
    np.testing.assert_allclose(solve_jit(everywhere, TIGHT).x, solve_jit(free, TIGHT).x, rtol=0, atol=1e-14)  # measured 0
    crossed = to_qp(data, lb=lb, ub=ub)._replace(lb=jnp.asarray(lb).at[5].set(ub[5] + 1.0))
    solution = solve_jit(crossed, TIGHT)
    assert int(solution.info.status) == ad.Status.PRIMAL_INFEASIBLE and int(solution.info.iterations) == 0
    # It never entered the loop: its residuals are those of its start, x = 0, not zeros.
    dual_at_start = np.max(np.abs(np.asarray(crossed.q)))
    assert abs(float(solution.info.dual_residual) - dual_at_start) <= 1e-12 * dual_at_start
    nan_bound = to_qp(data, lb=lb, ub=ub)._replace(ub=jnp.asarray(ub).at[4].set(jnp.nan))
    assert int(solve_jit(nan_bound, TIGHT).info.status) == ad.Status.NONFINITE


def test_validation_names_the_bound():
    data, lb, ub, _ = bounded_case(0)
    problem = to_qp(data, lb=lb, ub=ub)
    with pytest.raises(ValueError, match=r"QP.lb has shape \(3,\), expected \(12,\)"):
        ad.solve(problem._replace(lb=jnp.zeros(3)))
    with pytest.raises(ValueError, match=r"QP.ub has dtype float32 but QP.P has dtype float64"):
        ad.solve(problem._replace(ub=jnp.zeros(N, jnp.float32)))


def _convex_objective(x, c):
    return jax.nn.logsumexp(x) + 0.5 * jnp.sum((x - c) ** 2)


def test_solve_convex_takes_bounds():
    rng = np.random.default_rng(10)
    c = 2 * rng.standard_normal(N)
    lb, ub = np.full(N, -0.5), np.full(N, 0.8)
    g = jnp.asarray(rng.standard_normal(N))

    def loss(c, lb, ub):
        solution = ad.solve_convex(_convex_objective, c, lb=lb, ub=ub, options=TIGHT)
        return solution.x @ g, solution

    (value, solution), (grad_c, grad_lb, grad_ub) = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(
        jnp.asarray(c), jnp.asarray(lb), jnp.asarray(ub))
    assert int(solution.info.status) == ad.Status.SOLVED
    x = np.asarray(solution.x)
    assert np.sum(x == ub) >= 2 and np.sum(x == lb) >= 2  # exactly on binding bounds
    # Stationarity of the free entries: softmax(x) + x − c = 0 there.
    free = (x > lb) & (x < ub)
    stationarity = np.asarray(jax.nn.softmax(x)) + x - c
    assert np.abs(stationarity[free]).max() <= 1e-12
    eps = 1e-6
    value_only = jax.jit(jax.vmap(lambda c: loss(c, jnp.asarray(lb), jnp.asarray(ub))[0]))
    steps = eps * np.eye(N)
    fd = (np.asarray(value_only(jnp.asarray(c + steps))) - np.asarray(value_only(jnp.asarray(c - steps)))) / (2 * eps)
    np.testing.assert_allclose(grad_c, fd, rtol=0, atol=1e-8)
    assert np.all(np.asarray(grad_ub)[x < ub] == 0) and np.all(np.asarray(grad_lb)[x > lb] == 0)
