"""Solutions against cvxpy + Clarabel on the paper's generator and the edge shapes."""

import numpy as np
import pytest
from conftest import CASES, TIGHT, case, relative_error, solve_jit

import altdiff_jax as ad


@pytest.mark.parametrize("name", list(CASES))
def test_matches_clarabel(name):
    data, problem, (x_ref, lam_ref, nu_ref) = case(*CASES[name])
    solution = solve_jit(problem, TIGHT)
    assert int(solution.info.status) == ad.Status.SOLVED
    # Measured (polished; the error is Clarabel's): x ≤ 5.2e-9 relative, multipliers ≤ 1.9e-8
    # of the cost scale, residuals ≤ 7.4e-15 (primal) and 1.4e-13 (dual).
    assert relative_error(solution.x, x_ref) <= 1e-7
    # Multipliers are compared on the scale of the cost they balance.
    scale = max(1.0, np.linalg.norm(data["q"]))
    assert np.linalg.norm(solution.lam - lam_ref) <= 1e-6 * scale
    assert np.linalg.norm(solution.nu - nu_ref) <= 1e-6 * scale
    assert float(solution.info.primal_residual) <= 5e-13
    assert float(solution.info.dual_residual) <= 1e-11


@pytest.mark.parametrize("seed", [10, 11, 12])
def test_more_paper_problems(seed):
    _, problem, (x_ref, _, _) = case(seed, *CASES["small"][1:])
    solution = solve_jit(problem, TIGHT)
    assert int(solution.info.status) == ad.Status.SOLVED
    assert relative_error(solution.x, x_ref) <= 1e-8  # measured ≤ 1.4e-10


def test_unconstrained_is_one_linear_solve():
    data, problem, _ = case(5, 6, 0, 0, False)
    solution = solve_jit(problem, TIGHT)
    np.testing.assert_allclose(solution.x, -np.linalg.solve(data["P"], data["q"]), rtol=1e-11)  # measured 5e-13
    assert solution.s.shape == solution.nu.shape == solution.lam.shape == (0,)


def test_kkt_conditions_hold_at_solution():
    data, problem, _ = case(*CASES["small"])
    sol = solve_jit(problem, TIGHT)
    x, s, lam, nu = map(np.asarray, sol[:4])
    P, q, A, b, G, h = (data[k] for k in "PqAbGh")
    np.testing.assert_allclose(P @ x + q + A.T @ lam + G.T @ nu, 0, atol=1e-13)  # measured 3.2e-15
    np.testing.assert_allclose(G @ x + s, h, atol=1e-13)  # measured 8.9e-16
    assert (s >= 0).all() and (nu >= -1e-12).all()
    assert np.abs(s * nu).max() <= 1e-8


def test_loose_tolerance_takes_fewer_iterations():
    _, problem, _ = case(*CASES["small"])
    loose = solve_jit(problem, ad.Options(tol=1e-3, polish=False))
    tight = solve_jit(problem, ad.Options(tol=1e-11, polish=False))
    assert 0 < int(loose.info.iterations) < int(tight.info.iterations)


def test_a_large_problem_is_exact_through_the_blocked_factor_and_its_gradient_crosses_jit():
    """n 400 (past ``_linalg.BLOCKED_SOLVE_FROM`` and ``_kkt.GATHERED_GRAM_FROM``): the
    x-update's Cholesky factor is kept by blocks and polishing builds its normal matrix from
    the x-update's Gram matrix. The polished solution matches Clarabel, the ``kkt``
    gradient the dense KKT reference, and ``jax.grad`` through ``jax.jit(solve)`` (where the
    factor becomes a residual passed between two compiled functions) the gradient compiled
    whole."""
    import jax
    import jax.numpy as jnp
    from conftest import linear_loss, reference_gradients

    from altdiff_jax import _kkt, _linalg

    spec = (3, 400, 20, 60, False)
    assert spec[1] >= max(_linalg.BLOCKED_SOLVE_FROM, _kkt.GATHERED_GRAM_FROM)
    _, qp, (x_ref, _, _) = case(*spec)
    g, expected = reference_gradients(spec)
    options = ad.Options(differentiation="kkt")
    solution = solve_jit(qp, options)
    assert int(solution.info.status) == ad.Status.SOLVED and bool(solution.info.polished)
    assert relative_error(solution.x, x_ref) < 1e-7  # measured 2.7e-9 (Clarabel's own error)
    g = jnp.asarray(g)
    whole = jax.jit(jax.grad(lambda qp: linear_loss(qp, g, options)[0]))(qp)
    # measured: P 2.9e-9, A 1.4e-9, G 1.9e-9 (the reference is built on Clarabel's x); q, b, h 1.7e-14 at most
    tolerances = dict(P=1e-7, A=1e-7, G=1e-7, q=1e-12, b=1e-12, h=1e-12)
    for key, tolerance in tolerances.items():
        assert relative_error(getattr(whole, key), expected[key]) < tolerance, key
    split = jax.grad(lambda qp: solve_jit(qp, options).x @ g)(qp)
    for key in ("P", "q", "A", "b", "G", "h"):
        np.testing.assert_allclose(getattr(split, key), getattr(whole, key), rtol=0, atol=1e-12)  # measured 0
