"""The reduced KKT system of altdiff_jax._kkt (polishing and the ``kkt`` strategy) against
dense NumPy solves and the NumPy/cvxpy references."""

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from altdiff_jax._iterate import Iterate  # noqa: E402
from altdiff_jax._jacobian import ActiveSet  # noqa: E402
from altdiff_jax._kkt import UPDATE_RANK, KKTVector, ReducedKKT, UpdatedFactor, kkt_vjp  # noqa: E402
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


def _random_active_set(rng, P, A, G, nb, like=None, changes=0):
    """A random active set (or ``like`` with ``changes`` rows and bounds switched) whose K is
    nonsingular, as numpy ``(a, upper, lower)``."""
    m = G.shape[0]
    while True:
        if like is None:
            a = (rng.uniform(size=m) < 0.4).astype(float)
            upper = rng.uniform(size=nb) < 0.2
            lower = ~upper & (rng.uniform(size=nb) < 0.2)
        else:
            a, upper, lower = (v.copy() for v in like)
            for i in rng.choice(m + nb, size=changes, replace=False):
                if i < m:
                    a[i] = 1.0 - a[i]
                else:
                    upper[i - m] = ~(upper[i - m] | lower[i - m])
                    lower[i - m] = False
        if np.linalg.cond(_dense_K(P, A, G, a, (upper | lower).astype(float))) < 1e8:
            return a, upper, lower


def _near(P_op, A_op, G, lb, ub, factored, active, rhs):
    constraints = Constraints(A_op, jnp.zeros(A_op.shape[0]), Dense(G), jnp.zeros(G.shape[0]), lb, ub)
    first = ReducedKKT.build(P_op, constraints, factored)
    previous = UpdatedFactor.around(first.factor, factored)
    system = ReducedKKT.build_near(P_op, constraints, active, previous, jnp.bool_(False))
    return system.solve(rhs), system.factor.factored


_near_jit = jax.jit(_near)


@pytest.mark.parametrize("changes", [3, UPDATE_RANK + 1])
def test_reduced_kkt_near_a_factored_active_set_is_exact(changes):
    """Polish rounds after the first: the Cholesky factor of one active set and a Woodbury
    update by the rows and bounds switched (at most UPDATE_RANK, else a refactorisation)
    solve K of the new set as exactly as a factor of its own."""
    n, p, m, nb = 8, 2, 12, 8
    rng = np.random.default_rng(changes)
    data = reference.random_qp(changes, n, p, m)
    P, A, G = data["P"], data["A"], data["G"]
    factored = _random_active_set(rng, P, A, G, nb)
    a, upper, lower = _random_active_set(rng, P, A, G, nb, like=factored, changes=changes)
    expected = np.linalg.solve(_dense_K(P, A, G, a, (upper | lower).astype(float)),
                               r := rng.standard_normal(n + p + m + nb))
    to_set = lambda v: ActiveSet(*(jnp.asarray(x > 0) for x in v))  # noqa: E731
    lb = jnp.where(jnp.asarray(lower | upper), 0.0, -jnp.inf)
    ub = jnp.where(jnp.asarray(upper), 0.0, jnp.inf)
    rhs = KKTVector(*map(jnp.asarray, np.split(r, [n, n + p, n + p + m])))
    w, used = _near_jit(Dense(jnp.asarray(P)), Dense(jnp.asarray(A)), jnp.asarray(G), lb, ub, to_set(factored),
                        to_set((a, upper, lower)), rhs)
    got = np.concatenate([np.asarray(v) for v in w])
    # measured: 5.5e-15 (3 switched) and 7.9e-15 (9, refactored) of the largest entry; at
    # most 1.9e-14 over 12 draws of 1 to 9 switches (a factor of its own: up to 6.5e-15)
    np.testing.assert_allclose(got, expected, rtol=0, atol=5e-14 * np.abs(expected).max())
    # the factor kept is the old one for an update, the new set's after a refactorisation
    kept = factored if changes <= UPDATE_RANK else (a, upper, lower)
    np.testing.assert_array_equal(used.inequality, kept[0] > 0)
    np.testing.assert_array_equal(used.upper | used.lower, kept[1] | kept[2])


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
