"""Matrix-free operators: P, A, G known only by their products, on the sparse path.

References: the dense KKT adjoint for gradients (``reference``), the dense path on the same
matrices, and central finite differences in float64."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import altdiff_jax as ad
from conftest import PAPER, case, cosine, reference_gradients, relative_error, solve_jit
from reference import finite_difference_grad
from test_sparse import _avals


def matrix_times(M, x):
    return M @ x


def in_float32(M, x):
    return (M @ x).astype(jnp.float32)


def differences(weight, x):
    """weight · (x[i+1] − x[i]): a first-difference stencil, never stored."""
    return weight * (x[1:] - x[:-1])


def scaled_identity(params, x):
    """The identity, with no parameters (its dtype is then q's)."""
    del params
    return x


def both_ways(weight, x):
    step = differences(weight, x)
    return jnp.concatenate([step, -step])


def as_matrix_free(problem: ad.QP) -> ad.QP:
    return problem._replace(**{name: ad.MatrixFree(matrix_times, getattr(problem, name), getattr(problem, name).shape)
                               for name in ("P", "A", "G")})


def x_dot(problem, g):
    return ad.solve(problem).x @ g


def test_matrix_free_data_solves_and_differentiates_as_the_dense_kkt_reference():
    _, dense, (x_ref, _, _) = case(*PAPER)
    problem = as_matrix_free(dense)
    solution = solve_jit(problem)
    assert ad.Status(int(solution.info.status)) == ad.Status.SOLVED
    assert relative_error(solution.x, x_ref) < 1e-7  # measured 5.1e-9 (Clarabel's accuracy)
    assert relative_error(solution.x, solve_jit(dense).x) < 1e-13  # measured 1.3e-15
    g, expected = reference_gradients(PAPER)
    grads = jax.jit(jax.grad(x_dot))(problem, jnp.asarray(g))
    for name in ("q", "b", "h"):
        assert cosine(getattr(grads, name), expected[name]) > 0.99999
        assert relative_error(getattr(grads, name), expected[name]) < 1e-10  # measured 1.0e-12
    for name in ("P", "A", "G"):
        gradient = getattr(grads, name)
        assert isinstance(gradient, ad.MatrixFree)  # the user's leaf, holding its params' gradient
        assert relative_error(gradient.params, expected[name]) < 5e-7  # measured 5.7e-9 (Clarabel's x)


def transposed_times(M, y):
    return M.T @ y


def test_a_nonsymmetric_p_is_used_through_its_symmetric_part_and_a_given_transpose_is_used():
    _, dense, (x_ref, _, _) = case(*PAPER)
    skewed = 2.0 * jnp.triu(dense.P) - jnp.diag(jnp.diag(dense.P))  # (M + Mᵀ)/2 = P
    P = ad.MatrixFree(matrix_times, skewed, skewed.shape, transpose=transposed_times)
    problem = as_matrix_free(dense)._replace(P=P)
    solution = solve_jit(problem)
    assert ad.Status(int(solution.info.status)) == ad.Status.SOLVED
    assert relative_error(solution.x, x_ref) < 1e-7  # measured 5.2e-9 (Clarabel's accuracy)
    g, expected = reference_gradients(PAPER)
    grads = jax.jit(jax.grad(x_dot))(problem, jnp.asarray(g))
    # The gradient of M's entries through (M + Mᵀ)/2: the symmetric gradient of P.
    assert relative_error(grads.P.params, expected["P"]) < 5e-7  # measured 5.2e-9 (Clarabel's x)


def test_a_stencil_layer_has_the_finite_difference_gradient_of_its_weight():
    n = 40
    rng = np.random.default_rng(3)
    target = jnp.asarray(np.cumsum(rng.standard_normal(n)))
    g = jnp.asarray(rng.standard_normal(n))

    def loss(weight, target):
        # ramp limits both ways, |weight · (x[i+1] − x[i])| <= 0.3, and bounds
        G = ad.MatrixFree(both_ways, weight, shape=(2 * (n - 1), n))
        problem = ad.QP(P=jnp.eye(n), q=-target, G=G, h=0.3 * jnp.ones(2 * (n - 1)),
                        lb=-5.0 * jnp.ones(n), ub=5.0 * jnp.ones(n))
        return ad.solve(problem).x @ g

    weight = jnp.asarray(1.5)
    value_and_grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
    _, (g_weight, g_target) = value_and_grad(weight, target)
    loss_jit = jax.jit(loss)
    fd_weight = finite_difference_grad(lambda v: float(loss_jit(jnp.asarray(v[0]), target)), np.array([1.5]), 1e-6)
    fd_target = finite_difference_grad(lambda v: float(loss_jit(weight, jnp.asarray(v))), np.asarray(target), 1e-6)
    assert abs(float(g_weight) - fd_weight[0]) <= 1e-5 * abs(fd_weight[0])  # measured 1.3e-7
    assert relative_error(g_target, fd_target) < 1e-5  # measured 5.0e-7


def test_no_array_of_size_n_by_m_is_formed_by_a_matrix_free_solve_and_its_gradient():
    n = 600

    def loss(weight, target):
        G = ad.MatrixFree(differences, weight, shape=(n - 1, n))
        P = ad.MatrixFree(scaled_identity, (), shape=(n, n), symmetric=True)
        return jnp.sum(ad.solve(ad.QP(P=P, q=-target, G=G, h=0.3 * jnp.ones(n - 1))).x ** 2)

    closed = jax.make_jaxpr(jax.grad(loss, argnums=(0, 1)))(jnp.asarray(1.0), jnp.linspace(0.0, 50.0, n))
    largest = max(int(np.prod(aval.shape)) for aval in _avals(closed.jaxpr))
    assert largest < n * n // 8  # measured 16384 = n² / 22 (a stack of vectors)
    assert largest >= n


def test_a_batch_of_matrix_free_operators_equals_its_problems_solved_alone():
    n = 30
    target = jnp.linspace(0.0, 12.0, n)

    def solve(weight):
        G = ad.MatrixFree(differences, weight, shape=(n - 1, n))
        return ad.solve(ad.QP(P=jnp.eye(n), q=-target, G=G, h=0.3 * jnp.ones(n - 1))).x

    weights = jnp.array([0.5, 1.0, 2.0])
    batch = jax.jit(jax.vmap(solve))(weights)
    alone = jnp.stack([jax.jit(solve)(w) for w in weights])
    assert float(jnp.max(jnp.abs(batch - alone))) < 1e-12  # measured 7.1e-14


def test_float32_matrix_free_solve():
    _, dense, (x_ref, _, _) = case(*PAPER)
    problem = as_matrix_free(jax.tree_util.tree_map(lambda v: v.astype(jnp.float32), dense))
    solution = jax.jit(ad.solve)(problem)
    assert solution.x.dtype == jnp.float32
    assert ad.Status(int(solution.info.status)) == ad.Status.SOLVED
    assert relative_error(solution.x, x_ref) < 3e-5  # measured 3.4e-7


def test_bad_matrix_free_input_is_refused_or_reported():
    _, dense, _ = case(*PAPER)
    problem = as_matrix_free(dense)
    n, m = dense.G.shape[1], dense.G.shape[0]
    with pytest.raises(ValueError, match=r"QP.G: apply\(params, x\) returned shape"):
        ad.solve(problem._replace(G=ad.MatrixFree(matrix_times, dense.G[:-1], (m, n))))
    with pytest.raises(ValueError, match="QP.A has dtype float32 but QP.P has dtype float64"):
        ad.solve(problem._replace(A=ad.MatrixFree(in_float32, dense.A, dense.A.shape)))
    with pytest.raises(ValueError, match="QP.G has shape"):
        ad.solve(problem._replace(G=ad.MatrixFree(matrix_times, dense.G, (m, n + 1))))
    short = ad.MatrixFree(matrix_times, dense.A, dense.A.shape, transpose=lambda M, y: (M.T @ y)[:-1])
    with pytest.raises(ValueError, match="QP.A: its transpose returned shape"):
        ad.solve(problem._replace(A=short))
    with pytest.raises(ValueError, match="tangents.P: jvp takes no tangent of a MatrixFree"):
        ad.jvp(problem, ad.QP(P=dense.P, q=dense.q))
    poisoned = ad.MatrixFree(matrix_times, dense.P.at[0, 0].set(jnp.nan), dense.P.shape)
    assert ad.Status(int(solve_jit(problem._replace(P=poisoned)).info.status)) == ad.Status.NONFINITE


def test_vjp_returns_the_users_matrix_free_leaf_with_its_gradient():
    _, dense, _ = case(*PAPER)
    problem = as_matrix_free(dense)
    g, expected = reference_gradients(PAPER)
    _, grads, backward = ad.vjp(problem, jnp.asarray(g))
    assert ad.Status(int(backward.status)) == ad.Status.SOLVED
    assert isinstance(grads.G, ad.MatrixFree) and grads.G.apply is matrix_times
    assert relative_error(grads.G.params, expected["G"]) < 5e-7  # measured 5.7e-9 (Clarabel's x)
