"""The sparse path at growing size: the MPC QP of a double integrator over a horizon T
(``altdiff_jax.problems.mpc_qp``: n = 3T variables, 2T equality rows, bounds on every
variable), solved and differentiated with respect to the initial state and the cost
weights, each size in a fresh process (time of the first and second call, peak memory);
the paper's dense generator given as BCOO matrices, against the dense path; and the
energy-scheduling QP over a year of hourly PJM load as one problem, against Clarabel
(needs the PJM file: ``altdiff_jax.datasets``). With ``--output``, a plot of the MPC rows'
time and memory against n beside it (``.png``).

    python benchmarks/sparse.py [--horizons 100 1000 3000 10000] [--paper 100 300] [--pjm-days 365]
        [--output benchmarks/results/sparse.md]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

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


GAMMA_UNDER, GAMMA_OVER, RAMP = 50.0, 0.5, 0.4  # as in notebooks/energy_scheduling.ipynb (scaled load units)


def scheduling_qp(y_hat):
    """The energy-scheduling QP of Donti et al. (2017) over all the hours of ``y_hat`` at once,
    as BCOO: variables (z, e), n = 2H; minimise ½‖z‖² + (γ_o − ŷ)ᵀz + (γ_u + γ_o)1ᵀe subject
    to z + e >= ŷ, |z_{t+1} − z_t| <= ramp (across day boundaries too) and e >= 0 (bounds):
    the notebook's daily problem, unbroken over the year."""
    import jax.numpy as jnp
    import numpy as np
    from jax.experimental import sparse
    import altdiff_jax as ad

    H = y_hat.shape[0]
    hours = np.arange(H)
    steps = np.arange(H - 1)
    rows = np.concatenate([hours, hours, H + steps, H + steps, 2 * H - 1 + steps, 2 * H - 1 + steps])
    columns = np.concatenate([hours, H + hours, steps + 1, steps, steps + 1, steps])
    values = np.concatenate([-np.ones(2 * H), np.ones(H - 1), -np.ones(H - 1), -np.ones(H - 1), np.ones(H - 1)])
    G = sparse.BCOO((jnp.asarray(values), jnp.asarray(np.stack([rows, columns], axis=1))), shape=(3 * H - 2, 2 * H))
    P = sparse.BCOO((jnp.ones(H), jnp.asarray(np.stack([hours, hours], axis=1))), shape=(2 * H, 2 * H))
    q = jnp.concatenate([GAMMA_OVER - y_hat, jnp.full((H,), GAMMA_UNDER + GAMMA_OVER)])
    h = jnp.concatenate([-y_hat, jnp.full((2 * (H - 1),), RAMP)])
    lb = jnp.concatenate([jnp.full((H,), -jnp.inf), jnp.zeros(H)])
    return ad.QP(P=P, q=q, G=G, h=h, lb=lb, ub=jnp.full((2 * H,), jnp.inf))


def _clarabel_objective(problem) -> float:
    """The optimal objective of a ``scheduling_qp`` by Clarabel (tolerances 1e-10)."""
    import clarabel
    import numpy as np
    import scipy.sparse as sp

    def csc(m):
        return sp.csc_matrix((np.asarray(m.data), (np.asarray(m.indices[:, 0]), np.asarray(m.indices[:, 1]))),
                             shape=m.shape)

    n = problem.q.shape[0]
    H = n // 2
    bound_rows = sp.hstack([sp.csc_matrix((H, H)), -sp.identity(H, format="csc")]).tocsc()
    A = sp.vstack([csc(problem.G), bound_rows]).tocsc()
    b = np.concatenate([np.asarray(problem.h), np.zeros(H)])
    settings = clarabel.DefaultSettings()
    settings.verbose = False
    settings.tol_gap_abs = settings.tol_gap_rel = settings.tol_feas = 1e-10
    result = clarabel.DefaultSolver(sp.triu(csc(problem.P)).tocsc(), np.asarray(problem.q), A, b,
                                    [clarabel.NonnegativeConeT(A.shape[0])], settings).solve()
    if str(result.status) != "Solved":
        raise RuntimeError(f"Clarabel: {result.status}")
    return float(result.obj_val)


def child_pjm(days: int) -> dict:
    """The scheduling QP over the last ``days`` whole days of the PJM load (365 by default,
    from 2010-12-30: n = 2 × 8760), the load scaled as the notebook does, with the day before's load
    as the forecast ŷ; solve, and solve + gradient of the schedule's true cost against the
    actual load with respect to ŷ, checked against a central difference along a random
    direction."""
    import jax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import numpy as np
    import altdiff_jax as ad
    from altdiff_jax.datasets import load_pjm

    load = load_pjm()["load"]
    whole = len(load) // 24 * 24
    training = (3 * 365 + 1) * 24  # 2008-2010, as the notebook scales
    scaled = (load[:whole] - load[:training].mean()) / load[:training].std()
    y = jnp.asarray(scaled[whole - 24 * days: whole])
    forecast = jnp.asarray(scaled[whole - 24 * days - 24: whole - 24])

    def true_cost(z):
        return jnp.sum(GAMMA_UNDER * jnp.maximum(y - z, 0) + GAMMA_OVER * jnp.maximum(z - y, 0) + 0.5 * (z - y) ** 2)

    def loss(y_hat):
        solution = ad.solve(scheduling_qp(y_hat))
        return true_cost(solution.x[: y.shape[0]]), solution

    value_and_grad = jax.jit(jax.value_and_grad(loss, has_aux=True))
    solve = jax.jit(lambda y_hat: ad.solve(scheduling_qp(y_hat)))
    row = {"days": days, "n": 2 * 24 * days}
    for name, function in (("solve", solve), ("solve + gradient", value_and_grad)):
        start = time.perf_counter()
        jax.block_until_ready(function(forecast + 0.01))
        first = time.perf_counter() - start
        start = time.perf_counter()
        out = jax.block_until_ready(function(forecast))
        row[name] = (first, time.perf_counter() - start)
    (_, solution), gradient = out
    direction = jnp.asarray(np.random.default_rng(0).standard_normal(y.shape[0]))
    step = 1e-6
    cost = jax.jit(lambda y_hat: loss(y_hat)[0])
    central = (cost(forecast + step * direction) - cost(forecast - step * direction)) / (2 * step)
    row["gradient error"] = float(abs(central - gradient @ direction) / abs(central))
    problem = scheduling_qp(forecast)
    x = solution.x
    objective = float(0.5 * x[: y.shape[0]] @ x[: y.shape[0]] + problem.q @ x)
    reference = _clarabel_objective(problem)
    row["status"] = ad.Status(int(solution.info.status)).name
    row["iterations"] = int(solution.info.iterations)
    row["polished"] = bool(solution.info.polished)
    row["objective error"] = abs(objective - reference) / max(1.0, abs(reference))
    row["violation"] = float(jnp.maximum(0.0, jnp.maximum(jnp.max(problem.G @ x - problem.h), jnp.max(-x[y.shape[0]:]))))
    row["peak MiB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
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


def table_rows(kind: str, sizes, timeout: float, cells, measured: Optional[list] = None) -> list[str]:
    """One table row per size, each measured in its own process (an error in the row's place);
    the measurements that succeeded are appended to ``measured``."""
    rows = []
    for size in sizes:
        row = run_child(kind, size, timeout)
        print(row, flush=True)
        rows.append(f"| {size} | " + (row["error"] if "error" in row else cells(row)) + " |")
        if measured is not None and "error" not in row:
            measured.append(row)
    return rows


def plot_mpc(measured: list, path: Path, title: str) -> bool:
    """Time (second calls) and peak memory of the MPC rows against n, to ``path``."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot", file=sys.stderr)
        return False
    n = [row["n"] for row in measured]
    figure, (times, memory) = plt.subplots(1, 2, figsize=(10, 4))
    for name, style in (("solve", "o-"), ("solve + gradient", "s-")):
        times.plot(n, [row[name][1] for row in measured], style, label=name)
    times.set(xscale="log", yscale="log", xlabel="n (= 3T)", ylabel="second call (s)", title="time")
    times.legend()
    memory.plot(n, [row["peak MiB"] for row in measured], "o-")
    memory.set(xscale="log", xlabel="n (= 3T)", ylabel="peak resident memory (MiB)", title="memory (whole process)")
    figure.suptitle(title, fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--horizons", type=int, nargs="*", default=[100, 1000, 3000, 10000])
    parser.add_argument("--paper", type=int, nargs="*", default=[100, 300])
    parser.add_argument("--pjm-days", type=int, nargs="*", default=[365])
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--output", type=Path)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, size = args.child
        print(json.dumps({"mpc": child_mpc, "paper": child_paper, "pjm": child_pjm}[kind](int(size))))
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

    measured = []
    lines += table_rows("mpc", args.horizons, args.timeout, mpc_cells, measured)
    if args.output and measured and plot_mpc(measured, args.output.with_suffix(".png"), lines[0]):
        lines += ["", f"![MPC time and memory against n]({args.output.with_suffix('.png').name})"]
    lines += ["", "## The paper's dense generator as BCOO against the dense path", "",
              "Gradient of gᵀx* with respect to every leaf, second call, seconds; the largest difference of the "
              "q, b, h gradients relative to the dense path's largest entry.", "",
              "| n | dense s | sparse (BCOO) s | gradient difference |", "|---:|---:|---:|---:|"]
    lines += table_rows("paper", args.paper, args.timeout,
                        lambda row: f"{row['dense']:.3f} | {row['sparse']:.3f} | {row['gradient difference']:.1e}")
    lines += ["", "## Energy scheduling over a year of hourly PJM load, as one problem", "",
              "The scheduling QP of `notebooks/energy_scheduling.ipynb` (Donti et al. 2017) over every hour of the "
              "last `days` days of the data at once (ramp limits across day boundaries too), BCOO, float64, "
              "the day before's load as the forecast; gradient of the schedule's true cost with respect to the "
              "forecast. Objective error: relative to Clarabel's (tolerances 1e-10); violation: the largest of "
              "Gx − h and −e (0 when none is positive); gradient error: against a central difference (step 1e-6) along a random direction, "
              "relative.", "",
              "| days | n | solve: first / second s | solve + gradient: first / second s | status | iterations "
              "| polished | objective error | violation | gradient error | peak MiB |",
              "|---:|---:|---|---|---|---:|---|---|---|---|---:|"]
    lines += table_rows("pjm", args.pjm_days, args.timeout, lambda row: (
        f"{row['n']} | {row['solve'][0]:.1f} / {row['solve'][1]:.2f} "
        f"| {row['solve + gradient'][0]:.1f} / {row['solve + gradient'][1]:.2f} | {row['status']} "
        f"| {row['iterations']} | {row['polished']} | {row['objective error']:.1e} | {row['violation']:.1e} "
        f"| {row['gradient error']:.1e} | {row['peak MiB']:.0f}"))
    text = "\n".join(lines) + "\n"
    print(text)
    if args.output:
        args.output.write_text(text)


if __name__ == "__main__":
    main()
