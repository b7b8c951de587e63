"""The engine: any scaling, infeasibility statuses, warm starts, mixed batches."""

import re

import jax
import jax.numpy as jnp
import numpy as np
from conftest import LANE_LIKE, PAPER, SMALL, TIGHT, case, cosine, relative_error, solve_jit, to_qp
from reference import (
    clarabel_solve,
    degenerate_vertex_qp,
    dual_infeasible_qp,
    kkt_gradients,
    primal_infeasible_qp,
    random_qp,
)

import altdiff_jax as ad
from altdiff_jax import _driver, _solve

BATCHED = ad.QP(P=0, q=0, A=0, b=0, G=0, h=0)
solve_batch = jax.jit(jax.vmap(ad.solve, in_axes=(BATCHED, None)))
GRAD_DIRECTION = jnp.asarray(np.random.default_rng(3).standard_normal(SMALL[1]))


def _stack(problems):
    return jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *problems)


def _scaling_family():
    data = random_qp(*SMALL[:4])
    family = []
    for k in range(-3, 4):
        for j in range(-3, 4):
            scaled = dict(P=10.0**k * data["P"], q=data["q"])
            for key in "AbGh":
                scaled[key] = 10.0**j * data[key]
            family.append(((k, j), scaled))
    return family


def _linear_loss(problem):
    solution = ad.solve(problem, TIGHT)
    return solution.x @ GRAD_DIRECTION, solution.info


# measured with the default (kkt) strategy: max relative error 6.5e-9 over the family (against a
# Clarabel solution at tol 1e-10); the adjoint strategy reaches only 5e-3 on (P·1e-3, A·1e3).
ERROR_BOUND = 5e-7


def test_scaling_family_solves_and_differentiates():
    family = _scaling_family()
    batch = _stack([to_qp(data) for _, data in family])
    solutions = solve_batch(batch, TIGHT)
    (_, infos), grads = jax.jit(jax.vmap(jax.value_and_grad(_linear_loss, has_aux=True)))(batch)
    assert (np.asarray(solutions.info.status) == ad.Status.SOLVED).all()
    assert (np.asarray(infos.status) == ad.Status.SOLVED).all()
    for i, ((k, j), data) in enumerate(family):
        x, lam, nu = clarabel_solve(**data)
        assert relative_error(solutions.x[i], x) <= 1e-7, (k, j)  # measured ≤ 3.2e-9
        expected = kkt_gradients(**data, x=x, lam=lam, nu=nu, g=np.asarray(GRAD_DIRECTION))
        for leaf in "PqAbGh":
            # Magnitude as well as direction (a missing cost scale would pass a cosine test).
            assert cosine(getattr(grads, leaf)[i], expected[leaf]) >= 1 - 1e-13, (k, j, leaf)  # measured 1 − 4e-16
            assert relative_error(getattr(grads, leaf)[i], expected[leaf]) <= ERROR_BOUND, (k, j, leaf)


def test_infeasible_problems_get_their_status_and_feasible_ones_do_not():
    n, p, m = SMALL[1:4]
    primal = [to_qp(primal_infeasible_qp(seed, n, p, m)) for seed in range(8)]
    dual = [to_qp(dual_infeasible_qp(seed, n, p, m)) for seed in range(8)]
    feasible = [case(seed, n, p, m, False)[1] for seed in range(40, 48)]
    options = ad.Options(max_iter=5_000)
    statuses = np.asarray(solve_batch(_stack(primal + dual + feasible), options).info.status)
    np.testing.assert_array_equal(statuses[:8], ad.Status.PRIMAL_INFEASIBLE)
    np.testing.assert_array_equal(statuses[8:16], ad.Status.DUAL_INFEASIBLE)
    np.testing.assert_array_equal(statuses[16:], ad.Status.SOLVED)
    iterations = np.asarray(solve_batch(_stack(primal + dual), options).info.iterations)
    assert iterations.max() < 1_000  # certificates come well before max_iter


def test_dual_infeasible_without_equalities():
    problem = to_qp(dual_infeasible_qp(0, 6, 0, 8))
    assert int(solve_jit(problem, TIGHT).info.status) == ad.Status.DUAL_INFEASIBLE


def test_warm_start_from_a_nearby_solution_takes_fewer_iterations():
    data, problem, _ = case(*SMALL)
    options = ad.Options(tol=1e-8, polish=False)  # ADMM's own iterations
    previous = solve_jit(problem, options)
    nearby = problem._replace(q=problem.q + 1e-3 * jnp.sin(jnp.arange(problem.q.size)))
    cold = solve_jit(nearby, options)
    warm = jax.jit(ad.solve)(nearby, options, previous)
    assert int(warm.info.status) == int(cold.info.status) == ad.Status.SOLVED
    assert int(warm.info.iterations) < int(cold.info.iterations)
    assert relative_error(warm.x, cold.x) <= 1e-7  # measured 1.5e-9


def test_mixed_batch_equals_solo_solves_and_failed_lanes_do_not_poison_gradients():
    n, p, m = SMALL[1:4]
    easy = case(*SMALL)[1]
    hard = to_qp(dict(_scaling_family())[(-3, 3)])
    lanes = [easy, hard, to_qp(primal_infeasible_qp(1, n, p, m)),
             to_qp(dual_infeasible_qp(1, n, p, m)), easy._replace(q=easy.q.at[0].set(jnp.nan))]
    batch = _stack(lanes)
    solutions = solve_batch(batch, TIGHT)
    (_, infos), grads = jax.jit(jax.vmap(jax.value_and_grad(_linear_loss, has_aux=True)))(batch)
    lane_like = solve_batch(batch, LANE_LIKE)
    for i, lane in enumerate(lanes):
        alone = solve_jit(lane, TIGHT)
        assert int(solutions.info.status[i]) == int(alone.info.status)
        if int(alone.info.status) == ad.Status.SOLVED:
            assert relative_error(solutions.x[i], alone.x) <= 1e-13  # measured 4e-16 (batched round-off)
        # With the batch's own settings, a lane runs exactly as the problem alone.
        assert int(lane_like.info.iterations[i]) == int(solve_jit(lane, LANE_LIKE).info.iterations)
    np.testing.assert_array_equal(
        np.asarray(infos.status)[2:], [ad.Status.PRIMAL_INFEASIBLE, ad.Status.DUAL_INFEASIBLE,
                                       ad.Status.NONFINITE])
    for leaf in "PqAbGh":
        values = np.asarray(getattr(grads, leaf))
        assert np.isfinite(values).all(), leaf
        assert (values[2:] == 0).all(), leaf  # a failed solve has a zero gradient
        assert np.abs(values[:2]).max() > 0, leaf


def test_the_first_polish_of_one_dense_problem_waits_only_for_a_nearly_settled_active_set(monkeypatch):
    """One dense float64 QP polishes first once its active set moved by at most
    ``_kkt.REUSED_CHANGES`` rows since the last check, since polishing's later rounds
    correct such rows (by a Woodbury update from n ``_solve.REUSABLE_FACTOR_SIZE``, by a
    fresh factor below it, as here): on the paper-generator case it stops sooner
    than when waiting for an unchanged set (20 iterations against 30 when written), at
    the same point."""
    _, problem, _ = case(*PAPER)
    early = solve_jit(problem, ad.Options())
    monkeypatch.setattr(_driver, "REUSED_CHANGES", 0)  # read at trace time: trace a function of its own
    late = jax.jit(lambda problem, options: ad.solve(problem, options))(problem, ad.Options())
    for solution in (early, late):
        assert int(solution.info.status) == ad.Status.SOLVED and bool(solution.info.polished)
    assert int(early.info.iterations) < int(late.info.iterations)
    np.testing.assert_allclose(early.x, late.x, rtol=0, atol=1e-13)  # measured 2.2e-15


def test_the_lanes_of_a_dense_batch_polish_first_once_their_active_sets_nearly_settled(monkeypatch):
    """The same rule for a vmapped float64 batch (there each round factors afresh; a lane's
    factor is small): on four paper-generator problems with n 50, every lane stops after 20
    iterations, where waiting for an unchanged set took 20 to 40 (when written), at the same
    points."""
    batch = _stack([case(seed, 50, 10, 25, False)[1] for seed in (42, 44, 52, 56)])
    solve = jax.vmap(ad.solve, in_axes=(0, None))
    early = jax.jit(solve)(batch, ad.Options())
    monkeypatch.setattr(_driver, "REUSED_CHANGES", 0)  # read at trace time: trace a function of its own
    late = jax.jit(lambda batch, options: solve(batch, options))(batch, ad.Options())
    for solution in (early, late):
        assert np.all(np.asarray(solution.info.status) == ad.Status.SOLVED)
        assert np.all(np.asarray(solution.info.polished))
    assert np.all(np.asarray(early.info.iterations) <= np.asarray(late.info.iterations))
    assert int(np.max(early.info.iterations)) < int(np.max(late.info.iterations))  # what the batch runs
    np.testing.assert_allclose(early.x, late.x, rtol=0, atol=1e-13)  # measured 2.0e-15


def test_the_reusable_factor_path_solves_and_differentiates_as_a_fresh_factor(monkeypatch):
    """Polishing's reusable factor (``_kkt.ReusableFactor``, compiled from n
    ``_solve.REUSABLE_FACTOR_SIZE``), forced on below that size: the solve, the kkt pullback
    and the exact Jacobians through it equal those of the default fresh factors."""
    _, problem, _ = case(*PAPER)
    g = jnp.linspace(-1.0, 1.0, PAPER[1])

    def outputs(problem):
        loss = jax.value_and_grad(lambda problem: ad.solve(problem).x @ g)
        return loss(problem), ad.jacobians(problem, wrt=("b",))[1]["b"]

    fresh = jax.jit(outputs)(problem)
    assert not re.search(r"= lu\b", str(jax.make_jaxpr(outputs)(problem)))
    monkeypatch.setattr(_solve, "REUSABLE_FACTOR_SIZE", 0)  # read at trace time: trace a function of its own
    # The path taken: the Woodbury update's capacitance is solved by LU.
    assert re.search(r"= lu\b", str(jax.make_jaxpr(lambda problem: outputs(problem))(problem)))
    reusable = jax.jit(lambda problem: outputs(problem))(problem)
    # Bit for bit when written: no round moved a row here, and a factor with no update
    # in use solves as the plain one.
    for got, want in zip(jax.tree_util.tree_leaves(reusable), jax.tree_util.tree_leaves(fresh)):
        np.testing.assert_array_equal(got, want)


def test_a_degenerate_vertex_is_polished_exactly_alone_and_in_a_batch():
    """At a degenerate vertex (more active rows than variables) the multipliers are not
    unique, and polishing corrects the iterate's instead of solving for the smallest ones,
    which come out wrong-signed there. Twenty such problems are each polished to their
    exact solution, multipliers included, after 20 iterations (before the correction, 3 of
    them ran 410 to 1300 iterations and ended 3e-5 off); a vmapped batch of them gives the
    same points, each lane after as many iterations as alone."""
    data, solutions = zip(*(degenerate_vertex_qp(seed) for seed in range(20)))
    problems = [to_qp(problem) for problem in data]
    alone = [solve_jit(problem, ad.Options()) for problem in problems]
    batch = jax.jit(jax.vmap(ad.solve, in_axes=(0, None)))(_stack(problems), ad.Options())
    for i, (problem, solution, x) in enumerate(zip(data, alone, solutions)):
        assert int(solution.info.status) == ad.Status.SOLVED and bool(solution.info.polished)
        assert int(solution.info.iterations) == 20
        assert np.abs(np.asarray(solution.x) - x).max() <= 1e-13  # measured 1.8e-15
        # The polished multipliers are a dual point: stationarity at round-off (ν >= 0 by
        # construction of the candidate).
        stationarity = (problem["P"] @ x + problem["q"] + problem["A"].T @ np.asarray(solution.lam)
                        + problem["G"].T @ np.asarray(solution.nu))
        assert np.abs(stationarity).max() <= 1e-13  # measured 5.3e-15
        assert int(batch.info.status[i]) == ad.Status.SOLVED and bool(batch.info.polished[i])
        assert int(batch.info.iterations[i]) == int(solution.info.iterations)
        assert np.abs(np.asarray(batch.x[i]) - np.asarray(solution.x)).max() <= 1e-13
