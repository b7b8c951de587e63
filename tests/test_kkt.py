"""The reduced KKT system of altdiff_jax._kkt (polishing and the ``kkt`` strategy) against
dense NumPy solves and the NumPy/cvxpy references."""

from typing import NamedTuple

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import chex  # noqa: E402
from lapack_order import cpu_only, output_layouts, reads_pinned_layouts  # noqa: E402

from altdiff_jax import _linalg  # noqa: E402
from altdiff_jax._iterate import Iterate  # noqa: E402
from altdiff_jax._jacobian import ActiveSet  # noqa: E402
from altdiff_jax import _kkt  # noqa: E402
from altdiff_jax._kkt import KKTVector, ReducedKKT, kkt_vjp  # noqa: E402
from altdiff_jax._linalg import Cholesky, Dense, Diagonal, RowVector  # noqa: E402
from altdiff_jax._objective import QuadraticObjective  # noqa: E402
from altdiff_jax._polish import placeholder_system, polish  # noqa: E402
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
    chex.assert_trees_all_close(structured, dense, rtol=1e-14, atol=1e-15)  # measured 2.2e-16


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
    objective = QuadraticObjective(Dense(jnp.asarray(P_sym(data["P"]))), jnp.asarray(data["q"]), 1.0, 0.0,
                                   _NoXUpdate())
    return data, (x, lam, nu), objective, constraints, z


class _NoXUpdate(NamedTuple):
    """The x-update solver of an objective that only polishing and the pullback use: it
    keeps no Gram matrix, so they build their own."""

    rho_dependent = False

    def gram(self):
        return None


def P_sym(P):
    return 0.5 * (P + P.T)


@jax.jit
def _kkt_vjp(objective, constraints, z, cotangent):
    return kkt_vjp(objective, constraints, z, 1.0, 1e-9, cotangent)[0]


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


def _polish(objective, constraints, z, reusable):
    return polish(objective, constraints, z, 1.0, 1e-9, placeholder_system(objective, constraints, z, reusable))


_polish_jit = jax.jit(_polish, static_argnums=3)


@jax.jit
def _polished_vjp(objective, constraints, z, cotangent, system):
    return kkt_vjp(objective, constraints, z, 1.0, 1e-9, cotangent, jnp.bool_(True), system)[0]


def _missing_one_active_row(seed=4, n=8, p=2, m=16):
    """``_solved``'s problem and an iterate that shows its least active row as inactive."""
    data, solution, objective, constraints, z = _solved(seed, n, p, m)
    active = np.asarray(z.nu) > 0
    row = int(np.argmin(np.where(active, np.asarray(z.nu), np.inf)))
    return data, solution, objective, constraints, z._replace(s=z.s.at[row].set(1.0), nu=z.nu.at[row].set(0.0))


def _with_one_inactive_row_shown_active(seed=1, n=8, p=2, m=16):
    """``_solved``'s problem and an iterate that shows its inactive row of least slack as
    active (a small multiplier, no slack)."""
    data, solution, objective, constraints, z = _solved(seed, n, p, m)
    inactive = np.asarray(z.nu) <= 0
    row = int(np.argmin(np.where(inactive, np.asarray(z.s), np.inf)))
    return data, solution, objective, constraints, z._replace(s=z.s.at[row].set(0.0), nu=z.nu.at[row].set(1e-3))


def _used_slots(system) -> int:
    return int(np.sum(np.asarray(system.factor.selector).sum(axis=0) > 0))


@pytest.mark.parametrize("start,joins", [(_missing_one_active_row, True), (_with_one_inactive_row_shown_active, False)],
                         ids=["a row joins", "a row leaves"])
def test_a_polishing_round_near_the_last_updates_its_factor(start, joins):
    """From an iterate whose active set is off by one row, the first round factors the wrong
    active set and the second, where the row joins or leaves, reuses that factor by a
    Woodbury update (one slot in use) instead of factoring again: the point, and the kkt
    pullback through the updated factor, equal those of a fresh factor and the Clarabel
    reference."""
    data, (x, lam, nu), objective, constraints, z = start()
    updated, finite, system = _polish_jit(objective, constraints, z, True)
    fresh, _, fresh_system = _polish_jit(objective, constraints, z, False)
    assert bool(finite) and _used_slots(system) == 1
    row = int(np.argmax(np.asarray(system.factor.selector).sum(axis=1)))  # the updated row
    assert bool(system.active.inequality[row]) == joins and bool(system.factor.a[row] > 0) != joins
    np.testing.assert_allclose(updated.x, fresh.x, rtol=0, atol=1e-14)  # measured 2.2e-16 (joins), 5.6e-17 (leaves)
    np.testing.assert_allclose(updated.x, x, rtol=0, atol=1e-9)  # measured 1.3e-11, 4.1e-12 (Clarabel's accuracy)
    g = np.random.default_rng(1).standard_normal(x.shape[0])
    cotangent = Iterate(jnp.asarray(g), *(jnp.zeros_like(v) for v in z[1:]))
    bars = _polished_vjp(objective, constraints, updated, cotangent, system)
    fresh_bars = _polished_vjp(objective, constraints, fresh, cotangent, fresh_system)
    for got, want in zip(bars, fresh_bars):
        scale = max(1.0, float(np.abs(want).max(initial=0)))
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-13 * scale)  # measured 6.7e-16, 1.4e-16
    grads = data_gradients(updated.x, updated.lam, updated.nu, bars.grad, bars.b, bars.h)
    expected = reference.kkt_gradients(**data, x=x, lam=lam, nu=nu, g=g)
    for leaf in "PqAbGh":
        error = np.linalg.norm(getattr(grads, leaf) - expected[leaf]) / np.linalg.norm(expected[leaf])
        assert error <= 4e-9, (leaf, error)  # measured ≤ 4.2e-11 (G; Clarabel's multipliers)


def _regularized_K(P, A, G, a, a_B, delta):
    """K_δ of the module docstring, dense: δ on the H block, −δ on the equalities and the
    active rows and bounds, −1 on the inactive ones."""
    n, p = P.shape[0], A.shape[0]
    B = np.eye(n)[: a_B.size] * a_B[:, None]
    C = np.vstack([A, a[:, None] * G, B])
    row_diagonal = np.concatenate([np.full(p, delta), delta * a + (1 - a), delta * a_B + (1 - a_B)])
    return np.block([[P + delta * np.eye(n), C.T], [C, -np.diag(row_diagonal)]])


def test_an_updated_factor_solves_the_regularised_system_of_the_nearby_active_set(monkeypatch):
    """ReusableFactor's Woodbury update in K_δ's space, without refinement, against a dense
    solve of K_δ on the new set: rows joining, leaving, both, and no change (free slots
    only). δ is raised to 1e-2 so that an O(δ) error in the update (its (1 − δ) term) shows
    above the normal form's round-off (about eps/δ)."""
    monkeypatch.setattr(_kkt, "regularization", lambda dtype, iterative=False: 1e-2)  # read at trace time
    rng = np.random.default_rng(0)
    n, p, m = 10, 2, 9
    M = rng.standard_normal((n, n))
    P, A, G = M @ M.T + 0.5 * np.eye(n), rng.standard_normal((p, n)), rng.standard_normal((m, n))
    lower, upper = np.arange(n) == 0, np.arange(n) == 5
    constraints = Constraints(Dense(jnp.asarray(A)), jnp.zeros(p), Dense(jnp.asarray(G)), jnp.zeros(m),
                              jnp.where(jnp.asarray(lower), 0.0, -jnp.inf), jnp.where(jnp.asarray(upper), 1.0, jnp.inf))
    H = Dense(jnp.asarray(P))

    def active(a):
        return ActiveSet(jnp.asarray(a > 0), jnp.asarray(upper), jnp.asarray(lower))

    a0 = np.array([1, 1, 0, 0, 1, 0, 1, 0, 0], float)
    base = ReducedKKT.build(H, constraints, active(a0), reusable=True).factor
    r = rng.standard_normal(n + p + m + n)
    rhs = KKTVector(*map(jnp.asarray, np.split(r, [n, n + p, n + p + m])))
    for changes in [{}, {2: 1}, {4: 0}, {3: 1, 0: 0}, {3: 1, 0: 0, 6: 0}]:
        a = a0.copy()
        a[list(changes)] = list(changes.values())
        w = ReducedKKT.nearby(H, constraints, active(a), base)._solve_regularized(rhs)
        want = np.linalg.solve(_regularized_K(P, A, G, a, (lower | upper).astype(float), 1e-2), r)
        got = np.concatenate([np.asarray(v) for v in w])
        # measured ≤ 6.6e-15 of the largest entry; with (1 − δ) read as 1, 3e-4 and more
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-13 * np.abs(want).max(), err_msg=str(changes))


def test_a_woodbury_update_that_does_not_refine_to_round_off_is_replaced(monkeypatch):
    """The guard of a reused factor: with the acceptance floor at 0 no update is kept, and
    the second round factors anew (no slot in use) to the same point."""
    data, (x, _, _), objective, constraints, z = _missing_one_active_row()
    monkeypatch.setitem(_kkt.STALL_FLOOR, 8, 0.0)  # read at trace time: trace a function of its own
    candidate, finite, system = jax.jit(lambda *args: _polish(*args, True))(objective, constraints, z)
    assert bool(finite) and _used_slots(system) == 0
    np.testing.assert_allclose(candidate.x, x, rtol=0, atol=1e-9)  # measured 1.3e-11


def _small_spd_batch():
    rng = np.random.default_rng(0)
    M = rng.standard_normal((3, 6, 6))
    return M @ np.swapaxes(M, 1, 2) + 6 * np.eye(6), rng.standard_normal((3, 6))


@pytest.mark.parametrize("n", [_linalg.GRAM_SLABS_FROM - 1, _linalg.GRAM_SLABS_FROM + 5])
def test_a_weighted_gram_matrix_by_slabs_equals_the_whole_product(n):
    """From ``GRAM_SLABS_FROM`` on, a Gram matrix Mᵀ diag(w) M is multiplied by row slabs on
    and above the diagonal and transposed into the rest (n 2005: four slabs of 502, the
    last of 499). It equals the whole product to round-off, alone and under vmap; below the
    threshold it is the whole product itself (one matrix product)."""
    rng = np.random.default_rng(4)
    M = rng.standard_normal((2, 70, n))
    w = rng.uniform(0.0, 2.0, (2, 70))
    expected = np.swapaxes(M, 1, 2) @ (w[..., None] * M)
    gram = jax.jit(lambda M, w: _linalg.Dense(M).weighted_gram(w))
    got = np.asarray(gram(M[0], w[0]))
    np.testing.assert_allclose(got, expected[0], rtol=0, atol=1e-12)  # measured 2.8e-14
    batched = np.asarray(jax.jit(jax.vmap(lambda M, w: _linalg.Dense(M).weighted_gram(w)))(M, w))
    np.testing.assert_allclose(batched, expected, rtol=0, atol=1e-12)  # measured 2.8e-14
    jaxpr = jax.make_jaxpr(lambda M, w: _linalg.Dense(M).weighted_gram(w))(M[0], w[0])
    products = sum(eqn.primitive.name == "dot_general" for eqn in jaxpr.jaxpr.eqns)
    assert products == (_linalg.GRAM_SLABS if n >= _linalg.GRAM_SLABS_FROM else 1)


def test_a_cholesky_factor_solves_exactly_alone_and_under_vmap():
    H, rhs = _small_spd_batch()
    solve = jax.jit(jax.vmap(lambda H, r: Cholesky.factor(H).solve(r)))
    expected = np.linalg.solve(H, rhs[..., None])[..., 0]
    np.testing.assert_allclose(solve(H, rhs), expected, rtol=0, atol=1e-14)  # measured 5.6e-17
    np.testing.assert_allclose(jax.jit(lambda H, r: Cholesky.factor(H).solve(r))(H[0], rhs[0]), expected[0],
                               rtol=0, atol=1e-14)


@reads_pinned_layouts
def test_a_cholesky_factor_is_kept_column_major_as_lapack_reads_it():
    """``_linalg.Cholesky`` leaves its factorisation column-major, the layout of LAPACK's
    triangular solves, whole or by blocks: a loop that carries the factor hands it to them
    without an n × n transposing copy (XLA otherwise keeps loop state row-major and
    converts at every termination check). Checked on the compiled layouts (the copies are
    not visible in the results), for one matrix and under vmap."""
    H, _ = _small_spd_batch()
    factor = lambda H: Cholesky.factor(H).L  # noqa: E731
    assert output_layouts(factor, H[0]) == [(1, 0)]
    assert output_layouts(jax.vmap(factor), H) == [(0, 2, 1)]
    blocked = output_layouts(Cholesky.factor, _spd(_LARGE, 1e3, 1))
    assert len(blocked) == 5 and set(blocked) == {(1, 0)}  # three diagonal blocks, two panels


def _spd(n: int, condition: float, seed: int, dtype=np.float64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    M = (Q * np.logspace(0, -np.log10(condition), n)) @ Q.T
    return (0.5 * (M + M.T)).astype(dtype)


_LARGE = 600  # three blocks: 256, 256, 88 (``_linalg._block_edges``)


@cpu_only
def test_a_large_cholesky_factor_is_kept_and_solved_by_blocks():
    """On CPU from ``BLOCKED_SOLVE_FROM`` on, ``Cholesky`` keeps LAPACK's factor by column
    blocks and solves block by block (``benchmarks/results/blocked_cholesky.md``). Its
    solves match NumPy's to round-off for one and several right-hand sides, alone and under
    vmap, in float64 and float32; a matrix that is not positive definite gives NaN, not a
    wrong number. (Other backends solve with the whole factor: ``tests/test_linalg_fallback.py``.)"""
    assert _linalg.BLOCKED_SOLVE_FROM <= _LARGE
    assert [e - s for s, e in _linalg._block_edges(_LARGE)] == [256, 256, 88]
    H = np.stack([_spd(_LARGE, 1e6, 0), _spd(_LARGE, 1e3, 1)])
    rhs = np.random.default_rng(2).standard_normal((2, _LARGE, 3))
    expected = np.linalg.solve(H, rhs)

    def relative_error(x, reference_x):
        return np.max(np.abs(np.asarray(x, np.float64) - reference_x)) / np.max(np.abs(reference_x))

    solve = jax.jit(lambda H, r: Cholesky.factor(H).solve(r))
    factor = Cholesky.factor(jnp.asarray(H[0]))
    assert factor.L is None and len(factor.diagonal) == 3 and len(factor.panels) == 2
    # condition 1e6: measured 1.9e-11
    assert relative_error(solve(H[0], rhs[0]), expected[0]) < 1e-9
    assert relative_error(solve(H[0], rhs[0, :, 0]), expected[0, :, 0]) < 1e-9  # measured 2.2e-11
    batched = jax.jit(jax.vmap(lambda H, r: Cholesky.factor(H).solve(r)))(H, rhs)
    assert relative_error(batched[1], expected[1]) < 3e-12  # measured 2.7e-14 (condition 1e3)
    single = np.stack([_spd(_LARGE, 1e3, 1, np.float32)])
    x32 = jax.jit(jax.vmap(lambda H, r: Cholesky.factor(H).solve(r)))(single, rhs[1:].astype(np.float32))
    assert x32.dtype == jnp.float32
    assert relative_error(x32[0], expected[1]) < 1e-3  # measured 1.1e-5
    indefinite = _spd(_LARGE, 1e3, 3)
    indefinite[-1, -1] = -1.0  # the factorisation fails at its last column
    assert np.all(np.isnan(np.asarray(solve(indefinite, rhs[0]))))


def test_a_large_normal_matrix_is_built_from_the_x_update_gram_by_its_smaller_row_set():
    """From ``GATHERED_GRAM_FROM`` on, polishing builds the normal matrix
    H + diag(d) + (AᵀA + G_aᵀG_a)/δ from the x-update's C = AᵀA + GᵀG + diag(f), with the
    product of whichever row set (inactive, subtracted; or active, added) is at most half
    of G's rows. Both ways give the matrix that the products with every row give, alone and
    under vmap (where both branches run), bounds included; the factor built on it solves
    the reduced KKT system as the one built without C."""
    from altdiff_jax._kkt import GATHERED_GRAM_FROM, _gathered_normal_matrix, regularization
    from altdiff_jax._linalg import assemble
    from altdiff_jax._xupdate import constraint_gram

    n, p, m = _LARGE, 20, 60
    assert GATHERED_GRAM_FROM <= n
    rng = np.random.default_rng(4)
    M = rng.standard_normal((n, n)) / np.sqrt(n)
    H = Dense(jnp.asarray(M @ M.T))
    lb = jnp.asarray(np.where(rng.random(n) < 0.3, -1.0, -np.inf))
    ub = jnp.asarray(np.where(rng.random(n) < 0.3, 1.0, np.inf))
    constraints = Constraints(Dense(jnp.asarray(rng.standard_normal((p, n)))), jnp.asarray(rng.standard_normal(p)),
                              Dense(jnp.asarray(rng.standard_normal((m, n)))), jnp.asarray(rng.standard_normal(m)),
                              lb, ub)
    C = constraint_gram(constraints, jnp.float64)
    delta = regularization(jnp.float64)
    a_B = jnp.asarray((rng.random(n) < 0.1) & np.asarray(jnp.isfinite(lb) | jnp.isfinite(ub)), jnp.float64)
    diagonal = delta + a_B / delta
    masks = jnp.asarray(np.stack([rng.permutation(m) < 45, rng.permutation(m) < 10]), jnp.float64)  # 15 / 50 inactive

    def by_products(a):
        return assemble(H, diagonal, constraints.A, jnp.full((p,), 1 / delta), constraints.G, a / delta)

    def by_gram(a):
        return _gathered_normal_matrix(H, diagonal, constraints, a, delta, C)

    def relative_difference(x, y):
        return float(jnp.max(jnp.abs(x - y)) / jnp.max(jnp.abs(y)))

    for a in masks:
        assert relative_difference(jax.jit(by_gram)(a), by_products(a)) < 1e-14  # measured 5.7e-16, 1.3e-16
    assert relative_difference(jax.jit(jax.vmap(by_gram))(masks), jax.vmap(by_products)(masks)) < 1e-14  # 5.7e-16
    active = ActiveSet(masks[0] > 0, jnp.zeros(n, bool), a_B > 0)
    r = KKTVector(*(jnp.asarray(rng.standard_normal(k)) for k in (n, p, m, n)))
    with_gram = ReducedKKT.build(H, constraints, active, constraint_gram=C)
    without = ReducedKKT.build(H, constraints, active)
    assert (with_gram.factor.L is None) == _linalg.on_cpu()  # a blocked factor of the gathered matrix on CPU
    solved, expected = with_gram.solve(r), without.solve(r)
    assert max(relative_difference(x, y) for x, y in zip(solved, expected)) < 1e-12  # measured 1.4e-14
