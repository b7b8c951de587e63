"""The sparse path at growing size: the MPC QP of a double integrator over a horizon T
(``altdiff_jax.problems.mpc_qp``: n = 3T variables, 2T equality rows, bounds on every
variable), solved and differentiated with respect to the initial state and the cost
weights, each size in a fresh process (time of the first and second call, peak memory);
and the paper's dense generator given as BCOO matrices, against the dense path.

    python benchmarks/sparse.py [--horizons 100 1000 3000 10000] [--output benchmarks/results/sparse.md]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def child_mpc(horizon: int) -> dict:
    import jax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import altdiff_jax as ad
    from altdiff_jax.problems import mpc_qp

    weights = jnp.array([0.1, 1.0, 0.5])

    def loss(x0, weights):
        solution = ad.solve(mpc_qp(horizon, x0, weights))
        return jnp.sum(solution.x**2), solution.info

    value_and_grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))
    solve = jax.jit(lambda x0, weights: ad.solve(mpc_qp(horizon, x0, weights)).info)
    row = {"T": horizon, "n": 3 * horizon}
    for name, function in (("solve", solve), ("solve + gradient", value_and_grad)):
        start = time.perf_counter()
        jax.block_until_ready(function(jnp.array([5.0, 0.0]), weights))
        first = time.perf_counter() - start
        start = time.perf_counter()
        out = jax.block_until_ready(function(jnp.array([4.0, 0.5]), weights))
        row[name] = (first, time.perf_counter() - start)
    (_, info), grads = out
    row["status"] = ad.Status(int(info.status)).name
    row["iterations"] = int(info.iterations)
    row["polished"] = bool(info.polished)
    row["residuals"] = (float(info.primal_residual), float(info.dual_residual))
    row["finite gradient"] = bool(all(bool(jnp.all(jnp.isfinite(g))) for g in grads))
    row["peak MiB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return row


def child_paper(n: int) -> dict:
    import jax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    from jax.experimental import sparse
    import altdiff_jax as ad
    import harness

    dense = ad.QP(**{k: jnp.asarray(v) for k, v in harness.paper_qp(n, n // 2, n // 5).items()})
    as_bcoo = dense._replace(**{k: sparse.BCOO.fromdense(getattr(dense, k)) for k in ("P", "A", "G")})
    g = jnp.asarray(harness.loss_vector(n))
    row = {"n": n}
    grads = {}
    for name, problem in (("dense", dense), ("sparse", as_bcoo)):
        function = jax.jit(jax.grad(lambda p: ad.solve(p).x @ g, allow_int=True))
        jax.block_until_ready(function(problem))
        start = time.perf_counter()
        grads[name] = jax.block_until_ready(function(problem))
        row[name] = time.perf_counter() - start
    row["gradient difference"] = max(
        float(jnp.max(jnp.abs(getattr(grads["dense"], k) - getattr(grads["sparse"], k))) /
              jnp.max(jnp.abs(getattr(grads["dense"], k)))) for k in ("q", "b", "h"))
    return row


def run_child(kind: str, size: int, timeout: float) -> dict:
    command = [sys.executable, __file__, "--child", kind, str(size)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"over {timeout:.0f} s"}
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def table_rows(kind: str, sizes, timeout: float, cells) -> list[str]:
    """One table row per size, each measured in its own process (an error in the row's place)."""
    rows = []
    for size in sizes:
        row = run_child(kind, size, timeout)
        print(row, flush=True)
        rows.append(f"| {size} | " + (row["error"] if "error" in row else cells(row)) + " |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--horizons", type=int, nargs="+", default=[100, 1000, 3000, 10000])
    parser.add_argument("--paper", type=int, nargs="*", default=[100, 300])
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--output", type=Path)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, size = args.child
        print(json.dumps((child_mpc if kind == "mpc" else child_paper)(int(size))))
        return
    import harness
    lines = [harness.hardware_line(), "", "# The sparse path", "",
             "`python benchmarks/sparse.py " + " ".join(sys.argv[1:]) + "`", "",
             "## MPC of a double integrator over horizon T (`altdiff_jax.problems.mpc_qp`)", "",
             "Float64, a fresh process per row; first call (trace, compile, run) and second call (new initial "
             "state), in seconds; peak resident memory of the process.", "",
             "| T | n | solve: first / second s | solve + gradient: first / second s | status | iterations | polished "
             "| residuals (primal, dual) | gradient finite | peak MiB |",
             "|---:|---:|---|---|---|---:|---|---|---|---:|"]
    def mpc_cells(row):
        return (f"{row['n']} | {row['solve'][0]:.1f} / {row['solve'][1]:.2f} "
                f"| {row['solve + gradient'][0]:.1f} / {row['solve + gradient'][1]:.2f} | {row['status']} "
                f"| {row['iterations']} | {row['polished']} | {row['residuals'][0]:.1e}, {row['residuals'][1]:.1e} "
                f"| {row['finite gradient']} | {row['peak MiB']:.0f}")

    lines += table_rows("mpc", args.horizons, args.timeout, mpc_cells)
    lines += ["", "## The paper's dense generator as BCOO against the dense path", "",
              "Gradient of gᵀx* with respect to every leaf, second call, seconds; the largest difference of the "
              "q, b, h gradients relative to the dense path's largest entry.", "",
              "| n | dense s | sparse (BCOO) s | gradient difference |", "|---:|---:|---:|---:|"]
    lines += table_rows("paper", args.paper, args.timeout,
                        lambda row: f"{row['dense']:.3f} | {row['sparse']:.3f} | {row['gradient difference']:.1e}")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.output:
        args.output.write_text(text)


if __name__ == "__main__":
    main()
