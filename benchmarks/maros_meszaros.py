"""The Maros–Meszaros QP set: altdiff_jax vs OSQP (C), judged against Clarabel.

Run ``python benchmarks/maros_meszaros.py [DATA_DIR] [--subset dense|all] [--only NAME ...] [--sparse]``.

The problems are read from ``DATA_DIR`` (default ``$ALTDIFF_DATA/maros_meszaros``, else
``../shared/data/maros_meszaros`` next to the repository): ``.mat`` files holding ``P``, ``q``,
``A``, ``l``, ``u`` for ``min ½xᵀPx + qᵀx  s.t.  l <= Ax <= u`` (±1e20 is infinite). The
``dense`` subset is the problems with n <= 1000 and m <= 1000 (qpbenchmark's dense subset).

Each problem is solved, in one process, by

* Clarabel (interior point, tolerances 1e-9): the reference objective, or its certificate;
* OSQP (C) with polishing, in its own form ``l <= Ax <= u``: ``eps_abs = eps_rel = tol``,
  ``max_iter``, the other settings its defaults;
* altdiff_jax, ``jax.jit(ad.solve)`` with ``Options(tol=tol, max_iter=max_iter)`` on dense
  float64 arrays: rows with ``l = u`` become ``Ax = b``; rows with one nonzero become bounds
  ``lb <= x <= ub``; the other rows become ``Gx <= h`` (one row per finite side). With
  ``--sparse``, P, A and G are ``jax.experimental.sparse.BCOO`` matrices (the sparse path:
  conjugate gradients, nothing formed densely), and each problem is solved in a process of
  its own, stopped after ``--timeout`` seconds (reported ``TIMEOUT``, not solved).

Verdicts for a problem Clarabel solves: ``correct`` (SOLVED, objective within 1e-4·max(1, |obj*|)
of Clarabel's and violation of ``l <= Ax <= u`` within 1e-5·(1 + max(‖Ax‖∞, finite |l|, |u|))),
``wrong-SOLVED``, ``wrong-infeasible`` (a certificate of infeasibility or unboundedness),
``not-solved`` (MAX_ITER or another status). Time: one run after compilation (OSQP: setup +
solve, after one warm-up run). Writes ``benchmarks/results/maros_meszaros.md``, or
``maros_meszaros_sparse.md`` with ``--sparse`` (``--output``), and beside it a plot of
each solver's time per problem against n (``.png``; ``--plot-from REPORT`` draws it again
from a report).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import textwrap
import time
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
import scipy.io
import scipy.sparse as sp
from jax.experimental import sparse as jsparse

jax.config.update("jax_enable_x64", True)

import altdiff_jax as ad  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("hard_suite_bench", ROOT / "benchmarks" / "hard_suite.py")
hard_suite = sys.modules[_spec.name] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(hard_suite)

INFINITY = 1e19
OBJECTIVE_RTOL = 1e-4
FEASIBILITY_TOL = 1e-5
VERDICTS = ("correct", "wrong-SOLVED", "wrong-infeasible", "not-solved")
OSQP_STATUS = {"solved": "SOLVED", "primal infeasible": "PRIMAL_INFEASIBLE",
               "dual infeasible": "DUAL_INFEASIBLE", "maximum iterations reached": "MAX_ITER"}


@dataclasses.dataclass
class Problem:
    """One Maros–Meszaros problem: ``min ½xᵀPx + qᵀx  s.t.  l <= Ax <= u`` (sparse CSC)."""

    name: str
    P: sp.csc_matrix
    q: np.ndarray
    A: sp.csc_matrix
    l: np.ndarray
    u: np.ndarray

    @property
    def n(self) -> int:
        return self.q.size

    @property
    def m(self) -> int:
        return self.l.size

    def objective(self, x: np.ndarray) -> float:
        return float(0.5 * x @ (self.P @ x) + self.q @ x)

    def violation(self, x: np.ndarray) -> float:
        """Violation of ``l <= Ax <= u`` relative to 1 + max(‖Ax‖∞, the finite |l|, |u|)."""
        if self.m == 0:
            return 0.0
        Ax = self.A @ x
        lower = np.where(self.l > -INFINITY, self.l - Ax, 0.0)
        upper = np.where(self.u < INFINITY, Ax - self.u, 0.0)
        finite = np.concatenate([np.abs(self.l[self.l > -INFINITY]), np.abs(self.u[self.u < INFINITY]), [0.0]])
        scale = 1.0 + max(np.abs(Ax).max(initial=0.0), finite.max())
        return float(max(lower.max(initial=0.0), upper.max(initial=0.0)) / scale)


def load(path: pathlib.Path) -> Problem:
    data = scipy.io.loadmat(path)
    vector = lambda key: np.asarray(data[key], float).ravel()  # noqa: E731
    P = sp.csc_matrix(data["P"], dtype=float)
    P = sp.csc_matrix((P + P.T) / 2)  # some files store P with a round-off asymmetry
    return Problem(path.stem, P, vector("q"), sp.csc_matrix(data["A"], dtype=float), vector("l"), vector("u"))


# ----------------------------------------------------------------------------- conversions


def to_qp(problem: Problem, sparse: bool = False) -> ad.QP:
    """The problem in altdiff_jax's form ``Ax = b, Gx <= h, lb <= x <= ub`` (float64; the
    matrices dense arrays, or BCOO matrices with ``sparse``)."""
    A = problem.A.tocsr()
    l, u = problem.l, problem.u
    counts = np.diff(A.indptr)
    equality = (l == u) & (np.abs(l) < INFINITY)
    singleton = (counts == 1) & ~equality
    lb, ub = np.full(problem.n, -np.inf), np.full(problem.n, np.inf)
    for row in np.flatnonzero(singleton):
        column, value = A.indices[A.indptr[row]], A.data[A.indptr[row]]
        low, high = (l[row] / value, u[row] / value) if value > 0 else (u[row] / value, l[row] / value)
        if abs(low) < INFINITY / abs(value):
            lb[column] = max(lb[column], low)
        if abs(high) < INFINITY / abs(value):
            ub[column] = min(ub[column], high)
    general = ~equality & ~singleton & (counts > 0)
    upper = general & (u < INFINITY)
    lower = general & (l > -INFINITY)
    G = sp.vstack([A[upper], -A[lower]])
    h = np.concatenate([u[upper], -l[lower]])

    def matrix(block):
        if not block.shape[0]:
            return None
        if sparse:
            return jsparse.BCOO.from_scipy_sparse(sp.coo_matrix(block))
        return jnp.asarray(block.toarray())

    vector = lambda block: jnp.asarray(block) if block.size else None  # noqa: E731
    bounded_below, bounded_above = np.isfinite(lb).any(), np.isfinite(ub).any()
    return ad.QP(
        P=matrix(problem.P), q=jnp.asarray(problem.q),
        A=matrix(A[equality]), b=vector(l[equality]),
        G=matrix(G), h=vector(h),
        lb=jnp.asarray(lb) if bounded_below else None, ub=jnp.asarray(ub) if bounded_above else None,
    )


# ----------------------------------------------------------------------------- solvers


@dataclasses.dataclass
class Run:
    status: str
    iterations: int
    seconds: float
    x: Optional[np.ndarray]


def run_clarabel(problem: Problem) -> Run:
    """Clarabel on ``l <= Ax <= u``: equalities in the zero cone, finite sides in R₊."""
    import clarabel

    A = problem.A.tocsr()
    equality = (problem.l == problem.u) & (np.abs(problem.l) < INFINITY)
    upper = ~equality & (problem.u < INFINITY)
    lower = ~equality & (problem.l > -INFINITY)
    blocks = [A[equality], A[upper], -A[lower]]
    rhs = np.concatenate([problem.l[equality], problem.u[upper], -problem.l[lower]])
    cones = [clarabel.ZeroConeT(int(equality.sum()))] if equality.any() else []
    if upper.sum() + lower.sum():
        cones.append(clarabel.NonnegativeConeT(int(upper.sum() + lower.sum())))
    settings = clarabel.DefaultSettings()
    settings.verbose = False
    settings.tol_gap_abs = settings.tol_gap_rel = settings.tol_feas = 1e-9
    settings.max_iter = 500
    start = time.perf_counter()
    solution = clarabel.DefaultSolver(sp.triu(problem.P).tocsc(), problem.q, sp.vstack(blocks).tocsc(), rhs,
                                      cones, settings).solve()
    status = str(solution.status)
    name = {"Solved": "SOLVED", "AlmostSolved": "SOLVED", "PrimalInfeasible": "PRIMAL_INFEASIBLE",
            "DualInfeasible": "DUAL_INFEASIBLE"}.get(status, status)
    return Run(name, int(solution.iterations), time.perf_counter() - start, np.asarray(solution.x, float))


def run_osqp(problem: Problem, tol: float, max_iter: int) -> Run:
    import osqp

    settings = dict(eps_abs=tol, eps_rel=tol, max_iter=max_iter, polishing=True, verbose=False)
    P = sp.triu(problem.P).tocsc()

    def solve_once():
        solver = osqp.OSQP()
        solver.setup(P, problem.q, problem.A, np.maximum(problem.l, -1e30), np.minimum(problem.u, 1e30), **settings)
        return solver.solve()

    result, seconds, _ = hard_suite._timed(solve_once, 1, 2.0, warm_up=True)
    x = None if result.x is None else np.asarray(result.x, float)
    return Run(OSQP_STATUS.get(result.info.status, result.info.status), int(result.info.iter), seconds, x)


_solve = jax.jit(ad.solve)


def run_altdiff(problem: Problem, options: ad.Options, sparse: bool = False) -> Run:
    qp = to_qp(problem, sparse)
    compiled = _solve.lower(qp, options).compile()
    start = time.perf_counter()
    solution = jax.block_until_ready(compiled(qp, options))
    seconds = time.perf_counter() - start
    return Run(ad.Status(int(solution.info.status)).name, int(solution.info.iterations), seconds,
               np.asarray(solution.x, float))


def run_altdiff_apart(path: pathlib.Path, options: ad.Options, timeout: float) -> Run:
    """:func:`run_altdiff` on the sparse path in a process of its own, stopped after
    ``timeout`` seconds (status ``TIMEOUT``; the time then counts the compilation too)."""
    with tempfile.TemporaryDirectory() as directory:
        solution_file = pathlib.Path(directory) / "x.npy"
        command = [sys.executable, __file__, "--child", str(path), str(solution_file),
                   "--tol", str(options.tol), "--max-iter", str(options.max_iter)]
        start = time.perf_counter()
        try:
            out = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return Run("TIMEOUT", 0, time.perf_counter() - start, None)
        result_file = solution_file.with_suffix(".json")
        if out.returncode != 0 or not result_file.exists():
            print(out.stderr[-2000:], file=sys.stderr)
            return Run(f"CRASHED ({out.returncode})", 0, time.perf_counter() - start, None)
        result = json.loads(result_file.read_text())
        return Run(result["status"], result["iterations"], result["seconds"], np.load(solution_file))


def child(path: str, solution_file: str, tol: float, max_iter: int) -> None:
    run = run_altdiff(load(pathlib.Path(path)), ad.Options(tol=tol, max_iter=max_iter), sparse=True)
    np.save(solution_file, run.x)
    result = json.dumps({"status": run.status, "iterations": run.iterations, "seconds": run.seconds})
    pathlib.Path(solution_file).with_suffix(".json").write_text(result)


# ----------------------------------------------------------------------------- judging


def verdict(problem: Problem, run: Run, reference: Run) -> str:
    """The run judged against Clarabel's (the module docstring's rule)."""
    if reference.status != "SOLVED":
        if run.status == reference.status:
            return "correct"
        return "wrong-SOLVED" if run.status == "SOLVED" else "not-solved"
    if run.status in ("PRIMAL_INFEASIBLE", "DUAL_INFEASIBLE"):
        return "wrong-infeasible"
    if run.status != "SOLVED":
        return "not-solved"
    target = problem.objective(reference.x)
    close = abs(problem.objective(run.x) - target) <= OBJECTIVE_RTOL * max(1.0, abs(target))
    return "correct" if close and problem.violation(run.x) <= FEASIBILITY_TOL else "wrong-SOLVED"


def data_dir(argument: Optional[str]) -> pathlib.Path:
    if argument:
        return pathlib.Path(argument)
    if os.environ.get("ALTDIFF_DATA"):
        return pathlib.Path(os.environ["ALTDIFF_DATA"]) / "maros_meszaros"
    return ROOT.parent / "shared" / "data" / "maros_meszaros"


def select(directory: pathlib.Path, subset: str, only: list[str]) -> list[pathlib.Path]:
    paths = sorted(directory.glob("*.mat"))
    if only:
        return [path for path in paths if path.stem in only]
    if subset == "all":
        return paths
    chosen = []
    for path in paths:
        sizes = scipy.io.loadmat(path, variable_names=["n", "m"])
        if int(np.ravel(sizes["n"])[0]) <= 1000 and int(np.ravel(sizes["m"])[0]) <= 1000:
            chosen.append(path)
    return chosen


# ----------------------------------------------------------------------------- report


SOLVERS = ("OSQP", "altdiff_jax")


def summary(rows: list[dict]) -> list[str]:
    lines = ["| solver | correct | wrong SOLVED | wrong infeasible | not solved (of which MAX_ITER, TIMEOUT) "
             "| time (s) |", "|---|---|---|---|---|---|"]
    for solver in SOLVERS:
        counts = {v: sum(row[solver + " verdict"] == v for row in rows) for v in VERDICTS}
        max_iter = sum(row[solver].status == "MAX_ITER" for row in rows)
        timeout = sum(row[solver].status == "TIMEOUT" for row in rows)
        seconds = sum(row[solver].seconds for row in rows)
        lines.append(f"| {solver} | {counts['correct']} | {counts['wrong-SOLVED']} | {counts['wrong-infeasible']} "
                     f"| {counts['not-solved']} ({max_iter}, {timeout}) | {seconds:.1f} |")
    return lines


def problem_table(rows: list[dict]) -> list[str]:
    lines = ["| problem | n | m | Clarabel | OSQP | iters | s | altdiff_jax | iters | s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        cells = [row["name"], str(row["n"]), str(row["m"]), row["Clarabel"].status]
        for solver in SOLVERS:
            run = row[solver]
            mark = "" if row[solver + " verdict"] == "correct" else f" ({row[solver + ' verdict']})"
            cells += [run.status + mark, str(run.iterations), f"{run.seconds:.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def write_report(path: pathlib.Path, args: argparse.Namespace, rows: list[dict], elapsed: float) -> None:
    import clarabel
    import osqp

    import datetime

    lines = [
        f"# Maros–Meszaros{' (sparse path)' if args.sparse else ''}: altdiff_jax vs OSQP (C), judged against Clarabel",
        "",
        f"git {hard_suite._git('rev-parse', '--short', 'HEAD')}, {datetime.datetime.now().isoformat(timespec='seconds')}, "
        f"{hard_suite._cpu_model()}, {os.cpu_count()} cores; jax {jax.__version__}, osqp {osqp.__version__}, "
        f"clarabel {clarabel.__version__}; {hard_suite._package_fingerprint()}.", "",
        f"Command: `python benchmarks/maros_meszaros.py --subset {args.subset}"
        f"{f' --sparse --timeout {args.timeout:g}' if args.sparse else ''}` ({len(rows)} problems). "
        f"altdiff_jax on {'BCOO matrices (the sparse path), each problem in a process of its own' if args.sparse else 'dense arrays'}; "
        f"tol {args.tol:g}, max_iter {args.max_iter}, float64, CPU. Correct = SOLVED with objective within "
        f"{OBJECTIVE_RTOL:g}·max(1, |obj*|) of Clarabel's and violation of l <= Ax <= u within "
        f"{FEASIBILITY_TOL:g}·(1 + max(‖Ax‖∞, finite |l|, |u|)). Time: one run after compilation "
        f"(OSQP: setup + solve after a warm-up)"
        f"{'; a TIMEOUT counts the whole process, compilation included' if args.sparse else ''}. "
        f"Whole run {elapsed:.0f} s.", "",
        "## Summary", "", *summary(rows), "", "## Per problem", "", *problem_table(rows), "",
    ]
    path.write_text("\n".join(lines))


def table_rows(path: pathlib.Path) -> list[dict]:
    """The per-problem rows of a report :func:`write_report` wrote (for ``--plot-from``)."""
    rows, in_table = [], False
    for line in path.read_text().splitlines():
        if line.startswith("| problem |"):
            in_table = True
            continue
        if in_table and not line.startswith("|"):
            break  # the end of the table
        if not in_table or line.startswith("|---"):
            continue
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        row = {"name": cells[0], "n": int(cells[1]), "m": int(cells[2])}
        for offset, solver in ((4, "OSQP"), (7, "altdiff_jax")):
            cell = cells[offset]
            status, _, verdict = cell[:-1].rpartition(" (") if cell.endswith(")") else (cell, "", "correct")
            row[solver] = Run(status, int(cells[offset + 1]), float(cells[offset + 2]), None)
            row[solver + " verdict"] = verdict
        rows.append(row)
    return rows


def plot(rows: list[dict], path: pathlib.Path, title: str) -> bool:
    """Each solver's time per problem against n, correct and not, to ``path`` (PNG)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot", file=sys.stderr)
        return False
    figure, axes = plt.subplots(figsize=(8, 5))
    for solver, color in zip(SOLVERS, ("tab:blue", "tab:orange")):
        for correct in (True, False):
            chosen = [row for row in rows if (row[solver + " verdict"] == "correct") == correct]
            axes.scatter([row["n"] for row in chosen], [max(row[solver].seconds, 1e-4) for row in chosen],
                         marker="o", s=22, color=color if correct else "none", edgecolors=color,
                         label=f"{solver}: {'correct' if correct else 'not solved or wrong'} ({len(chosen)})")
    axes.set(xscale="log", yscale="log", xlabel="n (variables)", ylabel="time per problem (s)",
             title="Maros–Meszaros: time against size")
    axes.legend(fontsize=8)
    figure.suptitle(textwrap.fill(title, 150), fontsize=6)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", nargs="?", help="directory of the .mat files")
    parser.add_argument("--subset", choices=("dense", "all"), default="dense")
    parser.add_argument("--only", nargs="*", default=[])
    parser.add_argument("--tol", type=float, default=1e-6)
    parser.add_argument("--max-iter", type=int, default=20000)
    parser.add_argument("--sparse", action="store_true", help="altdiff_jax on BCOO matrices, each problem apart")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per problem with --sparse")
    parser.add_argument("--output")
    parser.add_argument("--plot-from", type=pathlib.Path, help="only draw the plot of a results file")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child, args.tol, args.max_iter)
        return
    if args.plot_from:
        plot(table_rows(args.plot_from), args.plot_from.with_suffix(".png"), args.plot_from.read_text().splitlines()[2])
        return
    name = "maros_meszaros_sparse.md" if args.sparse else "maros_meszaros.md"
    args.output = args.output or str(ROOT / "benchmarks" / "results" / name)
    start = time.perf_counter()
    options = ad.Options(tol=args.tol, max_iter=args.max_iter)
    rows = []
    for path in select(data_dir(args.data), args.subset, args.only):
        problem = load(path)
        row = {"name": problem.name, "n": problem.n, "m": problem.m, "Clarabel": run_clarabel(problem),
               "OSQP": run_osqp(problem, args.tol, args.max_iter),
               "altdiff_jax": (run_altdiff_apart(path, options, args.timeout) if args.sparse
                               else run_altdiff(problem, options))}
        for solver in SOLVERS:
            row[solver + " verdict"] = verdict(problem, row[solver], row["Clarabel"])
        rows.append(row)
        print(f"{problem.name:10s} n {problem.n:5d} m {problem.m:5d} ref {row['Clarabel'].status:18s} "
              + "  ".join(f"{s} {row[s].status} {row[s].iterations} {row[s].seconds:.2f}s {row[s + ' verdict']}"
                          for s in SOLVERS), flush=True)
    write_report(pathlib.Path(args.output), args, rows, time.perf_counter() - start)
    plot(rows, pathlib.Path(args.output).with_suffix(".png"), pathlib.Path(args.output).read_text().splitlines()[2])


if __name__ == "__main__":
    main()
