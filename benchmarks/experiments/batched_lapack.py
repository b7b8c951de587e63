"""Batched LAPACK calls that XLA may run at once: the jaxlib 0.10 hang, and who is exposed.

Run ``python benchmarks/experiments/batched_lapack.py [--calls 1000] [--stall-s 60]``; writes
``benchmarks/results/batched_lapack.md``.

jaxlib 0.10 splits a batched LAPACK call whose work passes a threshold into chunks on
XLA's CPU thread pool and blocks its pool thread until they are done; as many such calls
at once as the pool has threads (two on a 2-core machine) can wait for ever
(``tests/lapack_order.py``). Two parts:

* **Reproduction**, each in a child process that is killed when it makes no progress for
  ``--stall-s`` seconds: ``--calls`` calls of one jitted function of four vmapped
  triangular solves, independent of each other or chained (each solve's right-hand side
  adds 0 × the previous result, so it waits for it), at a batch below and above the
  threshold; then the chained function called from two Python threads at once, and on
  a batch split over two CPU devices (each device runs its own copy of the program).
* **Exposure**: the number of LAPACK calls and of pairs that no data dependency orders in
  compiled programs: altdiff_jax's vmapped solve + gradient (512 QPs with n 50 as in
  ``benchmarks/speed.py``; the structure does not depend on the batch size), two
  independent vmapped solves in one ``jit``, and qpax's vmapped gradient.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import subprocess
import sys
import threading
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before jaxlib loads OpenBLAS

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

if __package__:
    from .. import harness
else:  # run as a script: the harness is in benchmarks/, one folder up
    sys.path.insert(1, str(pathlib.Path(__file__).resolve().parent.parent))
    import harness

import altdiff_jax as ad  # noqa: E402

SHARED = ad.QP(P=None, q=0, A=None, b=0, G=None, h=0)
BATCHED = ad.QP(P=0, q=0, A=0, b=0, G=0, h=0)

_CHILD = """
import sys, threading, time
import jax, jax.numpy as jnp
from jax.scipy.linalg import solve_triangular
jax.config.update("jax_enable_x64", True)
batch, n, calls, mode = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
keys = jax.random.split(jax.random.PRNGKey(0), 2)
L = jnp.tril(jax.random.normal(keys[0], (batch, n, n))) + 10 * jnp.eye(n)
b = jax.random.normal(keys[1], (batch, n))
if mode == "devices":  # the batch split over the 2 CPU devices of XLA_FLAGS
    sharding = jax.sharding.NamedSharding(jax.make_mesh((2,), ("lanes",)), jax.sharding.PartitionSpec("lanes"))
    L, b = jax.device_put(L, sharding), jax.device_put(b, sharding)
solve = jax.vmap(lambda L, b: solve_triangular(L, b, lower=True))

@jax.jit
def four(L, b):
    outputs, previous = [], None
    for scale_L, scale_b in ((1, 1), (1, 2), (2, 1), (2, 2)):
        L_i, b_i = scale_L * L, scale_b * b
        if mode != "independent" and previous is not None:  # a data dependency (XLA drops optimization barriers)
            b_i = b_i + 0.0 * previous
        previous = solve(L_i, b_i)
        outputs.append(previous)
    return outputs

start, done, lock = time.perf_counter(), [0], threading.Lock()

def run(count):
    for _ in range(count):
        jax.block_until_ready(four(L, b))
        with lock:
            done[0] += 1
            print(done[0], time.perf_counter() - start, flush=True)

threads = [threading.Thread(target=run, args=(calls // 2,)) for _ in range(2)] if mode == "threads" else []
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
if not threads:
    run(calls)
"""

# (label, child mode, extra environment): one program at a time on one device, then the
# same ordered program from two Python threads and over two CPU devices.
_SCENARIOS = {
    "independent": ("independent", {}),
    "chained": ("chained", {}),
    "chained, 2 Python threads": ("threads", {}),
    "chained, 2 CPU devices (lanes split)": ("devices", {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}),
}


def _reproduce(batch: int, n: int, calls: int, scenario: str, stall_s: float) -> tuple[str, str]:
    """(outcome, detail) of ``calls`` calls of four vmapped triangular solves in a child."""
    mode, extra_env = _SCENARIOS[scenario]
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(batch), str(n), str(calls), mode],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                             env=dict(os.environ, OPENBLAS_NUM_THREADS="1", **extra_env))
    progress: list = []  # (calls done, seconds), appended by the reader thread
    reader = threading.Thread(target=lambda: progress.extend(
        (int(line.split()[0]), float(line.split()[1])) for line in child.stdout), daemon=True)
    reader.start()
    seen, last_progress = 0, time.monotonic()
    while child.poll() is None and time.monotonic() - last_progress < stall_s:
        time.sleep(0.5)
        if len(progress) > seen:
            seen, last_progress = len(progress), time.monotonic()
    if child.poll() is None:
        child.kill()
        child.wait()
        reader.join()
        done = progress[-1][0] if progress else 0
        return "hung", f"no progress for {stall_s:.0f} s after {done} calls: killed"
    reader.join()
    done, seconds = progress[-1] if progress else (0, 0.0)
    return ("completed" if done == calls else f"exit {child.returncode}"), f"{done} calls in {seconds:.1f} s"


def _pairs(fn, *args) -> tuple[int, int]:
    """(LAPACK calls, unordered pairs) in the compiled program of ``jax.jit(fn)(*args)``."""
    lapack_order = harness._tests_module("lapack_order")
    hlo = jax.jit(fn).lower(*args).compile().as_text()
    return hlo.count('custom_call_target="lapack_'), len(lapack_order.concurrent_lapack_calls(hlo))


def _loss(problem: ad.QP, g, options):
    return ad.solve(problem, options).x @ g


def exposure(lines: list) -> None:
    size, n, p, m = 512, 50, 10, 25
    problems = [harness.paper_qp(n, m, p, seed=seed) for seed in range(size)]
    g = jnp.asarray(harness.loss_vector(n))
    rows = []
    for dtype in (jnp.float64, jnp.float32):
        for label, in_axes in (("every leaf batched", BATCHED), ("P, A, G shared", SHARED)):
            data, gd = harness.stacked_qp(problems, in_axes, dtype), g.astype(dtype)
            name = jnp.dtype(dtype).name
            ours = jax.vmap(jax.grad(_loss), in_axes=(in_axes, None, None))
            rows.append([f"altdiff_jax solve + gradient, {label}, {name}", *_pairs(ours, data, gd, ad.Options())])
            if dtype == jnp.float64 and in_axes is SHARED:
                solve = jax.vmap(ad.solve, in_axes=(in_axes, None))
                two = lambda d1, d2: (solve(d1, ad.Options()).x, solve(d2, ad.Options()).x)  # noqa: E731
                rows.append([f"two independent altdiff_jax solves in one jit, {label}, {name}",
                             *_pairs(two, data, data._replace(q=2 * data.q))])
            try:
                import qpax
            except ImportError:
                continue

            def qpax_loss(problem, g):
                return qpax.solve_qp_primal(*problem[:6], solver_tol=1e-6) @ g

            theirs = jax.vmap(jax.grad(qpax_loss), in_axes=(in_axes, None))
            rows.append([f"qpax solve + gradient, {label}, {name}", *_pairs(theirs, data, gd)])
    lines += ["## Exposure: LAPACK calls no data dependency orders, in compiled programs", ""]
    lines.append(harness.markdown_table(["program", "LAPACK calls", "unordered pairs"], rows))
    lines.append("")


def reproduction(lines: list, calls: int, stall_s: float) -> None:
    rows = []
    for batch, n, scenario in ((64, 50, "independent"), (512, 50, "independent"), (512, 50, "chained"),
                               (512, 50, "chained, 2 Python threads"),
                               (512, 50, "chained, 2 CPU devices (lanes split)")):
        outcome, detail = _reproduce(batch, n, calls, scenario, stall_s)
        rows.append([f"{batch} × {n} × {n}", scenario, outcome, detail])
        print(rows[-1], flush=True)
    lines += [f"## Reproduction: four vmapped triangular solves in one jit, {calls} calls, "
              f"{os.cpu_count()} CPUs", ""]
    lines.append(harness.markdown_table(["batch", "solves", "outcome", "detail"], rows))
    lines.append("")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--stall-s", type=float, default=60.0)
    parser.add_argument("--out", default=str(harness.RESULTS / "batched_lapack.md"))
    args = parser.parse_args()
    lines: list = []
    reproduction(lines, args.calls, args.stall_s)
    exposure(lines)
    harness.write_markdown(args.out, "Batched LAPACK calls that XLA may run at once",
                           harness.hardware_line(("qpax",)), lines)


if __name__ == "__main__":
    main()
