"""Throughput of a batch of QPs over 1, 2, 4 and 8 devices, with and without per-device loops.

Run ``python benchmarks/sharding.py [--devices 1 2 4 8] [--batch 16] [--n 16]
[--out benchmarks/results]``. Writes ``sharding.md`` and ``sharding.png``. On GPUs use a
larger batch (``--batch 4096``).

On CPU, keep B/D <= 8 lanes per device when D > 1: with jaxlib 0.10.2, a batched LAPACK
call (the engine's eigen-decomposition of a batch of lanes) splits its batch over XLA's
intra-op thread pool and blocks until the pieces are done; with ~12 or more lanes of
n = 16 per device on a 2-core host, the pool's two threads end up one in that wait and
one in a collective (the plain loop's all-reduce, or the all-reduce summing the
gradients of shared leaves) waiting for the blocked device, and XLA aborts the process
after 40 s ("Termination timeout for `all reduce`").

For each device count D, a fresh process (on CPU, ``XLA_FLAGS=--xla_force_host_platform_
device_count=D``, read once when JAX starts; on GPUs, the first D devices, counts beyond
the machine's are skipped) times lanes per second of

* **solve**: ``Solution`` of the batch, and **solve + gradient**: ``jax.value_and_grad``
  of ``Σ wᵢᵀxᵢ*`` with respect to all six leaves (P, A, G shared, q, b, h batched);
* **per-device loops**: :func:`altdiff_jax._sharding.solve_sharded` (``shard_map``),
  against **plain**: ``jax.jit(jax.vmap(ad.solve))`` on inputs sharded over the same mesh
  (whose loop condition ends in an all-reduce over the mesh);
* three batches of B lanes of one shape, drawn from a pool of 8B random lanes (data
  scales spread over decades, 1 in 16 made infeasible) solved once beforehand: *uniform* (all B from the faster half of the pool), *clustered* (B/8 of the
  slowest lanes of the pool first, then easy lanes: all slow lanes on the first device
  for D <= 8) and *scattered* (the same lanes, the slow ones at lanes 0, 8, 16, ...: on
  D <= B/8 devices every device has one).

Throughput is measured as a training loop runs: several calls dispatched back to back
and waited for at the end (best of 5 such runs, the two methods alternating,
compilation excluded), and the process CPU time per call. The table also
gives the loop iterations the devices run in total, Σ_d (iterations of device d's loop):
the slowest lane of the whole batch times D for plain, the slowest lane of each device's
own shard for per-device loops.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = pathlib.Path(__file__).absolute()
ROOT = HERE.parent.parent
WORKLOADS = ("uniform", "clustered", "scattered")
METHODS = ("per-device loops", "plain jit(vmap)")
OPS = ("solve", "solve + gradient")
TOL, MAX_ITER = 1e-8, 5000
RUNS = 5


# --------------------------------------------------------------------------- worker side

def _import_jax():
    import jax

    jax.config.update("jax_enable_x64", True)
    return jax


def prepare(path: str, batch: int, n: int) -> None:
    """Draw a pool of 8B lanes, solve it once, and save the three batches to ``path``."""
    jax = _import_jax()
    import jax.numpy as jnp

    import altdiff_jax as ad

    p, m = max(1, n // 4), (3 * n) // 4
    rng = np.random.default_rng(0)
    M = rng.standard_normal((n, n))
    P, A, G = M.T @ M, rng.standard_normal((p, n)), rng.standard_normal((m, n))
    G[1] = -G[0]
    K = 8 * batch
    x0 = rng.standard_normal((K, n)) * 10 ** rng.uniform(-1, 1, (K, 1))
    target = x0 + rng.standard_normal((K, n)) * 10 ** rng.uniform(-1, 2, (K, 1))
    q, b = -target @ P, x0 @ A.T
    h = x0 @ G.T + rng.uniform(0, 1, (K, m)) * 10 ** rng.uniform(-4, 0, (K, 1))
    h[rng.permutation(K)[: K // 16], :2] = -1.0  # gᵀx <= −1 and −gᵀx <= −1: infeasible
    axes = ad.QP(P=None, q=0, A=None, b=0, G=None, h=0)
    solve = jax.jit(jax.vmap(ad.solve, in_axes=(axes, None)))
    iterations = np.asarray(solve(
        ad.QP(*(jnp.asarray(v) for v in (P, q, A, b, G, h))), ad.Options(tol=TOL, max_iter=MAX_ITER)
    ).info.iterations)
    order = np.argsort(iterations, kind="stable")
    slow, easy = order[::-1][: batch // 8], order[: K // 2]
    easy = rng.permutation(easy)[:batch]
    clustered = np.concatenate([slow, easy[: batch - len(slow)]])
    scattered = clustered.copy()
    slots = np.arange(0, batch, 8)[: len(slow)]
    rest = np.setdiff1d(np.arange(batch), slots)
    scattered[slots], scattered[rest] = slow, easy[: batch - len(slow)]
    lanes = dict(uniform=easy, clustered=clustered, scattered=scattered)
    np.savez(
        path, P=P, A=A, G=G, q=q, b=b, h=h, pool_iterations=iterations,
        **{f"lanes_{name}": index for name, index in lanes.items()},
    )


def worker(path: str, devices: int, min_seconds: float) -> list[dict]:
    jax = _import_jax()
    import jax.numpy as jnp
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    import altdiff_jax as ad
    from altdiff_jax._sharding import solve_sharded

    if jax.device_count() < devices:
        return [dict(devices=devices, skipped=f"only {jax.device_count()} devices")]
    batch = len(np.load(path)["lanes_uniform"])
    if jax.devices()[0].platform == "cpu" and devices > 1 and batch // devices > 8:
        print(f"warning: {batch // devices} lanes per CPU device may deadlock jaxlib 0.10.2 (see the "
              "module docstring); use --batch <= 8 x devices", file=sys.stderr, flush=True)
    data = np.load(path)
    mesh = Mesh(np.array(jax.devices()[:devices]), ("batch",))
    axes = ad.QP(P=None, q=0, A=None, b=0, G=None, h=0)
    options = ad.Options(tol=TOL, max_iter=MAX_ITER)
    shared, batched = NamedSharding(mesh, PartitionSpec()), NamedSharding(mesh, PartitionSpec("batch"))

    def on_mesh(lanes):
        leaves = {k: data[k] if getattr(axes, k) is None else data[k][lanes] for k in ("P", "q", "A", "b", "G", "h")}
        return ad.QP(**{k: jax.device_put(jnp.asarray(v), shared if getattr(axes, k) is None else batched)
                        for k, v in leaves.items()})

    # Options is an argument of both jitted functions (its numeric fields traced), as
    # solve_sharded passes it on, so that neither constant-folds tol, rho or alpha.
    solvers = {
        "per-device loops": lambda pr, opts: solve_sharded(pr, opts, mesh=mesh, in_axes=axes),
        "plain jit(vmap)": lambda pr, opts: jax.vmap(ad.solve, in_axes=(axes, None))(pr, opts),
    }

    def make(method, op):
        solver = solvers[method]
        if op == "solve":
            def solve(pr, w, opts):
                sol = solver(pr, opts)
                return sol.info.iterations, sol
            return jax.jit(solve)

        def loss(pr, w, opts):
            sol = solver(pr, opts)
            return jnp.sum(w * sol.x), sol.info.iterations

        def value_and_grad(pr, w, opts):  # every output kept, so that nothing is dead code
            (value, iterations), grads = jax.value_and_grad(loss, has_aux=True)(pr, w, opts)
            return iterations, (value, grads)
        return jax.jit(value_and_grad)

    weights = jax.device_put(jnp.asarray(np.random.default_rng(1).standard_normal((batch, data["q"].shape[1]))),
                             batched)
    problems = {name: on_mesh(data[f"lanes_{name}"]) for name in WORKLOADS}
    rows = []
    for op in OPS:
        compiled, compile_s = {}, {}
        for method in METHODS:
            start = time.perf_counter()
            compiled[method] = make(method, op).lower(problems["uniform"], weights, options).compile()
            compile_s[method] = time.perf_counter() - start
        for workload in WORKLOADS:
            args = (problems[workload], weights, options)
            iterations = {method: np.asarray(compiled[method](*args)[0]) for method in METHODS}  # warm-up
            start = time.perf_counter()
            jax.block_until_ready(compiled[METHODS[1]](*args))
            calls = max(1, math.ceil(min_seconds / max(time.perf_counter() - start, 1e-6)))
            wall, cpu = {method: [] for method in METHODS}, {method: [] for method in METHODS}
            for _ in range(RUNS):  # the two methods alternate, so that load drifts hit both
                for method in METHODS:
                    start, start_cpu = time.perf_counter(), time.process_time()
                    jax.block_until_ready([compiled[method](*args) for _ in range(calls)])
                    wall[method].append((time.perf_counter() - start) / calls)
                    cpu[method].append((time.process_time() - start_cpu) / calls)
            for method in METHODS:
                its = iterations[method]
                per_device = its.reshape(devices, -1).max(axis=1)
                rows.append(dict(
                    devices=devices, op=op, method=method, workload=workload, batch=batch, calls=calls,
                    seconds_per_call=min(wall[method]),  # the least disturbed run: the machine is shared
                    cpu_seconds_per_call=min(cpu[method]),
                    lanes_per_s=batch / min(wall[method]), compile_s=compile_s[method],
                    loop_iterations=int(per_device.sum()) if method == METHODS[0] else devices * int(its.max()),
                    median_iterations=float(np.median(its)), max_iterations=int(its.max()),
                ))
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    info = dict(jax=jax.__version__, platform=jax.devices()[0].platform,
                device_kind=jax.devices()[0].device_kind)
    return [dict(row, **info) for row in rows]


# --------------------------------------------------------------------------- driver side

def _run(args: list[str], devices: int = 1) -> str:
    env = dict(os.environ)
    flags = [f for f in env.get("XLA_FLAGS", "").split() if "device_count" not in f]
    env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={devices}"])
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    done = subprocess.run([sys.executable, str(HERE), *args], env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr[-4000:]}")
    return done.stdout


def _machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return model


def _commit() -> str:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "altdiff_jax", "benchmarks/sharding.py"],
                               cwd=ROOT, capture_output=True, text=True).stdout.strip()
        return commit + (" (uncommitted changes)" if dirty else "") if commit else "unknown"
    except OSError:
        return "unknown"


def write_results(rows: list[dict], out: pathlib.Path, args, pool: np.ndarray, started: str) -> None:
    done = [r for r in rows if "skipped" not in r]
    info = done[0]
    device = "CPU" if info["platform"] == "cpu" else info["device_kind"]
    header = (
        f"git {_commit()}, {started}, CPU {_machine()}, {os.cpu_count()} cores, jax {info['jax']}, "
        f"devices: {device}" + (" (simulated host devices)" if info["platform"] == "cpu" else "")
    )
    lines = [
        header, "",
        "# Batches across devices: per-device loops (`solve_sharded`) vs plain `jit(vmap)` on sharded inputs",
        "",
        f"`python benchmarks/sharding.py --devices {' '.join(map(str, args.devices))} --batch {args.batch} "
        f"--n {args.n}`: B = {args.batch} lanes of n = {args.n}, p = {max(1, args.n // 4)}, "
        f"m = {(3 * args.n) // 4}, float64, tol {TOL:g}; P, A, G shared, q, b, h batched and sharded. "
        f"Lanes per second over calls dispatched back to back (best of {RUNS} runs, compilation "
        "excluded, the two methods alternating); gradient of Σ wᵢᵀxᵢ* with respect to all six "
        "leaves. *CPU ms per call*: process CPU time (all threads) per call, best of the runs, the "
        "work done on this host (for GPUs, host time only). *Loop iterations*: the iterations of the "
        "devices' loops added over the devices (plain: D × slowest lane of the batch; per-device: "
        "Σ of each shard's slowest lane).",
        "",
        f"Pool of {len(pool)} random lanes (1 in 16 infeasible), iterations of a forward solve: "
        f"median {np.median(pool):.0f}, "
        f"90th percentile {np.percentile(pool, 90):.0f}, max {pool.max()}. *uniform*: lanes from the faster "
        f"half; *clustered*: the {args.batch // 8} slowest lanes first, then easy ones; *scattered*: the "
        "same lanes, the slow ones at lanes 0, 8, 16, ... (on D <= B/8 devices, one per device).",
        "",
        "| D | op | workload | per-device loops (lanes/s) | plain jit(vmap) (lanes/s) | per-device / plain "
        "| CPU ms per call, per-device / plain | loop iterations, per-device / plain "
        "| lane iterations, median / max |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    index = {(r["devices"], r["op"], r["workload"], r["method"]): r for r in done}
    for devices in sorted({r["devices"] for r in done}):
        for op in OPS:
            for workload in WORKLOADS:
                mine, plain = (index[(devices, op, workload, method)] for method in METHODS)
                lines.append(
                    f"| {devices} | {op} | {workload} | {mine['lanes_per_s']:.0f} | {plain['lanes_per_s']:.0f} "
                    f"| {mine['lanes_per_s'] / plain['lanes_per_s']:.2f} "
                    f"| {1e3 * mine['cpu_seconds_per_call']:.1f} / {1e3 * plain['cpu_seconds_per_call']:.1f} "
                    f"| {mine['loop_iterations']} / {plain['loop_iterations']} "
                    f"| {mine['median_iterations']:.0f} / {mine['max_iterations']} |"
                )
    for r in rows:
        if "skipped" in r:
            lines.append(f"\nD = {r['devices']} skipped: {r['skipped']}.")
    same = [index[(1, op, w, METHODS[0])]["lanes_per_s"] / index[(1, op, w, METHODS[1])]["lanes_per_s"]
            for op in OPS for w in WORKLOADS if (1, op, w, METHODS[0]) in index]
    if same:
        lines += ["", f"On one device the two methods compile to the same loop: their ratio, {min(same):.2f} to "
                  f"{max(same):.2f} here, is the timing noise of this machine."]
    if info["platform"] == "cpu":
        lines += ["", "Simulated CPU devices share the host's cores, so more devices cannot add compute "
                  f"({os.cpu_count()} cores here): read D > 1 as the same work cut into D loops. Plain "
                  "`jit(vmap)` runs every device's loop for the slowest lane of the batch and "
                  "synchronises the device threads at every iteration (an all-reduce); per-device "
                  "loops stop each device at its own slowest lane and never synchronise inside the "
                  "loop, so their CPU time follows the per-device loop iterations. On real devices "
                  "one call still ends with its slowest device; the gain there is the removed "
                  "per-iteration collective and devices freed early for the next call."]
    lines.append("")
    out.mkdir(parents=True, exist_ok=True)
    (out / "sharding.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot", file=sys.stderr)
        return
    figure, axes_ = plt.subplots(1, len(OPS), figsize=(11, 4), sharey=False)
    colors = dict(zip(WORKLOADS, ("tab:blue", "tab:red", "tab:green")))
    styles = dict(zip(METHODS, ("o-", "s--")))
    for axis, op in zip(axes_, OPS):
        for workload in WORKLOADS:
            for method in METHODS:
                points = sorted((r["devices"], r["lanes_per_s"]) for r in done
                                if r["op"] == op and r["workload"] == workload and r["method"] == method)
                axis.plot(*zip(*points), styles[method], color=colors[workload], label=f"{workload}, {method}")
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.set_xticks(sorted({r["devices"] for r in done}), [str(d) for d in sorted({r["devices"] for r in done})])
        axis.set_xlabel("devices")
        axis.set_ylabel("lanes / s")
        axis.set_title(f"{op}, B = {args.batch}, n = {args.n}")
    axes_[0].legend(fontsize=7)
    figure.suptitle(header, fontsize=7)
    figure.tight_layout()
    figure.savefig(out / "sharding.png", dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, nargs="*", default=[1, 2, 4, 8])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--min-seconds", type=float, default=0.5, help="time of one timed run")
    parser.add_argument("--out", default=str(HERE.parent / "results"))
    parser.add_argument("--prepare", help=argparse.SUPPRESS)
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.prepare:
        prepare(args.prepare, args.batch, args.n)
        return
    if args.worker:
        print(json.dumps(worker(args.data, args.worker, args.min_seconds)))
        return
    if args.batch % 8 or args.batch % max(args.devices):
        raise SystemExit("--batch must be a multiple of 8 and of every device count")
    started = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = str(pathlib.Path(tmp) / "lanes.npz")
        _run(["--prepare", data, "--batch", str(args.batch), "--n", str(args.n)])
        pool = np.load(data)["pool_iterations"]
        for devices in args.devices:
            start = time.perf_counter()
            out = _run(["--worker", str(devices), "--data", data, "--min-seconds", str(args.min_seconds)], devices)
            rows += json.loads(out.strip().splitlines()[-1])
            print(f"D = {devices}: {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    write_results(rows, pathlib.Path(args.out), args, pool, started)


if __name__ == "__main__":
    main()
