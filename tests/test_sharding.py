"""Batches split across devices: ``sharded_vmap`` and ``solve_sharded``.

The checks on 8 devices run in a subprocess (``tests/sharding_checks.py``): the number of
simulated CPU devices is fixed when JAX starts, and this process keeps one. The tests
here check the argument handling on the one device of this process; the doctests of
``altdiff_jax/_sharding.py`` run ``solve_sharded`` and ``sharded_vmap`` on it.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh

from altdiff_jax._sharding import sharded_vmap

CHECKS = pathlib.Path(__file__).with_name("sharding_checks.py")


def test_eight_simulated_devices_match_unsharded():
    """Results, gradients, shardings, padding and statuses on 8 devices (see the script)."""
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env["XLA_FLAGS"] = " ".join(
        flag for flag in env.get("XLA_FLAGS", "").split() if "device_count" not in flag
    ) + " --xla_force_host_platform_device_count=8"
    done = subprocess.run(
        [sys.executable, str(CHECKS)], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, f"{CHECKS.name} failed:\n{done.stdout}\n{done.stderr[-6000:]}"
    assert "sharding checks passed" in done.stdout


def _lane(x, w, scale):
    return {"y": scale * jnp.tanh(x) @ w, "norm": jnp.sum(x * x)}


def test_in_axes_and_gradients_match_vmap():
    """Any batch axis, shared leaves, a dict output, and the gradient of a shared leaf."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((3, 5)))  # batch along axis 1
    w = jnp.asarray(rng.standard_normal((3, 2)))  # shared
    in_axes = (1, None, None)
    mapped = jax.jit(sharded_vmap(_lane, in_axes))
    expected = jax.vmap(_lane, in_axes)(x, w, 2.0)
    actual = mapped(x, w, 2.0)
    np.testing.assert_allclose(actual["y"], expected["y"], rtol=1e-14)  # measured 1.3e-16
    assert actual["y"].shape == (5, 2)

    def loss(map_fn, w):
        return jnp.sum(map_fn(_lane, in_axes)(x, w, 2.0)["y"] ** 2)

    np.testing.assert_allclose(
        jax.grad(lambda w: loss(sharded_vmap, w))(w), jax.grad(lambda w: loss(jax.vmap, w))(w), rtol=1e-14  # measured 0
    )


def test_named_mesh_axis():
    mesh = Mesh(np.array(jax.devices()[:1]).reshape(1, 1), ("data", "model"))
    out = sharded_vmap(lambda v: 2 * v, mesh=mesh, axis_name="data")(jnp.arange(3.0))
    np.testing.assert_array_equal(out, [0.0, 2.0, 4.0])


@pytest.mark.parametrize(
    "args, in_axes, kwargs, message",
    [
        ((jnp.ones(3), jnp.ones(4)), 0, {}, "one batch size"),
        ((jnp.ones(3),), None, {}, "at least one batched leaf"),
        ((jnp.ones(3),), 1, {}, "out of range"),
        ((jnp.ones(3), jnp.ones(3)), (0,), {}, "1 entries for 2 positional arguments"),
        (({"a": jnp.ones(3)},), ({"b": 0},), {}, "not a tree prefix"),
        ((jnp.ones(3),), 0, {"axis_name": "model"}, "does not name axes"),
    ],
)
def test_errors_are_clear(args, in_axes, kwargs, message):
    with pytest.raises(ValueError, match=message):
        sharded_vmap(lambda *a: a[0], in_axes, **kwargs)(*args)

