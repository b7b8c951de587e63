"""Batched LAPACK calls that XLA may run at once: the jaxlib 0.10 hang, and who is exposed.

Run ``python benchmarks/batched_lapack.py [--calls 1000] [--stall-s 60]``; writes
``benchmarks/results/batched_lapack.md``.

jaxlib 0.10 splits a batched LAPACK call whose work passes a threshold into chunks on
XLA's CPU thread pool and blocks its pool thread until they are done; as many such calls
at once as the pool has threads (two on a 2-core machine) can wait for ever
(``tests/lapack_order.py``). Two parts:

* **Reproduction**, each in a child process that is killed when it makes no progress for
  ``--stall-s`` seconds: ``--calls`` calls of one jitted function of four vmapped
  triangular solves, independent of each other or chained (each solve's right-hand side
  adds 0 × the previous result, so it waits for it), at a batch below and above the threshold.
* **Exposure**: the number of LAPACK calls and of pairs that no data dependency orders in
  compiled programs: altdiff_jax's vmapped solve + gradient (512 QPs with n 50 as in
  ``benchmarks/speed.py``; the structure does not depend on the batch size), two
  independent vmapped solves in one ``jit``, and qpax's vmapped gradient.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before jaxlib loads OpenBLAS

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

if __package__:
    from . import harness
else:
    import harness

import altdiff_jax as ad  # noqa: E402

SHARED = ad.QP(P=None, q=0, A=None, b=0, G=None, h=0)
BATCHED = ad.QP(P=0, q=0, A=0, b=0, G=0, h=0)

_CHILD = """
import sys, time
import jax, jax.numpy as jnp
from jax.scipy.linalg import solve_triangular
jax.config.update("jax_enable_x64", True)
batch, n, calls, chained = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "chained"
keys = jax.random.split(jax.random.PRNGKey(0), 2)
L = jnp.tril(jax.random.normal(keys[0], (batch, n, n))) + 10 * jnp.eye(n)
b = jax.random.normal(keys[1], (batch, n))
solve = jax.vmap(lambda L, b: solve_triangular(L, b, lower=True))

@jax.jit
def four(L, b):
    outputs, previous = [], None
    for scale_L, scale_b in ((1, 1), (1, 2), (2, 1), (2, 2)):
        L_i, b_i = scale_L * L, scale_b * b
        if chained and previous is not None:  # a data dependency (XLA drops optimization barriers)
            b_i = b_i + 0.0 * previous
        previous = solve(L_i, b_i)
        outputs.append(previous)
    return outputs

start = time.perf_counter()
for call in range(calls):
    jax.block_until_ready(four(L, b))
    print(call + 1, time.perf_counter() - start, flush=True)
"""


def _reproduce(batch: int, n: int, calls: int, chained: bool, stall_s: float) -> tuple[str, str]:
    """(outcome, detail) of ``calls`` calls of four vmapped triangular solves in a child."""
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(batch), str(n), str(calls),
                              "chained" if chained else "independent"],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                             env=dict(os.environ, OPENBLAS_NUM_THREADS="1"))
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
            leaves = {}
            for k in harness.QP_KEYS:
                stacked = np.stack([pr[k] for pr in problems])
                leaves[k] = jnp.asarray(stacked[0] if getattr(in_axes, k) is None else stacked, dtype)
            data, gd = ad.QP(**leaves), g.astype(dtype)
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
    for batch, n, chained in ((64, 50, False), (512, 50, False), (512, 50, True)):
        outcome, detail = _reproduce(batch, n, calls, chained, stall_s)
        rows.append([f"{batch} × {n} × {n}", "chained" if chained else "independent", outcome, detail])
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
