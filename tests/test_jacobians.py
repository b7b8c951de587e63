"""Full Jacobians against the KKT reference, and forward mode's error message."""

import jax
import jax.numpy as jnp
import pytest
from conftest import CASES, TIGHT, case, jacobians_jit, reference_jacobians, relative_error

import altdiff_jax as ad


@pytest.mark.parametrize("name", list(CASES))
def test_jacobians_match_kkt(name):
    spec = CASES[name]
    _, problem, _ = case(*spec)
    expected = reference_jacobians(spec)
    solution, jac = jacobians_jit(problem, TIGHT)
    assert int(solution.info.status) == ad.Status.SOLVED
    n, p, m = spec[1:4]
    assert jac["q"].shape == (n, n) and jac["b"].shape == (n, p) and jac["h"].shape == (n, m)
    for key in ("q", "b", "h"):
        if expected[key] is not None:
            assert relative_error(jac[key], expected[key]) <= 1e-8, key  # measured ≤ 5.7e-10


def test_jacobians_agree_with_gradient():
    """Jᵀg from `jacobians` is the gradient `jax.grad` gives for q, b and h."""
    _, problem, _ = case(*CASES["small"])
    g = jnp.arange(problem.q.size, dtype=problem.q.dtype)
    _, jac = jacobians_jit(problem, TIGHT)
    grads = jax.grad(lambda pr: ad.solve(pr, TIGHT).x @ g)(problem)
    for key in ("q", "b", "h"):
        assert relative_error(getattr(grads, key), jac[key].T @ g) <= 2e-9  # measured 7.4e-11


@pytest.mark.parametrize("transform", [jax.jacfwd, lambda f: lambda q: jax.jvp(f, (q,), (q,))])
def test_forward_mode_error_points_to_jacobians(transform):
    _, problem, _ = case(*CASES["small"])

    def x_of_q(q):
        return ad.solve(problem._replace(q=q), TIGHT).x

    with pytest.raises(TypeError, match="altdiff_jax.jacobians"):
        transform(x_of_q)(problem.q)
