"""The dense KKT derivatives of altdiff_jax._kkt against the NumPy/cvxpy references."""

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from altdiff_jax._kkt import kkt_jacobians, kkt_vjp  # noqa: E402
from altdiff_jax._problem import Constraints, data_gradients  # noqa: E402

try:  # tests/ on sys.path (no tests/__init__.py)
    import reference
except ImportError:  # tests/ is a package
    from tests import reference

LEAVES = ("P", "q", "A", "b", "G", "h")
SHAPES = [(8, 2, 6, False), (6, 0, 4, False), (6, 2, 0, False), (5, 0, 0, False), (8, 1, 16, True)]

jacobians_jit = jax.jit(kkt_jacobians)
vjp_jit = jax.jit(kkt_vjp)


def _solved(seed, n, p, m, singular=False):
    """A reference QP, its Clarabel solution and the JAX arguments of the _kkt functions."""
    data = reference.random_qp(seed, n, p, m, singular_p=singular)
    x, lam, nu = reference.clarabel_solve(**data)
    A = np.zeros((0, n)) if data["A"] is None else data["A"]
    b = np.zeros(0) if data["b"] is None else data["b"]
    G = np.zeros((0, n)) if data["G"] is None else data["G"]
    h = np.zeros(0) if data["h"] is None else data["h"]
    s = np.maximum(h - G @ x, 0.0)
    args = (data["P"], data["q"], Constraints(A, b, G, h), x, lam, nu, s)
    return data, (x, lam, nu), jax.tree_util.tree_map(jnp.asarray, args)


@pytest.mark.parametrize("n,p,m,singular", SHAPES)
def test_jacobians_match_reference(n, p, m, singular):
    data, (x, lam, nu), args = _solved(4, n, p, m, singular)
    expected = reference.kkt_jacobians(**data, x=x, lam=lam, nu=nu)
    jac = jacobians_jit(*args)
    for leaf, cols in (("q", n), ("b", p), ("h", m)):
        assert jac[leaf].shape == (n, cols)
        want = np.zeros((n, 0)) if expected[leaf] is None else expected[leaf]
        np.testing.assert_allclose(jac[leaf], want, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("n,p,m,singular", SHAPES)
def test_vjp_of_x_gives_reference_gradients(n, p, m, singular):
    data, (x, lam, nu), args = _solved(4, n, p, m, singular)
    g = np.random.default_rng(1).standard_normal(n)
    expected = reference.kkt_gradients(**data, x=x, lam=lam, nu=nu, g=g)
    grads = data_gradients(args[3], args[4], args[5], *vjp_jit(*args, (g, None, None, None)))
    for leaf in LEAVES:
        if expected[leaf] is not None:
            np.testing.assert_allclose(getattr(grads, leaf), expected[leaf], rtol=1e-9, atol=1e-11)


def test_vjp_of_every_output_matches_finite_differences():
    # Seed 4 with (5, 1, 4): strictly complementary, so the solution map is smooth.
    n, p, m = 5, 1, 4
    data, (x, lam, nu), args = _solved(4, n, p, m)
    slack = data["h"] - data["G"] @ x
    assert 0 < np.sum(slack < 1e-8) < m and np.min(np.maximum(slack, nu)) > 1e-2
    rng = np.random.default_rng(2)
    g_x, g_s, g_lam, g_nu = (rng.standard_normal(size) for size in (n, m, p, m))
    grads = data_gradients(args[3], args[4], args[5], *vjp_jit(*args, (g_x, g_s, g_lam, g_nu)))

    for leaf in LEAVES:
        def loss(value, leaf=leaf):
            d = {**data, leaf: value}
            x, lam, nu = reference.clarabel_solve(**d)
            return g_x @ x + g_s @ (d["h"] - d["G"] @ x) + g_lam @ lam + g_nu @ nu

        fd = reference.finite_difference_grad(loss, data[leaf], eps=1e-5)
        want = 0.5 * (fd + fd.T) if leaf == "P" else fd  # the solver sees (P + Pᵀ)/2
        err = np.linalg.norm(getattr(grads, leaf) - want) / np.linalg.norm(want)
        assert err < 1e-4, (leaf, err)


def test_vmap_over_two_problems():
    n, p, m = 8, 2, 6
    problems = [_solved(seed, n, p, m) for seed in (4, 5)]
    batched = jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *(a for _, _, a in problems))
    g = jnp.asarray(np.random.default_rng(3).standard_normal((2, n)))
    jac = jax.jit(jax.vmap(kkt_jacobians))(*batched)
    bars = jax.jit(jax.vmap(kkt_vjp))(*batched, (g, None, None, None))
    for i, (data, (x, lam, nu), _) in enumerate(problems):
        expected = reference.kkt_jacobians(**data, x=x, lam=lam, nu=nu)
        grads = reference.kkt_gradients(**data, x=x, lam=lam, nu=nu, g=np.asarray(g[i]))
        for leaf in ("q", "b", "h"):
            np.testing.assert_allclose(jac[leaf][i], expected[leaf], rtol=1e-9, atol=1e-11)
        for bar, leaf in zip(bars, ("q", "b", "h")):
            np.testing.assert_allclose(bar[i], grads[leaf], rtol=1e-9, atol=1e-11)


def test_weakly_active_constraint_is_treated_as_active():
    # min ½‖x‖² s.t. x <= h at h = 0: x* = 0 with s = ν = 0. The tie-break makes the
    # constraint active, so x* follows h (dx/dh = I) and ignores q (dx/dq = 0).
    n = 3
    zero = jnp.zeros(n)
    constraints = Constraints(jnp.zeros((0, n)), jnp.zeros(0), jnp.eye(n), zero)
    jac = jacobians_jit(jnp.eye(n), zero, constraints, zero, jnp.zeros(0), zero, zero)
    np.testing.assert_array_equal(jac["h"], np.eye(n))
    np.testing.assert_array_equal(jac["q"], np.zeros((n, n)))
