"""Self-consistency checks of the NumPy/cvxpy references in tests/reference.py."""

import numpy as np
import pytest

try:  # tests/ on sys.path (no tests/__init__.py)
    from reference import (clarabel_solve, finite_difference_grad, kkt_gradients,
                           kkt_jacobians, random_qp)
except ImportError:  # tests/ is a package
    from tests.reference import (clarabel_solve, finite_difference_grad, kkt_gradients,
                                 kkt_jacobians, random_qp)

LEAVES = ("P", "q", "A", "b", "G", "h")


def _kkt_residuals(d, x, lam, nu):
    """Max-abs stationarity, primal and complementarity residuals."""
    r = d["P"] @ x + d["q"]
    res = {}
    if d["A"] is not None:
        r = r + d["A"].T @ lam
        res["eq"] = np.abs(d["A"] @ x - d["b"]).max()
    if d["G"] is not None:
        r = r + d["G"].T @ nu
        slack = d["h"] - d["G"] @ x
        res["ineq"] = max(0.0, -slack.min())
        res["dual"] = max(0.0, -nu.min())
        res["compl"] = np.abs(nu * slack).max()
    res["stat"] = np.abs(r).max()
    return res


@pytest.mark.parametrize("n,p,m,singular", [(8, 2, 6, False), (6, 0, 4, False),
                                            (6, 2, 0, False), (5, 0, 0, False),
                                            (8, 1, 16, True)])
def test_clarabel_satisfies_kkt(n, p, m, singular):
    d = random_qp(1, n, p, m, singular_p=singular)
    x, lam, nu = clarabel_solve(**d)
    assert x.shape == (n,) and lam.shape == (p,) and nu.shape == (m,)
    for name, val in _kkt_residuals(d, x, lam, nu).items():
        assert val < 1e-7, (name, val)


def test_random_qp_shapes_and_singular_p():
    d = random_qp(0, 6, 0, 0)
    assert d["A"] is None and d["b"] is None and d["G"] is None and d["h"] is None
    d = random_qp(0, 8, 2, 10, singular_p=True)
    assert np.linalg.matrix_rank(d["P"]) == 4
    assert d["A"].shape == (2, 8) and d["G"].shape == (10, 8) and d["h"].shape == (10,)
    assert np.array_equal(random_qp(3, 5, 1, 2)["G"], random_qp(3, 5, 1, 2)["G"])


def test_gradients_match_finite_differences():
    # Seed 4: three active constraints, strict complementarity margin ~0.2.
    d = random_qp(4, 8, 2, 6)
    x, lam, nu = clarabel_solve(**d)
    slack = d["h"] - d["G"] @ x
    assert np.min(np.maximum(slack, nu)) > 1e-2  # no weakly active constraint
    assert 0 < np.sum(slack < 1e-8) < 6
    g = np.random.default_rng(0).standard_normal(8)
    grads = kkt_gradients(**d, x=x, lam=lam, nu=nu, g=g)

    for leaf in LEAVES:
        def loss(arr, leaf=leaf):
            return g @ clarabel_solve(**{**d, leaf: arr})[0]

        fd = finite_difference_grad(loss, d[leaf], eps=1e-5)
        err = np.linalg.norm(fd - grads[leaf]) / np.linalg.norm(grads[leaf])
        assert err < 1e-4, (leaf, err)


@pytest.mark.parametrize("n,p,m,singular", [(8, 2, 6, False), (6, 0, 4, False),
                                            (6, 2, 0, False), (8, 1, 16, True)])
def test_jacobians_consistent_with_gradients(n, p, m, singular):
    d = random_qp(4, n, p, m, singular_p=singular)
    x, lam, nu = clarabel_solve(**d)
    g = np.random.default_rng(1).standard_normal(n)
    grads = kkt_gradients(**d, x=x, lam=lam, nu=nu, g=g)
    jacs = kkt_jacobians(**d, x=x, lam=lam, nu=nu)
    np.testing.assert_allclose(jacs["q"].T @ g, grads["q"], rtol=1e-12, atol=1e-14)  # measured 1.7e-15
    for leaf, dim in (("b", p), ("h", m)):
        if dim == 0:
            assert jacs[leaf] is None and grads[leaf] is None
        else:
            assert jacs[leaf].shape == (n, dim)
            np.testing.assert_allclose(jacs[leaf].T @ g, grads[leaf], rtol=1e-12, atol=1e-14)  # measured 1.4e-15
    if m > 0:  # inactive constraints have zero columns
        inactive = d["h"] - d["G"] @ x > 1e-6
        assert np.all(jacs["h"][:, inactive] == 0)
    for leaf, dim in (("A", p), ("G", m)):
        assert (grads[leaf] is None) == (dim == 0)


def test_jacobian_q_matches_finite_differences_without_constraints():
    # Unconstrained: x* = -P^{-1} q, so dx/dq = -P^{-1}.
    d = random_qp(2, 5, 0, 0)
    x, lam, nu = clarabel_solve(**d)
    np.testing.assert_allclose(x, -np.linalg.solve(d["P"], d["q"]), rtol=1e-12, atol=1e-12)  # measured 8.8e-15 relative
    jac = kkt_jacobians(**d, x=x, lam=lam, nu=nu)["q"]
    np.testing.assert_allclose(jac, -np.linalg.inv(d["P"]), rtol=1e-12, atol=1e-14)  # measured 0
