"""The three differentiation strategies agree with each other and with the KKT reference;
forward-mode tangents agree with the Jacobians and with finite differences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import CASES, SMALL, TIGHT, case, cosine, relative_error, to_qp
from reference import clarabel_solve, kkt_gradients, kkt_jacobians, random_qp

import altdiff_jax as ad

STRATEGIES = ("altdiff", "adjoint", "kkt")
vjp_jit = jax.jit(ad.vjp)
jvp_jit = jax.jit(ad.jvp)


def _many_active():
    """A vertex solution: 3 equalities and 9 of 24 inequalities active on n = 12."""
    data = random_qp(5, 12, 3, 24)
    data["q"] = -data["P"] @ (3 * np.random.default_rng(5).standard_normal(12))
    return data


def _weakly_active():
    """SMALL with its loosest inequality moved onto the solution: s = 0 and ν = 0 there."""
    data = random_qp(*SMALL[:4])
    x, _, _ = clarabel_solve(**data)
    slack = data["h"] - data["G"] @ x
    j = int(np.argmax(slack))
    data["h"][j] = data["G"][j] @ x
    return data


SHAPES = {
    "small": lambda: random_qp(*SMALL[:4]),
    "no_equalities": lambda: random_qp(*CASES["no_equalities"][:4]),
    "many_active": _many_active,
    "weakly_active": _weakly_active,
}


@pytest.mark.parametrize("shape", list(SHAPES))
def test_strategies_agree_with_each_other_and_with_kkt(shape):
    data = SHAPES[shape]()
    problem = to_qp(data)
    x, lam, nu = clarabel_solve(**data)
    g = np.random.default_rng(11).standard_normal(x.size)
    expected = kkt_gradients(**data, x=x, lam=lam, nu=nu, g=g)
    results = {}
    for strategy in STRATEGIES:
        options = ad.Options(tol=1e-11, max_iter=100_000, differentiation=strategy)
        solution, grads, info = vjp_jit(problem, jnp.asarray(g), options)
        assert int(solution.info.status) == ad.Status.SOLVED
        assert int(info.status) == ad.Status.SOLVED, strategy
        results[strategy] = grads
        for leaf in "PqAbGh":
            if expected[leaf] is None:
                assert getattr(grads, leaf) is None
                continue
            actual = getattr(grads, leaf)
            # Measured: ≤ 1.3e-9 (1 − cosine ≤ 6e-16), except at the weakly active row, whose
            # derivative is not unique: 4.1e-6 there (1 − cosine 8.5e-12) against the reference's pick.
            bound, cosine_gap = (1e-4, 1e-9) if shape == "weakly_active" else (1e-7, 1e-13)
            if np.linalg.norm(expected[leaf]) > 1e-9:
                assert cosine(actual, expected[leaf]) >= 1 - cosine_gap, (strategy, leaf)
            assert np.linalg.norm(actual - expected[leaf]) <= bound * max(
                np.linalg.norm(expected[leaf]), 1.0), (strategy, leaf)
    for leaf in "PqAbGh":
        if expected[leaf] is not None:
            for strategy in ("adjoint", "kkt"):
                ours, theirs = getattr(results[strategy], leaf), getattr(results["altdiff"], leaf)
                # measured ≤ 2.4e-10
                assert np.linalg.norm(ours - theirs) <= 1e-8 * max(np.linalg.norm(theirs), 1.0)


def test_strategies_under_jit_vmap_grad_give_per_problem_iterations():
    problems = [case(seed, *SMALL[1:])[1] for seed in (50, 51, 52)]
    batch = jax.tree_util.tree_map(lambda *v: jnp.stack(v), *problems)
    g = jnp.linspace(-1.0, 1.0, SMALL[1])
    grads = {}
    for strategy in STRATEGIES:
        options = ad.Options(tol=1e-10, differentiation=strategy, polish=False)

        def loss(problem):
            solution = ad.solve(problem, options)
            return solution.x @ g, solution.info

        grads[strategy], info = jax.jit(jax.vmap(jax.grad(loss, has_aux=True)))(batch)
        assert info.iterations.shape == (3,) and len(set(np.asarray(info.iterations).tolist())) > 1
        _, _, backward = jax.jit(jax.vmap(ad.vjp, in_axes=(0, None, None)))(batch, g, options)
        assert backward.iterations.shape == (3,)
        assert (np.asarray(backward.status) == ad.Status.SOLVED).all()
    for strategy in ("adjoint", "kkt"):
        for leaf in "PqAbGh":
            # measured ≤ 1.3e-9
            assert relative_error(getattr(grads[strategy], leaf), getattr(grads["altdiff"], leaf)) <= 1e-7


def test_adjoint_backward_costs_about_one_forward_solve():
    _, problem, _ = case(*SMALL)
    options = ad.Options(tol=1e-10, differentiation="adjoint", polish=False)
    solution, _, backward = vjp_jit(problem, jnp.ones(SMALL[1]), options)
    assert 0 < int(backward.iterations) <= 2 * int(solution.info.iterations)


@pytest.mark.parametrize("leaf", "PqAbGh")
def test_jvp_matches_jacobians_and_finite_differences(leaf):
    data, problem, (x, lam, nu) = case(*SMALL)
    rng = np.random.default_rng(13)
    direction = rng.standard_normal(np.shape(data[leaf]))
    if leaf == "P":  # a symmetric tangent: the problem (and the reference) sees only P's symmetric part
        direction = (direction + direction.T) / 2
    direction = jnp.asarray(direction)
    tangents = ad.QP(*(direction if name == leaf else None for name in ad.QP._fields))
    solution, dx = jvp_jit(problem, tangents, TIGHT)
    assert int(solution.info.status) == ad.Status.SOLVED
    # Against the full Jacobians, for q, b, h; and for every leaf through §5's reference.
    if leaf in "qbh":
        _, jac = jax.jit(ad.jacobians)(problem, TIGHT)
        assert relative_error(dx, jac[leaf] @ direction) <= 1e-12  # measured ~1e-15 (both exact, polished)
    reference = kkt_jacobians(**data, x=x, lam=lam, nu=nu)
    if leaf in "qbh":
        assert relative_error(dx, reference[leaf] @ np.asarray(direction)) <= 1e-12  # measured ~1e-15
    else:
        # Row i of the Jacobian of x* against P, A or G is the KKT reference gradient of
        # the loss e_iᵀx*: dx_i = <∂x_i/∂leaf, direction>, independently of the library.
        rows = [kkt_gradients(**data, x=x, lam=lam, nu=nu, g=unit)[leaf] for unit in np.eye(x.size)]
        expected = np.array([np.sum(row * np.asarray(direction)) for row in rows])
        assert relative_error(dx, expected) <= 5e-8, relative_error(dx, expected)  # measured 8.5e-10
    eps = 1e-6

    def shifted(sign):
        moved = problem._replace(**{leaf: getattr(problem, leaf) + sign * eps * direction})
        return jax.jit(ad.solve)(moved, TIGHT).x

    fd = (shifted(1.0) - shifted(-1.0)) / (2 * eps)
    assert relative_error(dx, fd) <= 5e-8  # measured 8.7e-10


def test_jvp_rejects_mismatched_tangents():
    _, problem, _ = case(*SMALL)
    with pytest.raises(ValueError, match=r"tangents.q has shape \(3,\), expected \(12,\)"):
        ad.jvp(problem, ad.QP(P=None, q=jnp.zeros(3)))
