"""``_batching.is_batched``: what it reports under jit, vmap (flat and nested), grad and jacfwd.

``computed_where`` and ``on_needing_lanes`` are tested against the per-lane loop in
``tests/test_transforms.py``.
"""

import jax
import jax.numpy as jnp
import pytest

from altdiff_jax._batching import is_batched

x = jnp.linspace(0.1, 0.3, 3)
X = jnp.stack([x, 2 * x])  # 2 lanes
XX = jnp.stack([X, -X, 3 * X])  # 3 outer lanes of 2


def _reports(transform, *args):
    """``is_batched`` of each argument of ``f``, at each trace of ``f`` when ``transform(f)``
    runs on ``args`` (``f`` is new at each call: no cached trace hides it)."""
    seen = []

    def f(*xs):
        seen.append(tuple(is_batched(v) for v in xs))
        return sum(jnp.sum(jnp.sin(v)) for v in xs)

    transform(f)(*args)
    return seen


CASES = {
    "plain": (lambda f: f, (x,), (False,)),
    "jit": (jax.jit, (x,), (False,)),
    "vmap": (jax.vmap, (X,), (True,)),
    "vmap_axis_1": (lambda f: jax.vmap(f, in_axes=1), (X.T,), (True,)),
    "jit_of_vmap": (lambda f: jax.jit(jax.vmap(f)), (X,), (True,)),
    # in_axes=None: that argument is shared by the lanes, the other one is batched.
    "vmap_in_axes_none": (lambda f: jax.vmap(f, in_axes=(None, 0)), (x, X), (False, True)),
    # Nested: (outer only, inner only, both levels, neither level).
    "nested_vmap": (
        lambda f: jax.vmap(jax.vmap(f, in_axes=(None, 0, 0, None)), in_axes=(0, None, 0, None)),
        (XX[:, 0], X, XX, x), (True, True, True, False)),
    "grad": (jax.grad, (x,), (False,)),
    "vmap_of_grad": (lambda f: jax.vmap(jax.grad(f)), (X,), (True,)),
    # jacfwd vmaps over tangents only: still one problem, which must not take the batch path.
    "jacfwd": (jax.jacfwd, (x,), (False,)),
    "jacrev": (jax.jacrev, (x,), (False,)),
    "vmap_of_jacfwd": (lambda f: jax.vmap(jax.jacfwd(f)), (X,), (True,)),
    "jacfwd_of_vmap": (lambda f: jax.jacfwd(jax.vmap(f)), (X,), (True,)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_is_batched_reports_a_vmap_batch_of_its_arguments(name):
    transform, args, expected = CASES[name]
    assert _reports(transform, *args) == [expected]


def test_a_vmap_outside_a_jit_is_not_seen():
    """Documented limitation: ``jit`` traces the function unbatched before ``vmap`` batches
    the traced program, so the solve inside takes the unbatched path."""
    assert _reports(lambda f: jax.vmap(jax.jit(f)), X) == [(False,)]
    assert _reports(lambda f: jax.vmap(lambda v: jax.jit(f)(v)), X) == [(False,)]


def test_is_batched_looks_at_the_array_leaves_of_pytrees():
    """Any batched array leaf counts; ints, None and NumPy leaves are ignored; no leaves: False."""
    seen = []

    def f(tree):
        seen.append((is_batched(tree), is_batched(tree["shared"], tree["n"]), is_batched(tree["n"], None)))
        return tree["lane"]

    tree = {"shared": x, "lane": X, "n": 3}
    jax.vmap(f, in_axes=({"shared": None, "lane": 0, "n": None},))(tree)
    jax.vmap(f, in_axes=({"shared": None, "lane": None, "n": None},), axis_size=2)(tree)
    assert seen == [(True, False, False), (False, False, False)]
    assert is_batched() is False
    assert is_batched(jnp.asarray(X).__array__()) is False
