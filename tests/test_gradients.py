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
    (_, info), grads = value_and_grad_jit(problem, jnp.asarray(g), TIGHT)
    assert int(info.status) == ad.Status.SOLVED
    for leaf in LEAVES:
        if expected[leaf] is None:
            assert getattr(grads, leaf) is None
            continue
        actual = getattr(grads, leaf)
        assert cosine(actual, expected[leaf]) >= 0.9999, leaf
        assert relative_error(actual, expected[leaf]) <= 1e-3, leaf


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
    assert abs(analytic - fd) <= 1e-3 * abs(fd) + 1e-8


def test_partial_gradients_carry_only_what_is_needed():
    """grad w.r.t. P alone (q not differentiated) and q alone equal the full gradient."""
    spec = SMALL
    _, problem, _ = case(*spec)
    g, expected = reference_gradients(spec)
    g = jnp.asarray(g)

    def loss_of(leaf):
        def loss(value):
            return ad.solve(problem._replace(**{leaf: value}), TIGHT).x @ g
        return jax.jit(jax.grad(loss))

    for leaf in ("P", "b", "G"):
        actual = loss_of(leaf)(getattr(problem, leaf))
        assert relative_error(actual, expected[leaf]) <= 1e-6, leaf


def test_truncation_error_shrinks_with_tolerance():
    spec = SMALL
    _, problem, _ = case(*spec)
    g, expected = reference_gradients(spec)
    errors, iterations = [], []
    for tol in (1e-2, 1e-4, 1e-6, 1e-8):
        options = ad.Options(tol=tol, differentiation="altdiff")
        (_, info), grads = value_and_grad_jit(problem, jnp.asarray(g), options)
        iterations.append(int(info.iterations))
        errors.append(max(relative_error(getattr(grads, k), expected[k]) for k in LEAVES))
    assert all(a < b for a, b in zip(iterations, iterations[1:])), iterations
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] <= 1e-5 and errors[0] >= 100 * errors[-1], errors


def test_gradient_solve_reports_its_iterations():
    """Under grad the loop also waits for the Jacobians, so it runs at least as long."""
    _, problem, _ = case(*SMALL)
    g = jnp.ones(problem.q.shape)
    options = dataclasses.replace(TIGHT, differentiation="altdiff")
    (_, info), _ = value_and_grad_jit(problem, g, options)
    plain = solve_jit(problem, options)
    assert int(info.iterations) >= int(plain.info.iterations)
    assert float(info.jacobian_change) > 0 and float(plain.info.jacobian_change) == 0
