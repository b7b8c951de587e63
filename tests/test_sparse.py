"""The sparse path: BCOO matrices, conjugate-gradient solves, nothing of size n × p formed.

References: Clarabel for solutions and the dense KKT adjoint for gradients (``reference``),
the dense path on the same matrices, and central finite differences in float64."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import sparse

import altdiff_jax as ad
from altdiff_jax.problems import dense_qp, mpc_qp
from conftest import PAPER, case, cosine, reference_gradients, relative_error, solve_jit
from reference import finite_difference_grad


def as_sparse(problem: ad.QP) -> ad.QP:
    return problem._replace(**{name: sparse.BCOO.fromdense(getattr(problem, name)) for name in ("P", "A", "G")})


def on_pattern(values, like: sparse.BCOO) -> np.ndarray:
    """The dense matrix of a BCOO's values on ``like``'s pattern."""
    return np.asarray(sparse.BCOO((values, like.indices), shape=like.shape).todense())


def x_dot(problem, g):
    return ad.solve(problem).x @ g


MPC_HORIZON = 20
grad_jit = jax.jit(jax.grad(x_dot, allow_int=True))


def test_a_sparse_problem_solves_and_differentiates_as_the_dense_kkt_reference():
    data, dense, (x_ref, _, _) = case(*PAPER)
    problem = as_sparse(dense)
    solution = solve_jit(problem)
    assert ad.Status(int(solution.info.status)) == ad.Status.SOLVED
    assert bool(solution.info.polished)
    assert relative_error(solution.x, x_ref) < 1e-7  # measured 5e-9 (Clarabel's accuracy)
    assert relative_error(solution.x, solve_jit(dense).x) < 1e-13  # measured 1.1e-15
    g, expected = reference_gradients(PAPER)
    grads = grad_jit(problem, jnp.asarray(g))
    for name in ("q", "b", "h"):
        assert cosine(getattr(grads, name), expected[name]) > 0.99999
        assert relative_error(getattr(grads, name), expected[name]) < 5e-11  # measured 6.8e-13
    for name in ("P", "A", "G"):
        matrix = on_pattern(getattr(grads, name).data, getattr(problem, name))
        assert relative_error(matrix, expected[name]) < 5e-7  # measured 5.7e-9 (Clarabel's x in the reference)
    dense_grads = jax.jit(jax.grad(x_dot))(dense, jnp.asarray(g))
    assert relative_error(grads.q, dense_grads.q) < 5e-11  # measured 3.9e-13 (refinement's stop)


@pytest.mark.parametrize(("strategy", "tolerance"), [("adjoint", 5e-6), ("altdiff", 1e-7)])
def test_the_iterative_strategies_run_on_the_sparse_path(strategy, tolerance):
    problem = mpc_qp(MPC_HORIZON, jnp.array([4.0, -0.5]), jnp.array([0.1, 1.0, 0.5]))
    g = jnp.asarray(np.random.default_rng(0).standard_normal(3 * MPC_HORIZON))
    options = ad.Options(differentiation=strategy, tol=1e-9)
    grads = jax.jit(jax.grad(lambda p: ad.solve(p, options).x @ g, allow_int=True))(problem)
    expected = jax.jit(jax.grad(x_dot))(dense_qp(problem), g)
    for name in ("q", "b", "lb", "ub"):
        # measured at most 4.1e-7 (adjoint, truncated by tol), 1.4e-9 (altdiff)
        assert relative_error(getattr(grads, name), getattr(expected, name)) < tolerance


def test_jacobians_of_one_parameter_on_the_sparse_path():
    _, dense, _ = case(*PAPER)
    _, expected = jax.jit(lambda p: ad.jacobians(p, wrt=("b",)))(dense)
    _, jac = jax.jit(lambda p: ad.jacobians(p, wrt=("b",)))(as_sparse(dense))
    assert relative_error(jac["b"], expected["b"]) < 5e-11  # measured 8.3e-13


def test_jvp_on_the_sparse_path_equals_the_dense_path_and_finite_differences():
    _, dense, _ = case(*PAPER)
    rng = np.random.default_rng(5)

    def on_pattern_of(M):
        return jnp.where(M != 0, jnp.asarray(rng.standard_normal(M.shape)), 0.0)

    dP, dA, dG = on_pattern_of(dense.P), on_pattern_of(dense.A), on_pattern_of(dense.G)
    dq, dh = (jnp.asarray(rng.standard_normal(v.shape)) for v in (dense.q, dense.h))
    tangents = ad.QP(P=dP, q=dq, A=dA, G=dG, h=dh)
    as_bcoo = tangents._replace(**{name: sparse.BCOO.fromdense(getattr(tangents, name)) for name in ("P", "A", "G")})
    _, dx_dense = jax.jit(ad.jvp)(dense, tangents)
    _, dx = jax.jit(ad.jvp)(as_sparse(dense), as_bcoo)
    assert relative_error(dx, dx_dense) < 5e-10  # measured 8.7e-12

    def moved(step):
        return ad.QP(*(v if t is None else v + step * t for v, t in zip(dense, tangents)))

    fd = (solve_jit(moved(1e-6)).x - solve_jit(moved(-1e-6)).x) / 2e-6
    assert relative_error(dx, fd) < 2e-8  # measured 2.3e-10


def mpc_loss(x0, weights, densify=False):
    problem = mpc_qp(MPC_HORIZON, x0, weights)
    solution = ad.solve(dense_qp(problem) if densify else problem)
    return jnp.sum(solution.x**2)


def test_the_mpc_layer_gradients_match_finite_differences_and_the_dense_path():
    x0, weights = np.array([4.0, -0.5]), np.array([0.1, 1.0, 0.5])
    value_and_grad = jax.jit(jax.value_and_grad(mpc_loss, argnums=(0, 1)))
    value, (g_x0, g_w) = value_and_grad(jnp.asarray(x0), jnp.asarray(weights))
    dense_value, (d_x0, d_w) = jax.jit(jax.value_and_grad(lambda a, b: mpc_loss(a, b, True), argnums=(0, 1)))(
        jnp.asarray(x0), jnp.asarray(weights))
    assert abs(float(value) - float(dense_value)) <= 1e-13 * abs(float(dense_value))  # measured 1.5e-15
    assert relative_error(g_x0, d_x0) < 1e-12 and relative_error(g_w, d_w) < 1e-12  # measured 5.1e-15, 2.8e-14
    loss = jax.jit(mpc_loss)
    fd_x0 = finite_difference_grad(lambda v: float(loss(jnp.asarray(v), jnp.asarray(weights))), x0, 1e-5)
    fd_w = finite_difference_grad(lambda v: float(loss(jnp.asarray(x0), jnp.asarray(v))), weights, 1e-6)
    assert relative_error(g_x0, fd_x0) < 1e-9  # measured 1.1e-10
    assert relative_error(g_w, fd_w) < 1e-7  # measured 2.0e-9


def _avals(jaxpr):
    for eqn in jaxpr.eqns:
        for var in [*eqn.invars, *eqn.outvars]:
            if hasattr(var, "aval") and hasattr(var.aval, "shape"):
                yield var.aval
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            yield from _avals(sub)


def test_no_array_of_size_n_by_p_is_formed_by_a_solve_and_its_gradient():
    horizon = 200
    n, p = 3 * horizon, 2 * horizon

    def loss(x0, weights):
        return jnp.sum(ad.solve(mpc_qp(horizon, x0, weights)).x ** 2)

    closed = jax.make_jaxpr(jax.grad(loss, argnums=(0, 1)))(jnp.array([5.0, 0.0]), jnp.array([0.1, 1.0, 0.5]))
    largest = max(int(np.prod(aval.shape)) for aval in _avals(closed.jaxpr))
    assert largest < n * p // 8  # measured 32 n = n p / 12.5 (a stack of vectors); n × p is 8× this bound
    assert largest >= n  # the walk does see the solver's vectors


def test_a_batch_sharing_a_sparse_matrix_equals_its_problems_solved_alone():
    _, dense, _ = case(*PAPER)
    problem = as_sparse(dense)
    qs = jnp.stack([dense.q * (1.0 + 0.2 * i) for i in range(3)])
    batch = jax.jit(jax.vmap(lambda q: ad.solve(problem._replace(q=q)).x))(qs)
    alone = jnp.stack([solve_jit(problem._replace(q=q)).x for q in qs])
    assert float(jnp.max(jnp.abs(batch - alone))) < 1e-13  # measured 2.7e-15


def test_float32_sparse_solve():
    data, dense, (x_ref, _, _) = case(*PAPER)
    problem = jax.tree_util.tree_map(lambda v: v.astype(jnp.float32) if v.dtype == jnp.float64 else v,
                                     as_sparse(dense))
    solution = jax.jit(ad.solve)(problem)
    assert solution.x.dtype == jnp.float32
    assert ad.Status(int(solution.info.status)) == ad.Status.SOLVED
    assert relative_error(solution.x, x_ref) < 5e-5  # measured 6.9e-7


def test_bad_sparse_input_is_refused_or_reported():
    _, dense, _ = case(*PAPER)
    problem = as_sparse(dense)
    batched = sparse.BCOO.fromdense(jnp.stack([dense.P, dense.P]), n_batch=1)
    with pytest.raises(ValueError, match="QP.P must be a 2-D BCOO"):
        ad.solve(problem._replace(P=batched))
    integer = sparse.BCOO((problem.G.data.astype(jnp.int32), problem.G.indices), shape=problem.G.shape)
    with pytest.raises(ValueError, match="QP.G must have a floating dtype"):
        ad.solve(problem._replace(G=integer))
    narrow = sparse.BCOO((problem.A.data, problem.A.indices), shape=(problem.A.shape[0], problem.A.shape[1] + 1))
    with pytest.raises(ValueError, match="QP.A has shape"):
        ad.solve(problem._replace(A=narrow))
    with pytest.raises(ValueError, match="tangents.G must be a BCOO matrix"):
        ad.jvp(problem, ad.QP(P=None, q=dense.q, G=dense.G))
    with pytest.raises(ValueError, match="solve_convex.G is a sparse BCOO"):
        ad.solve_convex(lambda x, theta: jnp.sum(x**2), jnp.zeros(()), G=problem.G, h=dense.h,
                        x0=jnp.zeros(dense.q.shape[0]))
    poisoned = sparse.BCOO((problem.P.data.at[0].set(jnp.nan), problem.P.indices), shape=problem.P.shape)
    status = solve_jit(problem._replace(P=poisoned)).info.status
    assert ad.Status(int(status)) == ad.Status.NONFINITE


def test_vjp_returns_sparse_gradients_and_padding_gets_none():
    _, dense, _ = case(*PAPER)
    problem = as_sparse(dense)
    padded = sparse.BCOO.fromdense(dense.P, nse=int(problem.P.nse) + 5)  # 5 padding entries
    g, expected = reference_gradients(PAPER)
    _, grads, backward = ad.vjp(problem._replace(P=padded), jnp.asarray(g))
    assert ad.Status(int(backward.status)) == ad.Status.SOLVED
    assert isinstance(grads.P, sparse.BCOO) and isinstance(grads.G, sparse.BCOO)
    assert relative_error(grads.P.todense(), expected["P"]) < 5e-7  # measured 5.2e-9 (Clarabel's x)
    assert relative_error(grads.G.todense(), expected["G"]) < 5e-7  # measured 5.7e-9
    assert float(jnp.max(jnp.abs(grads.P.data[-5:]))) == 0.0


def test_the_sparse_path_equilibrates_as_the_dense_path():
    from altdiff_jax._problem import validate_qp
    from altdiff_jax._scaling import ruiz_equilibrate, ruiz_equilibrate_operators
    from altdiff_jax._linalg import Dense
    _, dense, _ = case(*PAPER)
    P, q, constraints = validate_qp(as_sparse(dense))
    _, _, _, sparse_scaling = ruiz_equilibrate_operators(P.symmetric_part(), q, constraints, 10)
    P_dense, _, dense_constraints = validate_qp(dense)
    _, _, _, dense_scaling = ruiz_equilibrate(Dense(0.5 * (dense.P + dense.P.T)), q, dense_constraints, 10)
    for ours, theirs in zip(sparse_scaling, dense_scaling):
        assert relative_error(ours, theirs) < 1e-13  # measured 0 to 2e-16
