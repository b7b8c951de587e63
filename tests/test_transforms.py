"""jit, vmap, grad and their compositions; recompilation; float32 and float64."""

import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import CASES, LANE_LIKE, TIGHT, case, linear_loss, relative_error, solve_jit
from lapack_order import cpu_only
from reference import kkt_gradients

import altdiff_jax as ad

SPEC = CASES["small"]
# Share P, A and G; batch q, b and h.
SHARED_MATRICES = ad.QP(P=None, q=0, A=None, b=0, G=None, h=0)
ALL_BATCHED = ad.QP(P=0, q=0, A=0, b=0, G=0, h=0)


def _batch(in_axes, size=3):
    """``size`` problems: the shared leaves from SMALL, the batched ones from other seeds."""
    problems = [case(seed, *SPEC[1:])[1] for seed in range(20, 20 + size)]
    base = case(*SPEC)[1]
    leaves = {}
    for name, axis in in_axes._asdict().items():
        if axis is None:
            leaves[name] = getattr(base, name)
        else:
            leaves[name] = jnp.stack([getattr(pr, name) for pr in problems])
    batch = ad.QP(**leaves)
    singles = [ad.QP(**{k: v if in_axes._asdict()[k] is None else v[i] for k, v in leaves.items()})
               for i in range(size)]
    return batch, singles


@pytest.mark.parametrize("in_axes", [SHARED_MATRICES, ALL_BATCHED], ids=["shared", "batched"])
def test_vmap_equals_loop(in_axes):
    batch, singles = _batch(in_axes)
    solutions = jax.jit(jax.vmap(ad.solve, in_axes=(in_axes, None)))(batch, TIGHT)
    for i, single in enumerate(singles):
        expected = solve_jit(single, TIGHT)
        lane = jax.tree_util.tree_map(lambda leaf: leaf[i], solutions)
        # x, s, lam, nu: measured ≤ 6.2e-15
        chex.assert_trees_all_close(lane[:4], expected[:4], rtol=1e-12, atol=1e-13)
        assert int(lane.info.status) == ad.Status.SOLVED
    # Frozen lanes: each lane stops at its own iteration count, that of the same solve alone.
    lanes = jax.jit(jax.vmap(ad.solve, in_axes=(in_axes, None)))(batch, LANE_LIKE)
    alone = [solve_jit(single, LANE_LIKE) for single in singles]
    np.testing.assert_array_equal(lanes.info.iterations, [int(a.info.iterations) for a in alone])
    assert len(set(np.asarray(lanes.info.iterations).tolist())) > 1  # the lanes did stop apart
    for i, a in enumerate(alone):
        np.testing.assert_allclose(lanes.x[i], a.x, rtol=0, atol=1e-13)  # measured 1.4e-15


def _differ(a, b) -> bool:
    return any(not np.array_equal(x, y) for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


def test_auto_factors_a_batch_by_cholesky_where_its_lanes_own_their_matrices():
    """``factorization="auto"`` runs a float64 batch whose lanes have their own P, A, G on
    Cholesky factors (``_linalg.ExplicitInverse``: one batched product per iteration) and a
    batch sharing them on one eigen-factor, and either batch without polishing stops on the
    eigen-factor; the explicit choices give the same answers and gradients. Which method
    ``"auto"`` chose is read from its program: the same StableHLO as the explicit choice's
    (so the same results bit for bit), which differ from the other's in round-off."""
    g = jnp.linspace(-1.0, 1.0, SPEC[1])
    for in_axes in (ALL_BATCHED, SHARED_MATRICES):
        batch, _ = _batch(in_axes)
        fn = jax.jit(jax.vmap(jax.value_and_grad(linear_loss, has_aux=True), in_axes=(in_axes, None, None)))

        def program(choice, polish):
            return fn.lower(batch, g, ad.Options(factorization=choice, polish=polish)).as_text()

        results = {(choice, polish): fn(batch, g, ad.Options(factorization=choice, polish=polish))
                   for choice in ("cholesky", "eigen") for polish in (True, False)}
        # The two methods tell apart, with and without polishing (else "auto" matching one says nothing).
        assert _differ(results["cholesky", True], results["eigen", True])
        assert _differ(results["cholesky", False], results["eigen", False])
        # Without polishing stops the loop runs long and ρ changes often: eigen for both.
        chosen = "cholesky" if in_axes is ALL_BATCHED else "eigen"
        other = "eigen" if chosen == "cholesky" else "cholesky"
        assert program("auto", True) == program(chosen, True) != program(other, True)
        assert program("auto", False) == program("eigen", False) != program("cholesky", False)
        (_, cholesky), cholesky_grads = results["cholesky", True]
        (_, eigen), eigen_grads = results["eigen", True]
        assert np.all(np.asarray(cholesky.info.status) == ad.Status.SOLVED)
        assert np.all(np.asarray(eigen.info.status) == ad.Status.SOLVED)
        np.testing.assert_allclose(cholesky.x, eigen.x, rtol=0, atol=1e-13)  # measured ≤ 1.2e-15
        chex.assert_trees_all_close(cholesky_grads, eigen_grads, rtol=0, atol=1e-13)  # measured ≤ 1.3e-15


def test_batched_lanes_stop_to_be_polished():
    """A lane of a vmapped dense batch leaves the loop once its active set settles and is
    polished with the others in one pass: it stops where it would alone, long before ADMM
    alone would meet the tolerance."""
    batch, singles = _batch(ALL_BATCHED)
    polishing = ad.Options(tol=1e-11, max_iter=100_000, factorization="eigen")
    lanes = jax.jit(jax.vmap(ad.solve, in_axes=(ALL_BATCHED, None)))(batch, polishing)
    unpolished = jax.jit(jax.vmap(ad.solve, in_axes=(ALL_BATCHED, None)))(batch, LANE_LIKE)
    assert np.all(np.asarray(lanes.info.polished))
    assert np.all(np.asarray(lanes.info.status) == ad.Status.SOLVED)
    for i, single in enumerate(singles):
        alone = solve_jit(single, polishing)
        assert int(lanes.info.iterations[i]) == int(alone.info.iterations)
        # Measured: 20 iterations polished, against 440, 160 and 60 for ADMM alone.
        assert 3 * int(lanes.info.iterations[i]) <= int(unpolished.info.iterations[i])
        np.testing.assert_allclose(lanes.x[i], alone.x, rtol=0, atol=1e-13)  # measured ≤ 8.9e-16


def test_a_failed_lane_does_not_change_the_gradients_of_the_others():
    """The kkt pullback reuses a polished lane's factor and factors afresh for the others
    (here a NaN lane, whose gradient is zero): the polished lanes' gradients stay exact."""
    batch, singles = _batch(ALL_BATCHED)
    batch = batch._replace(q=batch.q.at[1, 0].set(jnp.nan))
    g = jnp.linspace(-1.0, 1.0, SPEC[1])
    grad_fn = jax.grad(lambda pr: linear_loss(pr, g, TIGHT)[0])
    grads = jax.jit(jax.vmap(grad_fn, in_axes=(ALL_BATCHED,)))(batch)
    alone = {i: jax.jit(grad_fn)(singles[i]) for i in (0, 2)}
    for leaf in "PqAbGh":
        assert not np.any(np.asarray(getattr(grads, leaf)[1]))
        for i, expected in alone.items():
            assert relative_error(getattr(grads, leaf)[i], getattr(expected, leaf)) <= 1e-13  # measured 4.1e-16


def test_vmap_of_grad_equals_loop_of_grads():
    batch, singles = _batch(SHARED_MATRICES)
    g = jnp.linspace(-1.0, 1.0, SPEC[1])
    grad_fn = jax.grad(lambda pr: linear_loss(pr, g, TIGHT)[0])
    batched = jax.jit(jax.vmap(grad_fn, in_axes=(SHARED_MATRICES,)))(batch)
    for i, single in enumerate(singles):
        expected = jax.jit(grad_fn)(single)
        for leaf in "PqAbGh":
            assert relative_error(getattr(batched, leaf)[i], getattr(expected, leaf)) <= 1e-13  # measured 1.8e-15


def test_nested_vmap_of_grad_equals_loop_of_grads():
    """vmap of vmap (a 2 × 2 grid of problems, P, A, G shared within a row of the grid and
    batched across rows): the engine's batching helpers (``_batching``: the refactorisation
    and polishing rounds only where lanes need them) nest; each gradient is that of the
    problem alone."""
    batch, singles = _batch(SHARED_MATRICES, size=4)
    inner = ad.QP(P=None, q=0, A=None, b=0, G=None, h=0)
    outer = ad.QP(P=0, q=0, A=0, b=0, G=0, h=0)
    grid = ad.QP(**{name: (jnp.stack([leaf, 2 * leaf]) if axis is None else leaf.reshape(2, 2, *leaf.shape[1:]))
                    for (name, leaf), axis in zip(batch._asdict().items(), SHARED_MATRICES) if leaf is not None})
    g = jnp.linspace(-1.0, 1.0, SPEC[1])
    grad_fn = jax.grad(lambda pr: linear_loss(pr, g, TIGHT)[0])
    nested = jax.jit(jax.vmap(jax.vmap(grad_fn, in_axes=(inner,)), in_axes=(outer,)))(grid)
    errors = []
    for row in range(2):
        for column in range(2):
            single = singles[2 * row + column]
            if row:  # the second row's shared P, A, G are doubled
                single = single._replace(P=2 * single.P, A=2 * single.A, G=2 * single.G)
            expected = jax.jit(grad_fn)(single)
            for leaf in "PqAbGh":
                got = getattr(nested, leaf)[row, column]
                errors.append(relative_error(got, getattr(expected, leaf)))
    assert max(errors) <= 1e-13  # measured 1.7e-15


def test_grad_of_vmapped_loss_sums_over_shared_leaves():
    batch, singles = _batch(SHARED_MATRICES)
    g = jnp.linspace(-1.0, 1.0, SPEC[1])

    def batch_loss(pr):
        xs = jax.vmap(lambda p: ad.solve(p, TIGHT).x, in_axes=(SHARED_MATRICES,))(pr)
        return jnp.sum(xs @ g)

    grads = jax.jit(jax.grad(batch_loss))(batch)
    single_grads = [jax.grad(lambda pr: linear_loss(pr, g, TIGHT)[0])(s) for s in singles]
    for leaf in "PAG":  # shared: gradients add up over the batch
        expected = sum(getattr(sg, leaf) for sg in single_grads)
        assert relative_error(getattr(grads, leaf), expected) <= 1e-13  # measured ≤ 2.3e-15
    for leaf in "qbh":  # batched: one gradient per problem
        expected = jnp.stack([getattr(sg, leaf) for sg in single_grads])
        assert relative_error(getattr(grads, leaf), expected) <= 1e-13  # measured ≤ 2.3e-15


def test_frozen_lane_keeps_its_result_while_a_slow_lane_runs():
    """A lane that stops early is frozen: same iterate and count as when solved alone."""
    problem = case(*SPEC)[1]
    easy, hard = problem, problem._replace(P=1e-2 * problem.P)  # badly scaled for ρ = 1
    # The paper's configuration (fixed ρ = 1, no equilibration) is slow on the hard lane.
    options = ad.Options(tol=1e-8, max_iter=100_000, rho=1.0, alpha=1.0, adaptive_rho=False,
                         scaling_iterations=0, polish=False)
    batch = jax.tree_util.tree_map(lambda a, b: jnp.stack([a, b]), easy, hard)
    solutions = jax.vmap(ad.solve, in_axes=(0, None))(batch, options)
    easy_alone, hard_alone = (solve_jit(pr, options) for pr in (easy, hard))
    assert 10 * int(easy_alone.info.iterations) < int(hard_alone.info.iterations)
    assert int(solutions.info.iterations[0]) == int(easy_alone.info.iterations)
    np.testing.assert_allclose(solutions.x[0], easy_alone.x, rtol=1e-13, atol=1e-14)  # measured 2.4e-15
    # The slow lane itself only agrees up to round-off of the batched arithmetic.
    assert abs(int(solutions.info.iterations[1]) - int(hard_alone.info.iterations)) <= 0.01 * int(
        hard_alone.info.iterations
    )
    assert relative_error(solutions.x[1], hard_alone.x) <= 1e-12  # measured 1.2e-14


def test_no_recompilation_for_new_data_or_new_numeric_options():
    traces = []

    @jax.jit
    def solve_counted(problem, options):
        traces.append(1)
        return ad.solve(problem, options)

    for seed, rho, tol in [(30, 1.0, 1e-8), (31, 2.0, 1e-6), (32, 0.5, 1e-7)]:
        problem = case(seed, *SPEC[1:])[1]
        solution = solve_counted(problem, ad.Options(tol=tol, rho=rho))
        assert int(solution.info.status) == ad.Status.SOLVED
    assert len(traces) == 1


def test_no_retrace_under_grad():
    @jax.jit
    @chex.assert_max_traces(n=1)
    def grad_q(problem):
        return jax.grad(lambda q: ad.solve(problem._replace(q=q)).x.sum())(problem.q)

    for seed in (33, 34):
        grad_q(case(seed, *SPEC[1:])[1])


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_dtype_in_equals_dtype_out(dtype):
    data, _, (x_ref, lam, nu) = case(*SPEC)
    problem = ad.QP(**{k: jnp.asarray(v, dtype) for k, v in data.items()})
    solution = jax.jit(ad.solve)(problem)  # default options: tol depends on the dtype
    assert int(solution.info.status) == ad.Status.SOLVED
    for leaf in jax.tree_util.tree_leaves(solution[:4]) + [solution.info.primal_residual]:
        assert leaf.dtype == dtype
    # measured: 2.0e-7 (float32), 3.0e-10 (float64)
    assert relative_error(solution.x, x_ref) <= (1e-5 if dtype == jnp.float32 else 1e-8)
    grads = jax.grad(lambda pr: ad.solve(pr).x.sum())(problem)
    expected = kkt_gradients(**data, x=x_ref, lam=lam, nu=nu, g=np.ones(x_ref.size))
    for leaf in "PqAbGh":
        assert getattr(grads, leaf).dtype == dtype
        # Against the KKT reference, in magnitude (measured ≤ 2.2e-7 in float32, ≤ 3.4e-10 in
        # float64: the reference's own accuracy).
        assert relative_error(getattr(grads, leaf), expected[leaf]) <= (1e-5 if dtype == jnp.float32 else 1e-8), leaf


def test_options_are_hashable_and_can_be_closed_over():
    options = ad.Options(tol=1e-8, rho=0.5, differentiation="adjoint")
    assert hash(options) == hash(ad.Options(tol=1e-8, rho=0.5, differentiation="adjoint"))
    assert options != ad.Options(tol=1e-8, rho=0.5)
    problem = case(*SPEC)[1]
    closed = jax.jit(lambda pr: ad.solve(pr, options))
    np.testing.assert_allclose(closed(problem).x, solve_jit(problem, options).x, rtol=1e-14)  # measured 0
    with pytest.raises(ValueError, match="differentiation must be one of"):
        ad.Options(differentiation="implicit")


@cpu_only
def test_the_lapack_order_checker_finds_unordered_calls():
    """Four independent vmapped triangular solves: six pairs XLA may run at once; a solve
    in a loop beside an independent one: one pair."""
    from lapack_order import concurrent_lapack_calls

    def four_solves(L, b):
        solve = jax.vmap(lambda L, b: jax.scipy.linalg.solve_triangular(L, b, lower=True))
        return solve(L, b), solve(L, 2 * b), solve(2 * L, b), solve(2 * L, 2 * b)

    def loop_beside_a_solve(L, b):  # one solve inside a while loop, one outside it
        solve = jax.vmap(lambda L, b: jax.scipy.linalg.solve_triangular(L, b, lower=True))
        looped = jax.lax.fori_loop(0, 2, lambda i, x: solve(L, x), b)
        return looped, solve(2 * L, b)

    L, b = jnp.broadcast_to(jnp.eye(4), (3, 4, 4)), jnp.ones((3, 4))
    assert len(concurrent_lapack_calls(jax.jit(four_solves).lower(L, b).compile().as_text())) == 6
    assert len(concurrent_lapack_calls(jax.jit(loop_beside_a_solve).lower(L, b).compile().as_text())) == 1


@cpu_only
@pytest.mark.parametrize("in_axes,dtype,options", [
    (ALL_BATCHED, jnp.float64, TIGHT),
    (SHARED_MATRICES, jnp.float64, TIGHT),
    (ALL_BATCHED, jnp.float32, ad.Options(tol=1e-4)),
    (ALL_BATCHED, jnp.float64, ad.Options(factorization="cholesky")),
], ids=["batched", "shared", "float32", "cholesky"])
def test_a_vmapped_solve_and_gradient_call_lapack_one_at_a_time(in_axes, dtype, options):
    """jaxlib 0.10 can hang when two batched LAPACK kernels run at once on a 2-core machine
    (``tests/lapack_order.py``); the engine's compiled graphs order every LAPACK call, so a
    vmapped solve with its gradient, run alone, cannot hang that way."""
    from lapack_order import concurrent_lapack_calls

    batch, _ = _batch(in_axes)
    batch = jax.tree_util.tree_map(lambda leaf: leaf.astype(dtype), batch)
    g = jnp.linspace(-1.0, 1.0, SPEC[1], dtype=dtype)
    grad_fn = jax.vmap(jax.grad(lambda pr: linear_loss(pr, g, options)[0]), in_axes=(in_axes,))
    hlo = jax.jit(grad_fn).lower(batch).compile().as_text()
    assert hlo.count('custom_call_target="lapack_') >= 3  # the factorisations are there
    assert concurrent_lapack_calls(hlo) == []


def _cholesky_where_flagged(M, flags):
    """Σ over steps i of chol(M) where ``flags[i]``, by ``computed_where`` inside a loop, on
    an operand the loop does not change."""
    from altdiff_jax._batching import computed_where

    def step(i, total):
        return total + computed_where(flags[i], jnp.linalg.cholesky, (M,), jnp.zeros_like(M))

    return jax.lax.fori_loop(0, flags.shape[0], step, jnp.zeros_like(M))


_M = jnp.array([[4.0, 2.0], [2.0, 3.0]])
_FLAGS = jnp.array([True, False, True])
_LANE_FLAGS = jnp.array([[True, False, True], [False, False, False]])


def test_computed_where_gives_its_value_only_where_asked():
    """``_batching.computed_where``: the result where the condition holds, the current value
    elsewhere, per lane under vmap."""
    L = np.linalg.cholesky(np.asarray(_M))
    np.testing.assert_allclose(jax.jit(_cholesky_where_flagged)(_M, _FLAGS), 2 * L, rtol=1e-15)
    batched = jax.jit(jax.vmap(_cholesky_where_flagged, in_axes=(None, 0)))(_M, _LANE_FLAGS)
    np.testing.assert_allclose(batched, np.stack([2 * L, 0 * L]), rtol=1e-15)


@cpu_only
def test_computed_where_runs_its_work_only_where_asked_and_xla_keeps_it_so():
    """The Cholesky of ``computed_where`` stays in the body of its own while loop, alone and
    under vmap (read from the optimised HLO: what runs how often is not visible in the
    results). Without the optimisation barrier XLA hoisted such work out of the loop
    (``while`` in ``while``: depth 2 here), where it ran at every step: the engine's
    refactorisation at every check and the ``kkt`` pullback's factorisation for every
    polished batch."""
    from lapack_order import lapack_call_depths

    batched = jax.vmap(_cholesky_where_flagged, in_axes=(None, 0))
    for fn, flags in ((_cholesky_where_flagged, _FLAGS), (batched, _LANE_FLAGS)):
        hlo = jax.jit(fn).lower(_M, flags).compile().as_text()
        assert lapack_call_depths(hlo) == [2]


@pytest.mark.parametrize("gathered", [True, False])
def test_computed_where_under_vmap_computes_only_the_lanes_that_ask_for_it(gathered, monkeypatch):
    """Under vmap on CPU ``computed_where`` gathers the lanes where its condition holds
    into chunks of an eighth of the batch (at least 8 lanes) and computes only those: on
    64 lanes the Cholesky runs on batches of 8 matrices (a shared matrix stays one), and
    each lane gets its own result where asked, the current value elsewhere. Where lanes
    are not gathered (other backends; forced here), every lane computes, with the same
    results."""
    from lapack_order import lapack_call_depths

    from altdiff_jax import _linalg
    from altdiff_jax._batching import computed_where

    if not gathered:
        monkeypatch.setattr(_linalg, "lanes_gathered", lambda: False)

    rng = np.random.default_rng(0)
    lanes = 64
    flags = jnp.asarray(rng.uniform(size=lanes) < 0.3)
    matrices = jnp.asarray(np.eye(2) * rng.uniform(1.0, 2.0, (lanes, 1, 1)) + 0.1)

    def lane(M, flag):
        return computed_where(flag, jnp.linalg.cholesky, (M,), jnp.zeros_like(M))

    for in_axes, M in (((0, 0), matrices), ((None, 0), _M)):
        fn = jax.jit(jax.vmap(lane, in_axes=in_axes))
        result = np.asarray(fn(M, flags))
        for i in range(lanes):
            expected = np.linalg.cholesky(np.asarray(M[i] if in_axes[0] == 0 else M)) if flags[i] else 0.0
            np.testing.assert_allclose(result[i], expected, rtol=1e-15, atol=0)
        if jax.default_backend() == "cpu":
            hlo = fn.lower(M, flags).compile().as_text()
            shapes = re.findall(r"= \((f64\[[\d,]+\])\{[^}]*\}, s32\[\d*\]\{?0?\}?\) custom-call\(.*lapack_dpotrf", hlo)
            batch = 8 if gathered else lanes
            assert shapes == ([f"f64[{batch},2,2]"] if in_axes[0] == 0 else ["f64[2,2]"])  # a shared M: once
            assert lapack_call_depths(hlo) == [1]  # inside its loop, not hoisted


def test_on_needing_lanes_runs_a_loop_on_the_lanes_that_need_it_and_leaves_the_others():
    """``_batching.on_needing_lanes`` under vmap equals the loop lane by lane: 40 lanes, of
    which 19 need it (the whole batch steps once, then the 7 that need more are gathered),
    with batched and shared data and a static leaf; the lanes that do not need it keep
    their state exactly; unbatched it is the loop; a step that closes over a batched value
    gives the same."""
    from altdiff_jax._batching import on_needing_lanes

    def step(data, state):
        scale, offset, increment = data
        x, count = state
        return jnp.sin(scale * x) + offset, count + increment

    def needs(state):
        return state[1] < 3

    def loop(data, state):
        return jax.lax.while_loop(needs, lambda state: step(data, state), state)

    def run(scale, offset, state):
        return on_needing_lanes(step, needs, (scale, offset, 1), state)

    lanes = 40
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((lanes, 4)))
    order = rng.permutation(lanes)
    count = jnp.asarray(np.where(order < 7, 0, np.where(order < 19, 2, 3)), jnp.int32)
    scale = jnp.asarray(rng.uniform(0.5, 1.5, lanes))
    offset = jnp.asarray(rng.standard_normal(4))
    got_x, got_count = jax.jit(jax.vmap(run, in_axes=(0, None, 0)))(scale, offset, (x, count))
    for i in range(lanes):
        want_x, want_count = loop((scale[i], offset, 1), (x[i], count[i]))
        np.testing.assert_allclose(got_x[i], want_x, rtol=1e-15, atol=0)
        assert int(got_count[i]) == int(want_count) == 3
    np.testing.assert_array_equal(got_x[count == 3], x[count == 3])  # untouched lanes
    alone = jax.jit(run)(scale[0], offset, (x[0], jnp.int32(0)))
    np.testing.assert_array_equal(alone[0], loop((scale[0], offset, 1), (x[0], jnp.int32(0)))[0])

    def closing_over(scale, state):  # the step closes over a batched value (as a user's objective may)
        return on_needing_lanes(lambda data, state: step((scale, offset, 1), state), needs, (), state)

    closed_x, _ = jax.jit(jax.vmap(closing_over))(scale, (x, count))
    np.testing.assert_allclose(closed_x, got_x, rtol=1e-15, atol=0)


def test_on_needing_lanes_runs_the_whole_batch_then_gathers_the_last_lanes():
    """The whole batch steps while more than a gather's worth of lanes need
    it (40 lanes: at most 8), then the last ones are gathered: lane by lane equal to the
    loop, whose lanes need from 0 to 60 steps."""
    from altdiff_jax import _batching

    def step(scale, state):
        x, count, limit = state
        return jnp.sin(scale * x) + 0.5, count + 1, limit

    def needs(state):
        return state[1] < state[2]

    def loop(scale, state):
        return jax.lax.while_loop(needs, lambda state: step(scale, state), state)

    def run(scale, state):
        return _batching.on_needing_lanes(step, needs, scale, state)

    lanes = 40
    rng = np.random.default_rng(1)
    state = (jnp.asarray(rng.standard_normal((lanes, 3))), jnp.zeros(lanes, jnp.int32),
             jnp.asarray(np.where(np.arange(lanes) < 30, rng.integers(0, 6, lanes), rng.integers(20, 60, lanes)),
                         jnp.int32))
    scale = jnp.asarray(rng.uniform(0.5, 1.5, lanes))
    got = jax.jit(jax.vmap(run))(scale, state)
    for i in range(lanes):
        want = loop(scale[i], jax.tree_util.tree_map(lambda leaf: leaf[i], state))
        np.testing.assert_allclose(got[0][i], want[0], rtol=1e-15, atol=1e-15)  # measured 0.0
        assert int(got[1][i]) == int(want[1]) == int(state[2][i])


def test_a_batch_whose_lanes_stop_far_apart_equals_each_problem_alone():
    """24 lanes that stop between 60 and 920 iterations (four with P scaled down): the batch
    runs whole while more than 8 lanes run, then the slow ones gathered apart; each lane
    stops at its own iteration count with the result of the same problem solved alone."""
    problems = [case(seed, *SPEC[1:])[1] for seed in range(30, 54)]
    problems = [pr._replace(P=1e-3 * pr.P) if i % 6 == 5 else pr for i, pr in enumerate(problems)]
    batch = jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *problems)
    options = ad.Options(tol=1e-8, max_iter=100_000, polish=False, factorization="eigen")
    lanes = jax.jit(jax.vmap(ad.solve, in_axes=(0, None)))(batch, options)
    alone = [solve_jit(pr, options) for pr in problems]
    iterations = [int(a.info.iterations) for a in alone]
    assert max(iterations) >= 5 * sorted(iterations)[len(iterations) // 2], iterations
    np.testing.assert_array_equal(lanes.info.iterations, iterations)
    for i, a in enumerate(alone):
        assert relative_error(lanes.x[i], a.x) <= 1e-11, i  # measured ≤ 1.5e-13


def test_a_shared_matrix_weighted_by_each_lane_gives_the_gram_of_each_lane():
    """``SharedDense.weighted_gram`` (G of a batch sharing it: its Gram matrices from the
    row products) equals Mᵀ diag(w) M for each lane under vmap and alone, as does
    ``Dense.weighted_gram`` with M batched; scaling keeps the type."""
    from altdiff_jax._linalg import Dense, SharedDense

    rng = np.random.default_rng(1)
    M = jnp.asarray(rng.standard_normal((7, 5)))
    w = jnp.asarray(rng.random((6, 7)))
    shared = jax.jit(jax.vmap(lambda w: SharedDense(M).weighted_gram(w)))(w)
    batched = jax.jit(jax.vmap(lambda M, w: Dense(M).weighted_gram(w)))(jnp.broadcast_to(M, (6, 7, 5)), w)
    for i in range(6):
        want = np.asarray(M).T @ np.diag(np.asarray(w[i])) @ np.asarray(M)
        np.testing.assert_allclose(shared[i], want, rtol=1e-13, atol=1e-14)  # measured 8.9e-16 absolute
        np.testing.assert_allclose(batched[i], want, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(SharedDense(M).weighted_gram(w[0]), shared[0], rtol=1e-15)
    assert type(SharedDense(M).scale(jnp.ones(7), jnp.ones(5)).times(2.0)) is SharedDense
