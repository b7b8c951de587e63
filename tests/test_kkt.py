"""The reduced KKT system of altdiff_jax._kkt (polishing and the ``kkt`` strategy) against
dense NumPy solves and the NumPy/cvxpy references."""

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from altdiff_jax._iterate import Iterate  # noqa: E402
from altdiff_jax._jacobian import ActiveSet  # noqa: E402
from altdiff_jax._kkt import KKTVector, ReducedKKT, kkt_vjp  # noqa: E402
from altdiff_jax._linalg import Dense, Diagonal, RowVector  # noqa: E402
from altdiff_jax._objective import QuadraticObjective  # noqa: E402
from altdiff_jax._problem import Constraints, data_gradients  # noqa: E402

import reference  # noqa: E402

SHAPES = [(8, 2, 6, False), (6, 0, 4, False), (6, 2, 0, False), (5, 0, 0, False), (8, 1, 16, True)]


def _dense_K(P, A, G, a, a_B):
    """The K of the module docstring, assembled densely (inactive rows −1 on the diagonal)."""
    n, p, m, nb = P.shape[0], A.shape[0], G.shape[0], a_B.size
    B = np.eye(n)[:nb] * a_B[:, None] if nb else np.zeros((0, n))
    C = np.vstack([A, a[:, None] * G, B])
    E = np.diag(np.concatenate([np.zeros(p), 1.0 - a, 1.0 - a_B]))
    return np.block([[P, C.T], [C, -E]])


def _solve_with(P_op, A_op, G, lb, ub, active, rhs):
    constraints = Constraints(A_op, jnp.zeros(A_op.shape[0]), Dense(G), jnp.zeros(G.shape[0]), lb, ub)
    return ReducedKKT.build(P_op, constraints, active).solve(rhs)


_solve_jit = jax.jit(_solve_with)


@pytest.mark.parametrize("n,p,m,singular", SHAPES)
@pytest.mark.parametrize("bounded", [False, True])
def test_reduced_kkt_solve_is_exact(n, p, m, singular, bounded):
    """K⁻¹r by the regularised normal form plus refinement equals a dense LU solve of K."""
    rng = np.random.default_rng(n + p + m)
    data = reference.random_qp(4, n, p, m, singular_p=singular)
    P = data["P"]
    A = np.zeros((0, n)) if data["A"] is None else data["A"]
    G = np.zeros((0, n)) if data["G"] is None else data["G"]
    nb = n if bounded else 0
    while True:  # a random active set whose K is nonsingular (a singular K has no K⁻¹r)
        a = (rng.uniform(size=m) < 0.4).astype(float)
        upper = rng.uniform(size=nb) < 0.2
        lower = ~upper & (rng.uniform(size=nb) < 0.2)
        a_B = (upper | lower).astype(float)
        K = _dense_K(P, A, G, a, a_B)
        if np.linalg.cond(K) < 1e8:
            break
    r = rng.standard_normal(K.shape[0])
    expected = np.linalg.solve(K, r)
    active = ActiveSet(jnp.asarray(a > 0), jnp.asarray(upper), jnp.asarray(lower))
    lb = jnp.where(jnp.asarray(lower), 0.0, -jnp.inf) if bounded else jnp.zeros(0)
    ub = jnp.where(jnp.asarray(upper), 1.0, jnp.inf) if bounded else jnp.zeros(0)
    rhs = KKTVector(*map(jnp.asarray, np.split(r, [n, n + p, n + p + m])))
    w = _solve_jit(Dense(jnp.asarray(P)), Dense(jnp.asarray(A)), jnp.asarray(G), lb, ub, active, rhs)
    got = np.concatenate([np.asarray(v) for v in w])
    # measured: ≤ 6.5e-15 of the largest entry over these shapes (1.3e-12 absolute)
    np.testing.assert_allclose(got, expected, rtol=0, atol=5e-13 * np.abs(expected).max())


def test_structured_kkt_equals_dense():
    """The layers' structure (diagonal P, one ones-row, bounds): O(n) Sherman–Morrison path."""
    n = 9
    rng = np.random.default_rng(0)
    upper = jnp.asarray(rng.uniform(size=n) < 0.3)
    lower = ~upper & jnp.asarray(rng.uniform(size=n) < 0.3)
    active = ActiveSet(jnp.zeros(0, bool), upper, lower)
    lb = jnp.where(lower, 0.0, -jnp.inf)
    ub = jnp.where(upper, 1.0, jnp.inf)
    rhs = KKTVector(*(jnp.asarray(rng.standard_normal(k)) for k in (n, 1, 0, n)))
    d = jnp.asarray(rng.uniform(1.0, 3.0, n))
    structured = _solve_jit(Diagonal(d), RowVector(jnp.ones(n)), jnp.zeros((0, n)), lb, ub, active, rhs)
    dense = _solve_jit(Dense(jnp.diag(d)), Dense(jnp.ones((1, n))), jnp.zeros((0, n)), lb, ub, active, rhs)
    for a, b in zip(structured, dense):
        np.testing.assert_allclose(a, b, rtol=1e-14, atol=1e-15)  # measured 2.2e-16


def _solved(seed, n, p, m, singular=False):
    """A reference QP, its Clarabel solution, and the solver objects for kkt_vjp."""
    data = reference.random_qp(seed, n, p, m, singular_p=singular)
    x, lam, nu = reference.clarabel_solve(**data)
    A = np.zeros((0, n)) if data["A"] is None else data["A"]
    b = np.zeros(0) if data["b"] is None else data["b"]
    G = np.zeros((0, n)) if data["G"] is None else data["G"]
    h = np.zeros(0) if data["h"] is None else data["h"]
    active = reference.active_set(G, h, x, nu)
    # The iterate of an exact solution: s = 0 and ν > 0 on the active set.
    s = np.where(active, 0.0, np.maximum(h - G @ x, 0.0))
    nu = np.where(active, nu, 0.0)
    constraints = Constraints(Dense(jnp.asarray(A)), jnp.asarray(b), Dense(jnp.asarray(G)), jnp.asarray(h),
                              jnp.zeros(0), jnp.zeros(0))
    z = Iterate(*(jnp.asarray(v) for v in (x, s, lam, nu, np.zeros(0), np.zeros(0))))
    objective = QuadraticObjective(Dense(jnp.asarray(P_sym(data["P"]))), jnp.asarray(data["q"]), 1.0, 0.0, None)
    return data, (x, lam, nu), objective, constraints, z


def P_sym(P):
    return 0.5 * (P + P.T)


@jax.jit
def _kkt_vjp(objective, constraints, z, cotangent):
    return kkt_vjp(objective, constraints, z, 1.0, 1e-9, cotangent)


@pytest.mark.parametrize("n,p,m,singular", SHAPES)
def test_vjp_of_x_gives_reference_gradients(n, p, m, singular):
    data, (x, lam, nu), objective, constraints, z = _solved(4, n, p, m, singular)
    g = np.random.default_rng(1).standard_normal(n)
    expected = reference.kkt_gradients(**data, x=x, lam=lam, nu=nu, g=g)
    cotangent = Iterate(jnp.asarray(g), *(jnp.zeros_like(v) for v in z[1:]))
    bars = _kkt_vjp(objective, constraints, z, cotangent)
    grads = data_gradients(z.x, z.lam, z.nu, bars.grad, bars.b, bars.h)
    for leaf in "PqAbGh":
        if expected[leaf] is not None:
            # measured ≤ 1e-14 relative: the same active set and an exact solve on both sides
            error = np.linalg.norm(getattr(grads, leaf) - expected[leaf]) / np.linalg.norm(expected[leaf])
            assert error <= 1e-11, (leaf, error)


def test_vjp_of_every_output_matches_finite_differences():
    # Seed 4 with (5, 1, 4): strictly complementary, so the solution map is smooth.
    n, p, m = 5, 1, 4
    data, (x, lam, nu), objective, constraints, z = _solved(4, n, p, m)
    slack = data["h"] - data["G"] @ x
    assert 0 < np.sum(slack < 1e-8) < m and np.min(np.maximum(slack, nu)) > 1e-2
    rng = np.random.default_rng(2)
    g_x, g_s, g_lam, g_nu = (rng.standard_normal(size) for size in (n, m, p, m))
    cotangent = Iterate(*(jnp.asarray(v) for v in (g_x, g_s, g_lam, g_nu, np.zeros(0), np.zeros(0))))
    bars = _kkt_vjp(objective, constraints, z, cotangent)
    grads = data_gradients(z.x, z.lam, z.nu, bars.grad, bars.b, bars.h)
    for leaf in "PqAbGh":
        def loss(value, leaf=leaf):
            d = {**data, leaf: value}
            x, lam, nu = reference.clarabel_solve(**d)
            return g_x @ x + g_s @ (d["h"] - d["G"] @ x) + g_lam @ lam + g_nu @ nu

        fd = reference.finite_difference_grad(loss, data[leaf], eps=1e-5)
        want = 0.5 * (fd + fd.T) if leaf == "P" else fd  # the solver sees (P + Pᵀ)/2
        err = np.linalg.norm(getattr(grads, leaf) - want) / np.linalg.norm(want)
        assert err < 1e-6, (leaf, err)  # measured ≤ 3e-8 (finite differences of Clarabel)
