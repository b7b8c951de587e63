"""API paths that used to fail silently (issue 12), and float32 accuracy (issue 11).

Each test here failed on the code before the fix it guards: a NaN warm start of the
entropy layer, zeros from ``jax.grad`` through ``vjp``/``jvp``/``jacobians``, ``KeyError``
for half-precision data, a recompilation when ``tol`` went from None to a number, an
unrelated ``TypeError`` rewritten into the forward-mode message, ``jacobians`` silently
ignoring ``Options.differentiation``; and float32 solves that spun to ``max_iter`` at a
tolerance they can reach, or at one they cannot.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import PAPER, SMALL, case, cosine, reference_gradients, relative_error, to_qp

import altdiff_jax as ad

SMALL_N = 8


def _small_qp(dtype=jnp.float64) -> ad.QP:
    data, _, _ = case(*SMALL)
    return to_qp(data, dtype)


def test_softmax_warm_start_with_infinite_upper_bounds_stays_finite():
    y = jnp.linspace(-1.0, 1.0, SMALL_N)
    u = jnp.full(SMALL_N, jnp.inf).at[0].set(0.05)
    layer = jax.jit(ad.constrained_softmax)
    cold = layer(y, u)
    warm = layer(y + 1e-3, u, None, cold)  # the previous solution as init
    assert int(warm.info.status) == ad.Status.SOLVED
    assert np.isfinite(np.asarray(warm.x)).all()
    np.testing.assert_allclose(warm.x, layer(y + 1e-3, u).x, rtol=0, atol=1e-14)  # measured 6e-17


@pytest.mark.parametrize("entry", ["vjp", "jvp", "jacobians"])
def test_grad_through_the_explicit_derivatives_raises(entry):
    problem = _small_qp()

    def through(q):
        pr = problem._replace(q=q)
        if entry == "vjp":
            return jnp.sum(ad.vjp(pr, jnp.ones(12))[1].q)
        if entry == "jvp":
            return jnp.sum(ad.jvp(pr, ad.QP(P=None, q=jnp.ones(12)))[1])
        return jnp.sum(ad.jacobians(pr)[1]["q"])

    with pytest.raises(TypeError, match="not itself differentiable"):
        jax.grad(through)(problem.q)


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
def test_half_precision_data_is_a_value_error_naming_the_argument(dtype):
    problem = _small_qp()._replace(q=jnp.ones(12, dtype))
    with pytest.raises(ValueError, match="q"):
        ad.solve(problem)


def test_integer_x0_of_solve_convex_is_a_value_error():
    with pytest.raises(ValueError, match="x0 must be a floating vector"):
        ad.solve_convex(lambda x, c: jnp.sum((x - c) ** 2), jnp.ones(3), x0=jnp.arange(3))


@pytest.mark.parametrize("entry", ["solve", "vjp", "jvp", "jacobians", "solve_convex", "softmax", "sharded"])
def test_every_entry_point_rejects_options_of_another_type(entry):
    problem, settings = _small_qp(), {"tol": 1e-6}
    calls = dict(
        solve=lambda: ad.solve(problem, settings),
        vjp=lambda: ad.vjp(problem, jnp.ones(12), settings),
        jvp=lambda: ad.jvp(problem, ad.QP(P=None, q=jnp.ones(12)), settings),
        jacobians=lambda: ad.jacobians(problem, settings),
        solve_convex=lambda: ad.solve_convex(lambda x, c: jnp.sum((x - c) ** 2), jnp.ones(3), x0=jnp.zeros(3),
                                              options=settings),
        softmax=lambda: ad.constrained_softmax(jnp.ones(3), jnp.ones(3), settings),
        sharded=lambda: ad.solve_sharded(problem, in_axes=None, options=settings),
    )
    with pytest.raises(ValueError, match="options must be an altdiff_jax.Options, got dict"):
        calls[entry]()


def test_tol_none_then_a_number_reuses_the_compiled_solve():
    solve = jax.jit(ad.solve)
    problem = _small_qp()
    solve(problem, ad.Options())
    size = solve._cache_size()
    solve(problem, ad.Options(tol=1e-8))
    solve(problem, ad.Options(tol=1e-3))
    assert solve._cache_size() == size


# A TypeError of JAX's own that names custom_vjp, as the forward-mode error does: only the
# forward-mode error is rewritten.
_UNRELATED = ("Custom VJP bwd rule must produce an output with the same container (pytree) "
              "structure as the args tuple of the primal function")


def _entry_call(entry: str, monkeypatch, fail):
    """A call of ``entry`` in which ``fail()`` runs inside the entry point's ``try`` around its
    ``custom_vjp`` solve: by the solve itself for ``solve`` and ``sparsemax`` (monkeypatched,
    traced afresh: no jit), by the user's objective for ``solve_convex``."""
    from altdiff_jax import _layers, _solve

    if entry == "solve":
        monkeypatch.setattr(_solve, "solve_qp", lambda *args: fail())
        return lambda: ad.solve(_small_qp())
    if entry == "sparsemax":
        monkeypatch.setattr(_layers, "solve_qp", lambda *args: fail())
        return lambda: ad.sparsemax(jnp.ones(3))
    return lambda: ad.solve_convex(lambda x, theta: fail(), jnp.ones(3), x0=jnp.zeros(3))


@pytest.mark.parametrize("entry", ["solve", "sparsemax", "solve_convex"])
def test_unrelated_type_errors_are_not_rewritten(entry, monkeypatch):
    """Each entry point rewrites JAX's forward-mode error through its custom_vjp into a
    pointer to the forward-mode entry points (``test_forward_mode_points_to_jvp``); any
    other TypeError raised inside the solve reaches the caller as it was raised: the same
    exception object, its message unchanged, even one that names custom_vjp."""
    raised = []

    def fail():
        raised.append(TypeError(_UNRELATED))
        raise raised[-1]

    call = _entry_call(entry, monkeypatch, fail)
    with pytest.raises(TypeError) as error:
        call()
    assert len(raised) == 1 and error.value is raised[0]
    assert str(error.value) == _UNRELATED


@pytest.mark.parametrize("entry, pointer", [
    ("solve", r"altdiff_jax.solve is reverse-mode .* altdiff_jax.jvp\(problem, tangents\)"),
    ("sparsemax", r"altdiff_jax.sparsemax is reverse-mode differentiable only"),
    ("solve_convex", r"altdiff_jax.solve_convex is reverse-mode .* use altdiff_jax.jvp"),
])
def test_forward_mode_points_to_jvp(entry, pointer):
    """JAX's forward-mode error through an entry point's custom_vjp is rewritten, chained to
    JAX's own."""
    calls = dict(
        solve=lambda q: ad.solve(_small_qp()._replace(q=q)).x,
        sparsemax=lambda y: ad.sparsemax(y).x,
        solve_convex=lambda t: ad.solve_convex(lambda x, c: jnp.sum((x - c) ** 2), t, x0=jnp.zeros(12)).x,
    )
    with pytest.raises(TypeError, match=pointer) as error:
        jax.jvp(calls[entry], (jnp.ones(12),), (jnp.ones(12),))
    assert "can't apply forward-mode autodiff (jvp) to a custom_vjp function" in str(error.value.__cause__)


@pytest.mark.parametrize("strategy", ["adjoint", "kkt"])
def test_jacobians_rejects_other_strategies(strategy):
    with pytest.raises(ValueError, match="differentiation"):
        ad.jacobians(_small_qp(), ad.Options(differentiation=strategy))


# ---------------------------------------------------------------- float32 (issue 11)

_f32_grad = jax.jit(jax.value_and_grad(
    lambda problem, g, options: (lambda s: (s.x @ g, s))(ad.solve(problem, options)), has_aux=True))


def test_float32_reaches_a_reachable_tolerance_with_an_accurate_gradient():
    # The paper's n 120 QP: before, float32 at tol 1e-5 ran all 10,000 iterations.
    g, expected = reference_gradients(PAPER)
    data = case(*PAPER)[0]
    for tol in (1e-4, 1e-5):
        (_, solution), grads = _f32_grad(to_qp(data, jnp.float32), jnp.asarray(g, jnp.float32), ad.Options(tol=tol))
        assert int(solution.info.status) == ad.Status.SOLVED, tol
        assert int(solution.info.iterations) <= 200, tol  # measured 30–40
        for leaf in "PqAbGh":
            # measured: 1 − cosine ≤ 3.7e-8, relative error ≤ 6.1e-7 (float32 round-off)
            assert cosine(getattr(grads, leaf), expected[leaf]) >= 1 - 1e-6, (tol, leaf)
            assert relative_error(getattr(grads, leaf), expected[leaf]) <= 3e-5, (tol, leaf)


def test_float32_below_its_reach_stops_early_as_stalled():
    data = case(*PAPER)[0]
    options = ad.Options(tol=1e-9, polish=False)
    g = jnp.ones(PAPER[1], jnp.float32)
    (_, solution), grads = _f32_grad(to_qp(data, jnp.float32), g, options)
    assert int(solution.info.status) == ad.Status.STALLED
    assert int(solution.info.iterations) < 2000  # far from max_iter = 10,000
    assert np.isfinite(np.asarray(grads.q)).all() and np.abs(np.asarray(grads.q)).max() > 0
    assert ad.Status.STALLED.message.startswith("the residuals stalled")
