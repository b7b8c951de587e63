"""Full Jacobians against the KKT reference, and forward mode's error message."""

import jax
import jax.numpy as jnp
import numpy as np
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
            assert relative_error(jac[key], expected[key]) <= 1e-12, key  # measured ≤ 1.6e-15 (exact, polished)


def test_jacobians_agree_with_gradient():
    """Jᵀg from `jacobians` is the gradient `jax.grad` gives for q, b and h."""
    _, problem, _ = case(*CASES["small"])
    g = jnp.arange(problem.q.size, dtype=problem.q.dtype)
    _, jac = jacobians_jit(problem, TIGHT)
    grads = jax.grad(lambda pr: ad.solve(pr, TIGHT).x @ g)(problem)
    for key in ("q", "b", "h"):
        assert relative_error(getattr(grads, key), jac[key].T @ g) <= 1e-12  # measured 7.8e-16


@pytest.mark.parametrize("transform", [jax.jacfwd, lambda f: lambda q: jax.jvp(f, (q,), (q,))])
def test_forward_mode_error_points_to_jacobians(transform):
    _, problem, _ = case(*CASES["small"])

    def x_of_q(q):
        return ad.solve(problem._replace(q=q), TIGHT).x

    with pytest.raises(TypeError, match="altdiff_jax.jacobians"):
        transform(x_of_q)(problem.q)


def _jacobians_of(wrt, options):
    return jax.jit(lambda problem: ad.jacobians(problem, options, wrt=wrt))


def test_jacobians_of_a_subset_return_and_carry_only_those_columns():
    """``wrt`` picks the parameters: only their Jacobians come back, and Alt-Diff's loop
    carries only their columns (p for b), never all n + p + m."""
    from test_gradients import _carried_shapes

    spec = CASES["paper_n120"]
    _, problem, _ = case(*spec)
    n, p, m = spec[1:4]
    expected = reference_jacobians(spec)
    for strategy in ("auto", "altdiff"):
        options = ad.Options(tol=1e-11, max_iter=100_000, differentiation=strategy)
        solution, jac = _jacobians_of(("b",), options)(problem)
        assert int(solution.info.status) == ad.Status.SOLVED and list(jac) == ["b"]
        # measured: auto 1.4e-14, altdiff 7.5e-12
        assert relative_error(jac["b"], expected["b"]) <= 5e-10, strategy
        carried = _carried_shapes(jax.make_jaxpr(lambda pr: ad.jacobians(pr, options, wrt="b"))(problem).jaxpr)
        assert (n, p) in carried and (n, n + p + m) not in carried, sorted(carried)


def test_polished_jacobians_are_exact_where_carried_ones_are_truncated():
    """At a loose tolerance the default returns the polished solution's exact Jacobians
    (the fixed point of the recursion on its active set); ``"altdiff"`` returns the
    carried ones, truncated by the tolerance as in the paper."""
    spec = CASES["paper_n120"]
    _, problem, _ = case(*spec)
    expected = reference_jacobians(spec)
    errors = {}
    for strategy in ("auto", "altdiff"):
        options = ad.Options(tol=1e-3, differentiation=strategy)
        solution, jac = _jacobians_of(("b", "h"), options)(problem)
        assert bool(solution.info.polished), strategy
        errors[strategy] = max(relative_error(jac[k], expected[k]) for k in ("b", "h"))
    # measured: auto 1.4e-14, altdiff 2.2e-3
    assert errors["auto"] <= 1e-12 and 1e-4 <= errors["altdiff"] <= 1e-1, errors


def test_jacobians_fall_back_to_the_carried_loop_where_polishing_fails(monkeypatch):
    """A solution that is not polished gets its Jacobians from the loop run again from it,
    carrying them: still accurate to the tolerance."""
    from altdiff_jax import _driver

    polish = _driver.polish

    def failing(*args):
        candidate, _, system = polish(*args)
        return candidate, jnp.bool_(False), system

    monkeypatch.setattr(_driver, "polish", failing)
    spec = CASES["small"]
    _, problem, _ = case(*spec)
    expected = reference_jacobians(spec)
    solution, jac = _jacobians_of(("q", "b"), TIGHT)(problem)
    assert int(solution.info.status) == ad.Status.SOLVED and not bool(solution.info.polished)
    assert 0 < float(solution.info.jacobian_change) <= 1e-11
    for key in ("q", "b"):
        assert relative_error(jac[key], expected[key]) <= 3e-9, key  # measured ≤ 3.6e-11


def test_jacobians_of_a_batch_equal_each_problem_alone():
    problems = [case(seed, 12, 3, 8, False)[1] for seed in (1, 5, 6)]
    batch = jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *problems)
    function = _jacobians_of(("h",), ad.Options(tol=1e-6))
    _, batched = jax.vmap(function)(batch)
    for lane, problem in enumerate(problems):
        _, alone = function(problem)
        assert relative_error(batched["h"][lane], alone["h"]) <= 1e-14, lane  # measured 0.0


@pytest.mark.parametrize("wrt, message", [(("c",), "wrt names 'c'"), (("lb",), "has no bounds"), ((), "no parameter")])
def test_jacobians_reject_parameters_they_cannot_differentiate_by(wrt, message):
    _, problem, _ = case(*CASES["small"])
    with pytest.raises(ValueError, match=message):
        ad.jacobians(problem, wrt=wrt)


def test_an_infeasible_problem_has_zero_jacobians_and_its_status():
    _, problem, _ = case(*CASES["small"])
    n = problem.q.shape[0]
    infeasible = problem._replace(G=jnp.concatenate([problem.G, jnp.ones((1, n)), -jnp.ones((1, n))]),
                                  h=jnp.concatenate([problem.h, jnp.array([-1.0, -1.0])]))  # 1ᵀx <= -1, 1ᵀx >= 1
    solution, jac = _jacobians_of(("q", "h"), ad.Options())(infeasible)
    assert int(solution.info.status) == ad.Status.PRIMAL_INFEASIBLE
    assert not np.any(np.asarray(jac["q"])) and not np.any(np.asarray(jac["h"]))
