"""Bad input never hangs and never lies: ValueErrors at trace time, statuses at run time."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import CASES, TIGHT, case, solve_jit

import altdiff_jax as ad


def _problem():
    return case(*CASES["small"])[1]


@pytest.mark.parametrize(
    "change, pattern",
    [
        (dict(q=jnp.zeros(5)), r"QP.q has shape \(5,\), expected \(12,\)"),
        (dict(A=jnp.zeros((3, 11))), r"QP.A has shape \(3, 11\), expected \(rows, 12\)"),
        (dict(b=jnp.zeros(4)), r"QP.b has shape \(4,\), expected \(3,\).*QP.A of shape \(3, 12\)"),
        (dict(h=jnp.zeros((8, 1))), r"QP.h has shape \(8, 1\), expected \(8,\)"),
        (dict(P=jnp.zeros((12, 11))), r"QP.P must be a square matrix.*\(12, 11\)"),
        (dict(b=None), r"QP.A is given but QP.b is None"),
        (dict(q=jnp.zeros(12, jnp.float32)), r"QP.q has dtype float32 but QP.P has dtype float64"),
        (dict(P=jnp.eye(12, dtype=jnp.int32)), r"QP.P must have a floating dtype"),
    ],
)
def test_bad_shapes_and_dtypes_raise_at_trace_time(change, pattern):
    bad = _problem()._replace(**change)
    with pytest.raises(ValueError, match=pattern):
        jax.jit(ad.solve)(bad)
    with pytest.raises(ValueError, match=pattern):
        ad.jacobians(bad)


def test_bad_warm_start_and_options_raise():
    problem = _problem()
    previous = solve_jit(problem, TIGHT)
    with pytest.raises(ValueError, match=r"init.nu has shape \(7,\), expected \(8,\)"):
        ad.solve(problem, init=previous._replace(nu=jnp.zeros(7)))
    with pytest.raises(ValueError, match="rho must be > 0"):
        ad.Options(rho=0.0)
    with pytest.raises(ValueError, match="max_iter"):
        ad.Options(max_iter=0)


@pytest.mark.parametrize("leaf", ["q", "P", "h"])
def test_nan_in_data_reports_nonfinite_quickly(leaf):
    problem = _problem()
    value = getattr(problem, leaf)
    bad = problem._replace(**{leaf: value.at[(0,) * value.ndim].set(jnp.nan)})
    solution = solve_jit(bad, TIGHT)
    assert int(solution.info.status) == ad.Status.NONFINITE
    assert int(solution.info.iterations) <= 2


def test_nan_lane_does_not_poison_the_batch():
    problem = _problem()
    batch_q = jnp.stack([problem.q, problem.q.at[3].set(jnp.nan), -problem.q])
    in_axes = ad.QP(P=None, q=0, A=None, b=None, G=None, h=None)
    solve_batch = jax.jit(jax.vmap(ad.solve, in_axes=(in_axes, None)))
    solutions = solve_batch(problem._replace(q=batch_q), TIGHT)
    np.testing.assert_array_equal(
        solutions.info.status, [ad.Status.SOLVED, ad.Status.NONFINITE, ad.Status.SOLVED]
    )
    assert np.isfinite(solutions.x[0]).all() and np.isfinite(solutions.x[2]).all()


def test_max_iter_is_reported():
    solution = solve_jit(_problem(), ad.Options(tol=1e-12, max_iter=5, polish=False))
    assert int(solution.info.status) == ad.Status.MAX_ITER
    assert int(solution.info.iterations) == 5


def test_indefinite_problem_is_not_reported_solved():
    """P + AᵀA + GᵀG singular: the x-update is ill posed, and the status says so."""
    n = 4
    problem = ad.QP(P=jnp.zeros((n, n)), q=jnp.ones(n), G=jnp.eye(n)[:2], h=jnp.ones(2))
    solution = solve_jit(problem, TIGHT)
    assert int(solution.info.status) != ad.Status.SOLVED
