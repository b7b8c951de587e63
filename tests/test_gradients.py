"""Gradients for all six leaves against the dense KKT reference and finite differences."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import (
    CASES,
    SMALL,
    TIGHT,
    case,
    cosine,
    reference_gradients,
    relative_error,
    solve_jit,
    value_and_grad_jit,
)

import altdiff_jax as ad

LEAVES = "PqAbGh"


@pytest.mark.parametrize("name", list(CASES))
def test_all_six_gradients_match_kkt(name):
    spec = CASES[name]
    _, problem, _ = case(*spec)
    g, expected = reference_gradients(spec)
    (_, solution), grads = value_and_grad_jit(problem, jnp.asarray(g), TIGHT)
    info = solution.info
    assert int(info.status) == ad.Status.SOLVED
    for leaf in LEAVES:
        if expected[leaf] is None:
            assert getattr(grads, leaf) is None
            continue
        actual = getattr(grads, leaf)
        # measured (2026-11-29): 1 − cosine ≤ 2e-16, relative error ≤ 5.7e-9
        assert cosine(actual, expected[leaf]) >= 1 - 1e-12, leaf
        assert relative_error(actual, expected[leaf]) <= 1e-7, leaf


def _loss_of_every_output(problem, weights, options):
    """A loss of x, s, λ and ν together, to exercise every output cotangent."""
    sol = ad.solve(problem, options)
    return sum(jnp.dot(getattr(sol, k), weights[k]) for k in ("x", "s", "lam", "nu"))


_every_output_loss_jit = jax.jit(_loss_of_every_output)
_every_output_grad_jit = jax.jit(jax.grad(_loss_of_every_output))


def _central_difference(fun, problem, leaf, direction, eps):
    def shifted(sign):
        value = getattr(problem, leaf) + sign * eps * direction
        return float(fun(problem._replace(**{leaf: value})))

    return (shifted(1.0) - shifted(-1.0)) / (2 * eps)


@pytest.mark.parametrize("leaf", LEAVES)
def test_gradient_of_every_output_matches_finite_differences(leaf):
    data, problem, (x, _, nu) = case(*SMALL)
    rng = np.random.default_rng(7)
    weights = {k: jnp.asarray(rng.standard_normal(v.shape)) for k, v in
               dict(x=x, s=nu, lam=data["b"], nu=nu).items()}
    loss = _every_output_loss_jit
    grad = _every_output_grad_jit(problem, weights, TIGHT)
    direction = jnp.asarray(rng.standard_normal(getattr(problem, leaf).shape))
    fd = _central_difference(lambda pr: loss(pr, weights, TIGHT), problem, leaf, direction, 1e-6)
    analytic = float(jnp.vdot(getattr(grad, leaf), direction))
    assert abs(fd) > 1e-2  # the direction moves the loss
    assert relative_error(analytic, fd) <= 1e-6  # measured ≤ 3e-8 (b), ≤ 2e-9 for the others


def _carried_shapes(jaxpr, shapes=None) -> set:
    """The 2-D shapes in the carry of every ``while`` loop of ``jaxpr`` (recursively)."""
    shapes = set() if shapes is None else shapes
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "while":
            shapes.update(v.aval.shape for v in eqn.params["body_jaxpr"].jaxpr.invars if v.aval.ndim == 2)
        for param in eqn.params.values():
            for sub in param if isinstance(param, (list, tuple)) else [param]:
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    _carried_shapes(inner, shapes)
    return shapes


def test_partial_gradients_carry_only_what_is_needed():
    """grad w.r.t. one leaf alone (the others not differentiated) equals that leaf of the
    full reference gradient, and Alt-Diff carries only that leaf's Jacobian columns (b: p,
    G: n + m, through ∂∇f = dGᵀν and ∂h = −dG x), never all n + p + m."""
    spec = SMALL
    _, problem, _ = case(*spec)
    n, p, m = spec[1:4]
    g, expected = reference_gradients(spec)
    g = jnp.asarray(g)
    columns = dict(b=p, G=n + m)

    for strategy, leaves in (("auto", "PqbG"), ("altdiff", "bG")):
        options = dataclasses.replace(TIGHT, differentiation=strategy)
        for leaf in leaves:
            def loss(value, leaf=leaf):
                return ad.solve(problem._replace(**{leaf: value}), options).x @ g

            actual = jax.jit(jax.grad(loss))(getattr(problem, leaf))
            # measured ≤ 4.4e-10 (SMALL is polished: the reference's own accuracy)
            assert relative_error(actual, expected[leaf]) <= 1e-8, (strategy, leaf)
            if strategy == "altdiff":
                carried = _carried_shapes(jax.make_jaxpr(jax.grad(loss))(getattr(problem, leaf)).jaxpr)
                assert (n, columns[leaf]) in carried and (n, n + p + m) not in carried, (leaf, sorted(carried))


def test_truncation_error_shrinks_with_tolerance():
    spec = SMALL
    _, problem, _ = case(*spec)
    g, expected = reference_gradients(spec)
    errors, iterations = [], []
    for tol in (1e-2, 1e-4, 1e-6, 1e-8):
        options = ad.Options(tol=tol, differentiation="altdiff")
        (_, solution), grads = value_and_grad_jit(problem, jnp.asarray(g), options)
        info = solution.info
        iterations.append(int(info.iterations))
        errors.append(max(relative_error(getattr(grads, k), expected[k]) for k in LEAVES))
    assert all(a < b for a, b in zip(iterations, iterations[1:])), iterations
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    # measured: 1.2e-2, 5.7e-5, 3.9e-7, 9.4e-9
    assert errors[-1] <= 1e-6 and errors[0] >= 100 * errors[-1], errors


def test_gradient_solve_reports_its_iterations():
    """Under grad the loop also waits for the Jacobians, so it runs at least as long."""
    _, problem, _ = case(*SMALL)
    g = jnp.ones(problem.q.shape)
    options = dataclasses.replace(TIGHT, differentiation="altdiff")
    (_, solution), _ = value_and_grad_jit(problem, g, options)
    info = solution.info
    plain = solve_jit(problem, options)
    assert int(info.iterations) >= int(plain.info.iterations)
    assert float(info.jacobian_change) > 0 and float(plain.info.jacobian_change) == 0
