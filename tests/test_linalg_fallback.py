"""The experimental and backend-specific paths of ``altdiff_jax._linalg`` against the plain
JAX paths they fall back to, both run here on CPU.

On XLA's CPU backend (``_linalg.on_cpu``) factors are pinned column-major by the
experimental ``jax.experimental.layout.with_layout_constraint`` where this JAX has it
(``_linalg.LAYOUT_CONSTRAINTS``), and large ones are kept and solved by column blocks
(``_linalg.solves_by_blocks``). Without the layout API the same factors come unpinned;
on any other backend the whole-matrix ``jax.lax.linalg.cholesky`` runs, unpinned. Both
switches are read at trace time: each run below traces functions of its own.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import PAPER, case, linear_loss
from lapack_order import cpu_only, output_layouts, reads_pinned_layouts

import altdiff_jax as ad
from altdiff_jax import _linalg
from altdiff_jax._linalg import Cholesky

WHOLE, BLOCKED = 200, 600  # below and past BLOCKED_SOLVE_FROM


def _spd(n: int, seed: int, batch: tuple = ()) -> np.ndarray:
    X = np.random.default_rng(seed).standard_normal((*batch, n, n))
    return X @ np.swapaxes(X, -1, -2) / n + np.eye(n)


def _results() -> dict:
    """Cholesky solves (whole and blocked orders; alone, several right-hand sides, and under
    vmap) and a solve of the paper's QP with its gradient, traced afresh."""
    out = {}
    for n in (WHOLE, BLOCKED):
        H, rhs = _spd(n, n), np.random.default_rng(1).standard_normal((n, 3))
        out[f"solve {n}"] = jax.jit(lambda H, r: Cholesky.factor(H).solve(r))(H, rhs)
        batch, rhs = _spd(n, n + 1, (2,)), np.random.default_rng(2).standard_normal((2, n))
        out[f"vmap {n}"] = jax.jit(jax.vmap(lambda H, r: Cholesky.factor(H).solve(r)))(batch, rhs)
    _, problem, _ = case(*PAPER)
    g = jnp.linspace(-1.0, 1.0, PAPER[1])
    (_, solution), grads = jax.jit(jax.value_and_grad(linear_loss, has_aux=True))(problem, g, ad.Options())
    out["paper"] = (solution[:4], solution.info.iterations, solution.info.status, grads)
    return out


def _factor_layouts(n: int) -> list:
    return output_layouts(lambda H: Cholesky.factor(H), _spd(n, 0))


@cpu_only
@pytest.mark.skipif(not _linalg.LAYOUT_CONSTRAINTS, reason="this JAX lacks the layout API: only the fallback runs")
def test_without_the_layout_api_the_results_are_the_same(monkeypatch):
    """``LAYOUT_CONSTRAINTS`` off (a JAX without ``with_layout_constraint``): every result is
    the pinned path's (measured: bit for bit)."""
    pinned = _results()
    monkeypatch.setattr(_linalg, "LAYOUT_CONSTRAINTS", False)
    chex.assert_trees_all_close(_results(), pinned, rtol=1e-15, atol=0)  # measured 0


@reads_pinned_layouts
def test_without_the_layout_api_the_factors_are_unpinned(monkeypatch):
    """The switch the test above turns: with ``LAYOUT_CONSTRAINTS`` the factors, whole and by
    blocks, are column-major; without it they leave in XLA's default row-major layout."""
    assert _linalg.LAYOUT_CONSTRAINTS
    assert set(_factor_layouts(WHOLE)) == set(_factor_layouts(BLOCKED)) == {(1, 0)}
    monkeypatch.setattr(_linalg, "LAYOUT_CONSTRAINTS", False)
    assert set(_factor_layouts(WHOLE)) == set(_factor_layouts(BLOCKED)) == {(0, 1)}


@cpu_only  # elsewhere this path is the default one
def test_off_cpu_the_plain_jax_path_runs(monkeypatch):
    """``on_cpu`` false (a GPU or TPU): the whole-matrix factor at every order, in XLA's
    layouts, with the results of the CPU path to round-off (measured: 5.4e-16 of the
    largest entry for the blocked order, bit for bit for the others)."""
    reference = _results()
    monkeypatch.setattr(_linalg, "on_cpu", lambda: False)
    factor = Cholesky.factor(jnp.asarray(_spd(BLOCKED, 0)))
    assert factor.L is not None and factor.diagonal == ()
    assert _factor_layouts(BLOCKED) == [(0, 1)]
    plain = _results()
    for key, value in reference.items():
        for got, want in zip(jax.tree_util.tree_leaves(plain[key]), jax.tree_util.tree_leaves(value)):
            scale = np.max(np.abs(want), initial=0.0)
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-14 * scale, err_msg=key)


def test_the_layout_api_is_found_where_jax_has_it():
    """The check behind ``LAYOUT_CONSTRAINTS`` finds the API from JAX 0.7 (``Layout`` of a
    device-local layout; JAX 0.6 has ``with_layout_constraint`` with another ``Layout``
    and runs the fallback), so the pinned path is not lost silently."""
    assert _linalg.LAYOUT_CONSTRAINTS == (jax.__version_info__ >= (0, 7, 0))
