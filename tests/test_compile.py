"""Compilation: matrices closed over by a jitted function are not folded into new
constants, and each factorisation is compiled once."""

import collections
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import altdiff_jax as ad


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="reads the CPU compiler's optimised HLO text")
def test_closed_over_matrices_are_not_constant_folded():
    # A layer that keeps P, A, G fixed closes over them: they are compile-time constants.
    # Without the barrier at the solver's entry XLA evaluated the set-up on them while
    # compiling (equilibrated copies, Gram matrices): 8-9 folded constants of each matrix's
    # shape at this size. The compiled program must hold each matrix once.
    n, m, p = 40, 20, 10
    rng = np.random.default_rng(0)
    M = rng.standard_normal((n, n))
    P, A, G = (jnp.asarray(x) for x in (M.T @ M, rng.standard_normal((p, n)), rng.standard_normal((m, n))))
    q = jnp.asarray(rng.standard_normal(n))
    b, h = A @ jnp.ones(n), G @ jnp.ones(n) + 1.0

    def loss(q, b, h):
        return ad.solve(ad.QP(P, q, A, b, G, h)).x.sum()

    text = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(q, b, h).compile().as_text()
    dtype = "f64" if P.dtype == jnp.float64 else "f32"
    constants = collections.Counter(re.findall(rf"= ({dtype}\[[0-9,]+\])\S* constant\(", text))
    for shape in ((n, n), (p, n), (m, n)):
        assert constants[f"{dtype}[{shape[0]},{shape[1]}]"] == 1, constants

    # The same gradient as with the matrices passed as arguments.
    def loss_of_all(P, q, A, b, G, h):
        return ad.solve(ad.QP(P, q, A, b, G, h)).x.sum()

    closed = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(q, b, h)
    passed = jax.jit(jax.grad(loss_of_all, argnums=(1, 3, 5)))(P, q, A, b, G, h)
    for c, a in zip(closed, passed):
        np.testing.assert_allclose(c, a, rtol=1e-10, atol=1e-12)


def _compiled_solve_and_gradient(n: int, m: int, p: int) -> str:
    """The optimised HLO text of jit(grad) of a dense float64 QP's solve."""
    rng = np.random.default_rng(0)
    M = rng.standard_normal((n, n))
    problem = ad.QP(*(jnp.asarray(x) for x in (M.T @ M, rng.standard_normal(n), rng.standard_normal((p, n)),
                                                rng.standard_normal(p), rng.standard_normal((m, n)), np.ones(m))))
    return jax.jit(jax.grad(lambda problem: ad.solve(problem).x.sum())).lower(problem).compile().as_text()


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="counts the CPU compiler's LAPACK calls")
def test_each_factorisation_is_compiled_once():
    # One dense float64 QP below _solve.REUSABLE_FACTOR_SIZE: the compiled solve + gradient
    # holds four Cholesky factorisations, the x-update's, its refactorisation when ρ changes,
    # polishing's (every round, the first included, is one traced round) and the pullback's
    # for an unpolished solution; and no LU (the Woodbury update's capacitance, compiled only
    # from that size on).
    n, m, p = 30, 12, 6
    text = _compiled_solve_and_gradient(n, m, p)
    calls = collections.Counter(re.findall(r'custom_call_target="([^"]+)"', text))
    assert sum(v for k, v in calls.items() if "potrf" in k) == 4, calls
    assert not any("getrf" in k for k in calls), calls


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="reads the CPU compiler's optimised HLO text")
def test_the_pullbacks_unpolished_factorisation_runs_only_inside_its_loop():
    # The pullback factors the KKT system itself only for an unpolished solution, inside a
    # loop that runs at most once (_batching.computed_where). Its normal matrix
    # H + δI + AᵀA/δ + … depends on nothing that loop changes unless H and A pass an
    # optimisation barrier with a value it does: closed over, XLA hoisted it out of the loop
    # into the program's entry, where it ran on every call (an n × n sum here; at large n
    # also the Gram matrix AᵀA). No n × n work of that loop may sit in the entry.
    n, m, p = 40, 20, 10
    text = _compiled_solve_and_gradient(n, m, p)
    entry = text[text.index("\nENTRY "):]
    entry = entry[:entry.index("\n}")]
    square = rf"= f64\[{n},{n}\]\S* [a-z-]+\([^\n]*op_name=\"[^\"]*transpose\(jvp\(\)\)/while/body/"
    assert not re.findall(square, entry)
    assert re.findall(square, text)  # compiled, inside the loop


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="reads the CPU compiler's optimised HLO text")
def test_a_batch_sharing_its_matrices_keeps_one_copy_of_them():
    # A vmapped batch whose lanes share P, A and G factors and differentiates with one copy
    # of each: no value of the compiled program holds a per-lane copy of A or G (a loop
    # that carried them as operands under a batched predicate would broadcast them).
    lanes, n, m, p = 5, 40, 20, 10
    rng = np.random.default_rng(0)
    M = rng.standard_normal((n, n))
    P, A, G = (jnp.asarray(x) for x in (M.T @ M, rng.standard_normal((p, n)), rng.standard_normal((m, n))))
    q, b, h = (jnp.asarray(rng.standard_normal((lanes, k))) for k in (n, p, m))

    def loss(q, b, h):
        return ad.solve(ad.QP(P, q, A, b, G, jnp.abs(h) + 1.0)).x.sum()

    text = jax.jit(jax.vmap(jax.grad(loss, argnums=(0, 1, 2)))).lower(q, b, h).compile().as_text()
    for rows in (p, m):
        assert not re.findall(rf"= f64\[{lanes},{rows},{n}\]", text)


@pytest.mark.parametrize("length", [0, 1, 32, 33, 100, 1025, 10_000, 40_000])
def test_folded_reductions_equal_numpys_along_either_axis(length):
    # _linalg.max_over, all_over, any_over and count_over fold a long axis into short ones
    # (padded with the reduction's identity) on CPU, up to FOLDED_ENTRIES entries (40 000
    # here is beyond it: the plain reduction); the result is numpy's exactly, along the rows
    # or the columns, for an empty axis, with all-negative values (the padding must not
    # win), rows all True or all False, and under vmap. (No NaN: see max_over.)
    from altdiff_jax._linalg import all_over, any_over, count_over, max_over
    rng = np.random.default_rng(length)
    values = rng.standard_normal((6, length))
    values[1] = -np.abs(values[1]) - 1.0
    flags = values > 1.0
    flags[3], flags[4] = True, False
    for axis, v, f in ((1, values, flags), (0, values.T, flags.T)):
        np.testing.assert_array_equal(jax.jit(lambda v: max_over(jnp.abs(v), axis))(v),
                                      np.max(np.abs(v), axis=axis, initial=0.0))
        np.testing.assert_array_equal(jax.jit(lambda v: max_over(v, axis, initial=-np.inf))(v),
                                      np.max(v, axis=axis, initial=-np.inf))
        np.testing.assert_array_equal(jax.jit(lambda v: -max_over(-v, axis, initial=-np.inf))(v),
                                      np.min(v, axis=axis, initial=np.inf))
        np.testing.assert_array_equal(jax.jit(lambda f: all_over(f, axis))(f), np.all(f, axis=axis))
        np.testing.assert_array_equal(jax.jit(lambda f: any_over(f, axis))(f), np.any(f, axis=axis))
        np.testing.assert_array_equal(jax.jit(lambda f: count_over(f, axis))(f), np.sum(f, axis=axis))
    batched = jax.jit(jax.vmap(lambda row: max_over(row, initial=-np.inf)))(values)
    np.testing.assert_array_equal(batched, np.max(values, axis=1, initial=-np.inf))


@pytest.mark.parametrize("length", [100, 1025, 10_000, 40_000])
def test_a_norm_reports_a_nan_entry_as_infinite(length):
    # XLA's CPU reductions can drop a NaN (seen from a few thousand entries folded, about
    # 10 000 plain): the solver's norms count one as +inf, so a NaN residual is never
    # reported finite.
    from altdiff_jax._iterate import inf_norm, inf_norms
    v = np.ones(length)
    v[length // 2] = np.nan
    assert np.isinf(jax.jit(inf_norm)(v))
    norms = jax.jit(lambda v: inf_norms(v, [v[:10], v], v[:10]))(v)
    np.testing.assert_array_equal(norms, [np.inf, np.inf, 1.0])


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="reads the CPU compiler's optimised HLO text")
def test_a_folded_reduction_compiles_to_one_kernel():
    # XLA's CPU compiler rewrites a reduction over more than 32 entries into a windowed
    # reduction and a second reduction: three kernels with the one that computes its
    # operand, each paid in compile time. The folded one is one kernel, with no window.
    from altdiff_jax._linalg import REDUCTION_WIDTH, max_over
    v = jnp.ones(100)
    plain = jax.jit(lambda v: jnp.max(jnp.abs(2 * v))).lower(v).compile().as_text()
    folded = jax.jit(lambda v: max_over(jnp.abs(2 * v))).lower(v).compile().as_text()
    assert v.shape[0] > REDUCTION_WIDTH
    assert "reduce-window(" in plain and plain.count(" fusion(") == 3  # the rewrite this avoids
    assert "reduce-window(" not in folded and folded.count(" fusion(") == 1
