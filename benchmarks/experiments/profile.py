"""Where the engine's time goes: an XLA CPU profile of the cases behind issue 8's targets.

Run ``python benchmarks/experiments/profile.py``. Writes ``benchmarks/results/profile.md``.

Each case is compiled, run once, then run five times under ``jax.profiler.trace``; the
run with the least busy time is reported. The trace's XLA events (one per executed HLO
operation, on the CPU runtime's threads) are read back with ``jax.profiler.ProfileData``
and summed by kind: Cholesky factorisations, triangular solves, eigendecompositions,
matrix products, copies and transposes, everything else.
Containers (``while``, ``cond`` and the executor's own spans) are left out, so the sum is
the busy time of the operations themselves; it exceeds the wall time where XLA ran two
operations at once on the two cores.

Cases (float64, tol 1e-6, default options):

* Tiny (n 1500, 200 eq, 500 ineq, the paper generator): ``jax.grad`` of gᵀx* with
  respect to all six leaves, ``differentiation="kkt"`` (the fastest, see speed.md).
* 512 QPs with n 50 (10 eq, 25 ineq), ``jax.vmap`` of the same, every leaf batched and
  P, A, G shared.
"""

from __future__ import annotations

import collections
import glob
import os
import pathlib
import re
import sys
import tempfile
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as in speed.py: before jaxlib loads OpenBLAS

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

if __package__:
    from .. import harness
else:  # run as a script: the harness is in benchmarks/, one folder up
    sys.path.insert(1, str(pathlib.Path(__file__).resolve().parent.parent))
    import harness

import altdiff_jax as ad  # noqa: E402

KEYS = harness.QP_KEYS
CATEGORIES = (
    ("Cholesky factorisation", ("cholesky",)),
    ("triangular solve", ("triangular_solve",)),
    ("eigendecomposition", ("eigh",)),
    ("matrix product", ("dot", "ynn")),
    ("copy / transpose", ("copy", "transpose")),
)
CONTAINERS = ("ThunkExecutor", "while", "cond", "call")


def _category(kind: str) -> str:
    for name, markers in CATEGORIES:
        if any(marker in kind for marker in markers):
            return name
    return "elementwise, reductions, other"


def _loss(problem, g, options):
    return ad.solve(problem, options).x @ g


def profile(fn, *args, repeats: int = 5) -> tuple[float, collections.Counter, collections.Counter]:
    """(wall seconds of the traced call, busy ns by op kind, count by op kind), of the
    traced call with the least busy time among ``repeats`` (this shared machine's noise
    moves a single call by up to 1.5x)."""
    harness.block(fn(*args))
    runs = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as directory:
            with jax.profiler.trace(directory):
                started = time.perf_counter()
                harness.block(fn(*args))
                wall = time.perf_counter() - started
            data = jax.profiler.ProfileData.from_file(
                glob.glob(f"{directory}/**/*.xplane.pb", recursive=True)[0])
        busy, count = collections.Counter(), collections.Counter()
        for plane in data.planes:
            for line in plane.lines:
                if not line.name.startswith("tf_XLA"):
                    continue
                for event in line.events:
                    if event.name.startswith(CONTAINERS):
                        continue
                    kind = re.sub(r"[.]\d+.*$", "", event.name)
                    busy[kind] += event.duration_ns
                    count[kind] += 1
        runs.append((wall, busy, count))
    return min(runs, key=lambda run: sum(run[1].values()))


def report(title: str, note: str, wall: float, busy, count) -> list:
    total = sum(busy.values())
    by_category = collections.Counter()
    for kind, ns in busy.items():
        by_category[_category(kind)] += ns
    rows = [[name, f"{ns / 1e6:.1f}", f"{100 * ns / total:.0f}%"] for name, ns in by_category.most_common()]
    top = [[kind, f"{ns / 1e6:.1f}", f"{100 * ns / total:.0f}%", count[kind]] for kind, ns in busy.most_common(8)]
    return [f"## {title}", "", note, "",
            f"wall time of the profiled call {wall:.3f} s; busy time of XLA's operations {total / 1e9:.3f} s "
            "(summed over the threads that ran them)", "",
            harness.markdown_table(["kind", "busy ms", "share"], rows), "",
            "The eight most expensive HLO operation kinds:", "",
            harness.markdown_table(["HLO kind", "busy ms", "share", "executions"], top), ""]


def main() -> None:
    lines = []
    tiny = harness.paper_qp(1500, 500, 200, seed=0)
    qp = ad.QP(**{k: jnp.asarray(tiny[k]) for k in KEYS})
    g = jnp.asarray(harness.loss_vector(1500))
    options = ad.Options(tol=1e-6, differentiation="kkt")
    solution = harness.block(jax.jit(ad.solve)(qp, options))
    note = (f"forward: {int(solution.info.iterations)} ADMM iterations, status "
            f"{ad.Status(int(solution.info.status)).name}, polished {bool(solution.info.polished)}")
    lines += report("Tiny (n 1500, 200 eq, 500 ineq): jax.grad of gᵀx*, all six leaves, kkt", note,
                    *profile(jax.jit(jax.grad(_loss)), qp, g, options))

    size, n, p, m = 512, 50, 10, 25
    problems = [harness.paper_qp(n, m, p, seed=seed) for seed in range(size)]
    g = jnp.asarray(harness.loss_vector(n))
    for label, in_axes in (("every leaf batched", ad.QP(P=0, q=0, A=0, b=0, G=0, h=0)),
                           ("P, A, G shared", ad.QP(P=None, q=0, A=None, b=0, G=None, h=0))):
        leaves = {}
        for k in KEYS:
            stacked = np.stack([problem[k] for problem in problems])
            leaves[k] = jnp.asarray(stacked[0] if getattr(in_axes, k) is None else stacked)
        data = ad.QP(**leaves)
        solutions = harness.block(jax.jit(jax.vmap(ad.solve, in_axes=(in_axes, None)))(data, ad.Options()))
        iterations = np.asarray(solutions.info.iterations)
        note = (f"iterations per lane: mean {iterations.mean():.0f}, max {iterations.max()} (a vmapped loop runs "
                f"until its slowest lane stops: every lane pays for {iterations.max()}); "
                f"{int(np.sum(np.asarray(solutions.info.status) == ad.Status.SOLVED))}/{size} SOLVED")
        fn = jax.jit(jax.vmap(jax.grad(_loss), in_axes=(in_axes, None, None)))
        lines += report(f"{size} QPs, n {n}, {p} eq, {m} ineq, vmap(grad), {label}", note,
                        *profile(fn, data, g, ad.Options()))
    harness.write_markdown(harness.RESULTS / "profile.md", "Where the engine's time goes (XLA CPU profile)",
                           harness.hardware_line(), lines)
    print("\n".join(lines))


if __name__ == "__main__":
    jax.config.update("jax_enable_x64", True)
    main()
