"""Checks of ``solve_sharded`` on 8 simulated CPU devices, run in a process of their own.

``XLA_FLAGS=--xla_force_host_platform_device_count=8`` is read once, when JAX starts, so
``tests/test_sharding.py`` runs this script as a subprocess and the rest of the suite
keeps its single device. Run it directly with ``python tests/sharding_checks.py``.

One batch of 16 QPs sharing P, A, G (q, b, h batched), 2 lanes per device, with an
infeasible lane (rows g and −g of G, both with h = −1) and two lanes whose unconstrained
minimiser lies far outside the feasible set (slow for some engines), so that lanes stop
at different iterations, under ``Options(tol=1e-10)`` in float64. Checked against the
unsharded ``jit(vmap(solve))`` of the same batch on one device:

* per-device loops (``solve_sharded``): equal results and gradients of all six leaves,
  outputs and batched gradients sharded over the mesh, no collective in the loop;
* the same for a batch of 13 lanes (padded to 16 inside, masked and cut);
* plain ``jit(vmap(solve))`` on sharded inputs: equal results (its loop stops on a global
  all-reduce, which is checked too);
* per-lane statuses, iterations and solutions equal those of each lane solved alone;
* the batch with P, A, G as BCOO matrices (the sparse path): ``solve_sharded`` equals the
  unsharded ``vmap`` to the conjugate-gradient solves' accuracy, solutions and gradients
  of q and h.

Two lanes per device: with jaxlib 0.10.2 on a 2-core host, about 12 lanes of n = 16 per
device deadlock a program with a collective (see ``altdiff_jax/_sharding.py``).
"""

from __future__ import annotations

import os
import re
import sys
import time

# 8 simulated devices; LLVM optimisation level 0 halves the compile time of these small
# programs (every program compared here is compiled with the same flags).
for flag in ("--xla_force_host_platform_device_count=8", "--xla_backend_optimization_level=0"):
    if flag.split("=")[0] not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flag).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import Mesh, NamedSharding, PartitionSpec  # noqa: E402

jax.config.update("jax_enable_x64", True)

import altdiff_jax as ad  # noqa: E402
from altdiff_jax._sharding import solve_sharded  # noqa: E402

DEVICES = 8
N, P_ROWS, M_ROWS, BATCH, CUT = 10, 2, 8, 16, 13
INFEASIBLE, SLOW = (3,), (5, 13)
OPTIONS = ad.Options(tol=1e-10, max_iter=20_000)
TOL = 1e-12
AXES = ad.QP(P=None, q=0, A=None, b=0, G=None, h=0)
START = time.perf_counter()


def log(message: str) -> None:
    print(f"[{time.perf_counter() - START:6.1f} s] {message}", flush=True)


def batch_problem() -> ad.QP:
    rng = np.random.default_rng(0)
    M = rng.standard_normal((N, N))
    A = rng.standard_normal((P_ROWS, N))
    G = rng.standard_normal((M_ROWS, N))
    G[1] = -G[0]
    P = M.T @ M
    q, b, h = [], [], []
    for lane in range(BATCH):
        lane_rng = np.random.default_rng(100 + lane)
        x0, q_lane = lane_rng.standard_normal(N), lane_rng.standard_normal(N)
        h_lane = G @ x0 + lane_rng.uniform(0.0, 1.0, M_ROWS)
        if lane in SLOW:  # unconstrained minimiser far outside the feasible set
            q_lane = -P @ (x0 + 10.0 * lane_rng.standard_normal(N))
        if lane in INFEASIBLE:  # gᵀx <= −1 and −gᵀx <= −1
            h_lane[:2] = -1.0
        q.append(q_lane)
        b.append(A @ x0)
        h.append(h_lane)
    arrays = dict(P=P, q=np.array(q), A=A, b=np.array(b), G=G, h=np.array(h))
    return ad.QP(**{k: jnp.asarray(v) for k, v in arrays.items()})


def lane(problem: ad.QP, i: int) -> ad.QP:
    return jax.tree_util.tree_map(lambda leaf, axis: leaf if axis is None else leaf[i], problem, AXES,
                                  is_leaf=lambda x: x is None)


def loss_of(solve_batch):
    def loss(problem, weights):
        sol = solve_batch(problem)
        wx, wnu = weights
        return jnp.sum(wx * sol.x) + jnp.sum(wnu * sol.nu), sol
    return jax.jit(jax.value_and_grad(loss, has_aux=True))


def compiled(fn, *args):
    """The executable, compiled once; its HLO text for the loop checks."""
    executable = fn.lower(*args).compile()
    return executable, executable.as_text()


def loop_condition_has_all_reduce(hlo: str) -> bool:
    """Whether the condition computation of any ``while`` in the HLO holds an all-reduce."""
    conditions = set(re.findall(r"condition=%?([\w.\-]+)", hlo))
    assert conditions, "no while loop in the HLO"
    blocks = re.split(r"\n(?=\S)", hlo)
    found = False
    for block in blocks:
        header = block.split("(", 1)[0].replace("%", "").split()
        if header and header[-1] in conditions and "all-reduce" in block:
            found = True
    return found


def max_error(actual, expected) -> float:
    """Largest normwise difference ``max|a − e| / max(1, max|e|)`` over the leaves."""
    def error(a, e):
        a, e = np.asarray(a, np.float64), np.asarray(e, np.float64)
        return float(np.max(np.abs(a - e)) / max(1.0, np.max(np.abs(e)))) if e.size else 0.0
    return max(jax.tree_util.tree_leaves(jax.tree_util.tree_map(error, actual, expected)), default=0.0)


def check_equal(name: str, actual, expected, exact_fields=("status", "iterations")) -> None:
    (value_a, sol_a), grads_a = actual
    (value_e, sol_e), grads_e = expected
    for field in exact_fields:
        a, e = getattr(sol_a.info, field), getattr(sol_e.info, field)
        assert np.array_equal(a, e), f"{name}: info.{field} {a} != {e}"
    # An infeasible lane's iterates diverge along its certificate: they are compared by
    # status only (its gradient is zero, and the loss gives it zero weight).
    solved = np.asarray(sol_e.info.status) == ad.Status.SOLVED
    sol_a, sol_e = (
        jax.tree_util.tree_map(lambda v: np.where(solved.reshape((-1,) + (1,) * (np.ndim(v) - 1)), v, 0), sol)
        for sol in (sol_a, sol_e)
    )
    errors = {"loss": max_error(value_a, value_e)}
    errors.update({f"sol.{k}": max_error(a, e) for k, a, e in zip(sol_a._fields, sol_a, sol_e) if k != "info"})
    # info.rho is left out: the last adaptive update is a ratio of residuals near 1e-11,
    # whose round-off differs (relatively ~1e-6) between programs of different batch sizes.
    # info.duality_gap is a difference of two objectives: at a polished point it is their
    # round-off, which differs (measured 1.1e-12) between programs that group lanes apart.
    errors.update({f"info.{k}": max_error(a, e) for k, a, e in zip(sol_a.info._fields, sol_a.info, sol_e.info)
                   if k not in ("rho", "duality_gap")})
    gap = max_error(sol_a.info.duality_gap, sol_e.info.duality_gap)
    assert gap <= 1e-10, f"{name}: info.duality_gap differs by {gap:.2e}"
    errors.update({f"grad {k}": max_error(a, e) for k, a, e in zip(grads_a._fields, grads_a, grads_e)})
    error = max(errors.values())
    assert error <= TOL, f"{name}: largest relative difference {error:.2e} > {TOL}: {errors}"
    log(f"{name}: equal to unsharded, largest relative difference {error:.1e}")


def batch_spec(array) -> PartitionSpec:
    sharding = array.sharding
    assert isinstance(sharding, NamedSharding), f"not a NamedSharding: {sharding}"
    return sharding.spec


def check_sparse(mesh: Mesh, problem: ad.QP, weights) -> None:
    """The batch with P, A, G as BCOO matrices (the sparse path): ``solve_sharded`` equals
    the unsharded ``vmap``, solutions and the gradients of the batched q and h."""
    from jax.experimental import sparse

    matrices = {name: sparse.BCOO.fromdense(getattr(problem, name)) for name in ("P", "A", "G")}

    def loss_of(solve_batch):
        def loss(q, h):
            sol = solve_batch(problem._replace(q=q, h=h, **matrices))
            return jnp.sum(weights[0] * sol.x) + jnp.sum(weights[1] * sol.nu), sol
        return jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))

    plain = loss_of(lambda pr: jax.vmap(ad.solve, in_axes=(AXES, None))(pr, OPTIONS))
    sharded = loss_of(lambda pr: solve_sharded(pr, OPTIONS, mesh=mesh, in_axes=AXES))
    (_, ref_sol), ref_grads = plain(problem.q, problem.h)
    (_, sol), grads = sharded(problem.q, problem.h)
    assert np.array_equal(np.asarray(sol.info.status), np.asarray(ref_sol.info.status))
    # A vmapped conjugate-gradient loop runs until its slowest lane has converged, so lanes
    # batched differently (two per device, or sixteen) take different numbers of steps: the
    # results agree to the solves' accuracy, not to round-off.
    x_error = max_error(sol.x, ref_sol.x)
    grad_error = max(max_error(grads[0], ref_grads[0]), max_error(grads[1], ref_grads[1]))
    assert x_error <= 1e-11, f"sparse solve_sharded: x differs from vmap's by {x_error:.1e}"  # measured 7.9e-13
    assert grad_error <= 1e-7, f"sparse solve_sharded: gradients differ by {grad_error:.1e}"  # measured 5.1e-9
    assert batch_spec(sol.x) == PartitionSpec("batch")
    log(f"solve_sharded on BCOO matrices: x and the gradients of q, h equal vmap's to {x_error:.1e}, "
        f"{grad_error:.1e}")


def main() -> None:
    assert jax.device_count() == DEVICES, f"expected {DEVICES} devices, got {jax.devices()}"
    mesh = Mesh(np.array(jax.devices()), ("batch",))
    problem = batch_problem()
    rng = np.random.default_rng(1)
    feasible = np.array([[lane not in INFEASIBLE] for lane in range(BATCH)])
    weights = tuple(jnp.asarray(feasible * rng.standard_normal((BATCH, size))) for size in (N, M_ROWS))

    plain = loss_of(lambda pr: jax.vmap(ad.solve, in_axes=(AXES, None))(pr, OPTIONS))
    sharded = loss_of(lambda pr: solve_sharded(pr, OPTIONS, mesh=mesh, in_axes=AXES))

    # Reference: unsharded, every array on one device.
    reference = plain(problem, weights)
    (_, ref_sol), _ = reference
    iterations = np.asarray(ref_sol.info.iterations)
    log(f"unsharded reference: statuses {ref_sol.info.status.tolist()}, iterations {iterations.tolist()}")
    assert all(ref_sol.info.status[i] == ad.Status.PRIMAL_INFEASIBLE for i in INFEASIBLE)
    # Lanes must stop at different iterations, so that converged lanes wait frozen for others.
    assert iterations.max() >= 2 * iterations.min(), f"the lanes are not heterogeneous: {iterations}"

    # Per-device loops.
    executable, hlo = compiled(sharded, problem, weights)
    assert not loop_condition_has_all_reduce(hlo), "solve_sharded: collective in the loop condition"
    result = executable(problem, weights)
    check_equal("solve_sharded, 16 lanes", result, reference)
    (_, sol), grads = result
    for name, array in (("x", sol.x), ("info.status", sol.info.status), ("grad q", grads.q), ("grad h", grads.h)):
        assert batch_spec(array) == PartitionSpec("batch"), f"{name} sharded as {array.sharding}"
        assert {shard.data.shape[0] for shard in array.addressable_shards} == {BATCH // DEVICES}
    for name, array in (("grad P", grads.P), ("grad G", grads.G)):
        assert len(array.sharding.device_set) == DEVICES and array.sharding.is_fully_replicated, name
    log("solve_sharded: outputs and batched gradients sharded over 8 devices, shared gradients replicated")

    # A batch that is not a multiple of 8: padded with copies of lane 0, masked and cut.
    # The reference is the 16-lane one with zero weights on lanes 13-15.
    cut = jax.tree_util.tree_map(lambda leaf, axis: leaf if axis is None else leaf[:CUT], problem, AXES,
                                 is_leaf=lambda x: x is None)
    cut_weights = tuple(w[:CUT] for w in weights)
    zeroed = tuple(w.at[CUT:].set(0.0) for w in weights)
    (value_z, sol_z), grads_z = plain(problem, zeroed)
    cut_reference = (
        (value_z, jax.tree_util.tree_map(lambda a: a[:CUT], sol_z)),
        jax.tree_util.tree_map(lambda g, axis: g if axis is None else g[:CUT], grads_z, AXES,
                               is_leaf=lambda x: x is None),
    )
    result = sharded(cut, cut_weights)
    assert result[0][1].x.shape == (CUT, N)
    check_equal(f"solve_sharded, {CUT} lanes padded to {BATCH}", result, cut_reference)

    # Plain jit(vmap) on sharded inputs: correct too, but its loop waits on a global all-reduce.
    on_mesh = jax.tree_util.tree_map(
        lambda leaf, axis: jax.device_put(
            leaf, NamedSharding(mesh, PartitionSpec() if axis is None else PartitionSpec("batch"))),
        problem, AXES, is_leaf=lambda x: x is None,
    )
    weights_on_mesh = jax.device_put(weights, NamedSharding(mesh, PartitionSpec("batch")))
    executable, hlo = compiled(plain, on_mesh, weights_on_mesh)
    global_loop = loop_condition_has_all_reduce(hlo)
    result = executable(on_mesh, weights_on_mesh)
    check_equal("plain jit(vmap) on sharded inputs", result, reference)
    assert batch_spec(result[0][1].x) == PartitionSpec("batch")
    log(f"plain jit(vmap) on sharded inputs: all-reduce in the loop condition: {global_loop}")

    # Each lane solved on its own: the reference program on 16 copies of that one lane
    # (same shapes, no new compile; copies of one lane cannot be slowed by other lanes).
    (_, sol), _ = result
    statuses_solved = np.asarray(sol.info.status) == ad.Status.SOLVED
    for i in range(BATCH):
        alone = jax.tree_util.tree_map(
            lambda leaf, axis: leaf if axis is None else jnp.broadcast_to(leaf[i], leaf.shape),
            problem, AXES, is_leaf=lambda x: x is None,
        )
        (_, solo), _ = plain(alone, weights)
        for field in ("status", "iterations"):
            a, e = int(getattr(solo.info, field)[0]), int(getattr(sol.info, field)[i])
            assert a == e, f"lane {i}: info.{field} {a} alone, {e} in the sharded batch"
        error = max_error(solo.x[0], sol.x[i]) if statuses_solved[i] else 0.0
        assert error <= TOL, f"lane {i}: x alone and in the sharded batch differ by {error:.1e}"
    log(f"per-lane statuses and iterations equal those of each lane alone: {sol.info.status.tolist()}")
    check_sparse(mesh, problem, weights)
    print("sharding checks passed", flush=True)


if __name__ == "__main__":
    sys.exit(main())
