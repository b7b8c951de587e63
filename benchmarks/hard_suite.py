"""The hard problem suite: altdiff_jax vs OSQP (polish on and off), judged against Clarabel.

Run ``python benchmarks/hard_suite.py [--quick] [--tol 1e-6] [--max-iter 20000]``.

The problems are ``tests/hard_suite.py``'s: ``benchmark_cases()`` (a few hundred variables
for some LPs), or ``test_cases()`` with ``--quick``. Each case is solved, side by side in
one process, by

* OSQP (the C solver, ``osqp.OSQP``) with polishing on, then off: ``eps_abs = eps_rel = tol``,
  ``max_iter``, the other settings OSQP's defaults (``check_termination`` = 25 unless
  ``--check-termination``); the QP goes in as ``l = [b; −inf] <= [A; G] x <= u = [b; h]``;
* altdiff_jax: ``jax.jit(ad.solve)(ad.QP(...), ad.Options(tol=tol, max_iter=max_iter))``,
  compiled once per shape ahead of time, the Options passed as an argument.

Time is wall time, median of ``--repeats`` (3) runs after compilation, float64 on the CPU:
for OSQP each run is a fresh ``setup`` + ``solve`` (so both include scaling and the
factorisation). A run slower than ``--slow`` seconds (2) is not repeated (and a slow
OSQP warm-up is the measurement).

Verdicts (``tests/hard_suite.py``'s ``judge``: objective within 1e-5·max(1, |obj*|) of
Clarabel's, relative violation within tol), for a feasible bounded case:
``correct`` (SOLVED and judged right), ``wrong-SOLVED`` (SOLVED but judged wrong),
``wrong-infeasible`` (reported primal or dual infeasible), ``not-solved`` (MAX_ITER or
another status); for an infeasible or unbounded case: ``correct`` (the expected
certificate), ``wrong-SOLVED``, ``wrong-certificate`` (the other certificate),
``not-solved``.

Writes ``benchmarks/results/hard_suite.md`` (``--output``). The altdiff_jax adapter uses
only the public API (``QP``, ``solve``, ``Options``, ``Status``; ``sol.x``,
``sol.info.status``, ``sol.info.iterations``), so it runs against any engine version.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import importlib.util
import os
import pathlib
import statistics
import subprocess
import sys
import time
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

jax.config.update("jax_enable_x64", True)

import altdiff_jax as ad  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # tests/hard_suite.py imports tests/reference.py
_spec = importlib.util.spec_from_file_location("hard_suite_cases", ROOT / "tests" / "hard_suite.py")
suite = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(suite)

SOLVERS = ("OSQP polish", "OSQP no polish", "altdiff_jax")
OSQP_STATUS = {
    "solved": "SOLVED",
    "primal infeasible": "PRIMAL_INFEASIBLE",
    "dual infeasible": "DUAL_INFEASIBLE",
    "maximum iterations reached": "MAX_ITER",
}
VERDICTS_FEASIBLE = ("correct", "wrong-SOLVED", "wrong-infeasible", "not-solved")
VERDICTS_INFEASIBLE = ("correct", "wrong-SOLVED", "wrong-certificate", "not-solved")


@dataclasses.dataclass
class Run:
    """One solver on one case.

    Attributes:
        status: a ``Status`` name (``SOLVED``, ``MAX_ITER``, ...) or the solver's own word.
        iterations: iterations reported by the solver.
        seconds: median wall time.
        repeats: timed runs behind the median.
        x: the returned primal point.
        note: anything else worth a word (OSQP's polish outcome).
    """

    status: str
    iterations: int
    seconds: float
    repeats: int
    x: np.ndarray
    note: str = ""


def _timed(solve_once: Callable[[], object], repeats: int, slow: float,
           warm_up: bool = False) -> tuple[object, float, int]:
    """Runs ``solve_once`` up to ``repeats`` times; the last result, median seconds, runs made.

    With ``warm_up`` an untimed run comes first, unless it takes over ``slow`` seconds: then
    it is the one measurement. Any run over ``slow`` seconds ends the repeats.
    """
    if warm_up:
        start = time.perf_counter()
        result = solve_once()
        seconds = time.perf_counter() - start
        if seconds > slow:
            return result, seconds, 1
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = solve_once()
        times.append(time.perf_counter() - start)
        if times[-1] > slow:
            break
    return result, statistics.median(times), len(times)


# ----------------------------------------------------------------------------- OSQP


def osqp_data(case: dict) -> tuple:
    """``(P_upper, q, C, l, u)``: the case in OSQP's form ``l <= Cx <= u``, sparse CSC."""
    rows, lower, upper = [], [], []
    if case["A"] is not None:
        rows.append(case["A"])
        lower.append(case["b"])
        upper.append(case["b"])
    if case["G"] is not None:
        rows.append(case["G"])
        lower.append(np.full(case["h"].size, -np.inf))
        upper.append(case["h"])
    return (sp.csc_matrix(np.triu(case["P"])), case["q"], sp.csc_matrix(np.vstack(rows)),
            np.concatenate(lower), np.concatenate(upper))


def run_osqp(case: dict, tol: float, max_iter: int, polish: bool, check_termination: int,
             repeats: int, slow: float) -> Run:
    """OSQP on one case: a fresh setup + solve per timed run, after one warm-up run."""
    import osqp

    data = osqp_data(case)
    settings = dict(eps_abs=tol, eps_rel=tol, max_iter=max_iter, polishing=polish,
                    check_termination=check_termination, verbose=False)

    def solve_once():
        solver = osqp.OSQP()
        solver.setup(*data, **settings)
        return solver.solve()

    result, seconds, runs = _timed(solve_once, repeats, slow, warm_up=True)
    info = result.info
    status = OSQP_STATUS.get(info.status, info.status)
    note = ""
    if polish and status == "SOLVED":
        note = {1: "polished", -1: "polish failed", 0: "not polished"}.get(int(info.status_polish), "")
    x = np.full(case["q"].size, np.nan) if result.x is None else np.asarray(result.x, float)
    return Run(status, int(info.iter), seconds, runs, x, note)


# ----------------------------------------------------------------------------- altdiff_jax


_solve = jax.jit(ad.solve)
_compiled: dict = {}


def to_qp(case: dict) -> ad.QP:
    """The case as an ``ad.QP`` of float64 arrays (None for absent blocks)."""
    return ad.QP(**{k: None if case[k] is None else jnp.asarray(case[k]) for k in ("P", "q", "A", "b", "G", "h")})


def run_altdiff(case: dict, options: ad.Options, repeats: int, slow: float) -> Run:
    """``jax.jit(ad.solve)`` on one case, compiled ahead of time once per shape."""
    problem = to_qp(case)
    key = jax.tree_util.tree_structure((problem, options)), suite.shape(case)
    if key not in _compiled:
        _compiled[key] = _solve.lower(problem, options).compile()
    compiled = _compiled[key]
    solution, seconds, runs = _timed(lambda: jax.block_until_ready(compiled(problem, options)), repeats, slow)
    info = solution.info
    try:
        status = ad.Status(int(info.status)).name
    except ValueError:
        status = f"status {int(info.status)}"
    iterations = int(getattr(info, "iterations", -1))
    return Run(status, iterations, seconds, runs, np.asarray(solution.x, float))


# ----------------------------------------------------------------------------- judging


@dataclasses.dataclass
class Judged:
    """A run with its measures against the reference and its verdict."""

    run: Run
    verdict: str
    objective_error: float
    violation: float


def judge_run(case: dict, run: Run, reference_objective: Optional[float], tol: float) -> Judged:
    """The verdict of one run (see the module docstring), with its error measures."""
    finite = bool(np.all(np.isfinite(run.x)))
    violation = suite.violation(case, run.x) if finite else float("nan")
    error = float("nan")
    if reference_objective is not None and finite:
        error = suite.objective_error(suite.objective(case, run.x), reference_objective)
    certificates = ("PRIMAL_INFEASIBLE", "DUAL_INFEASIBLE")
    if case["expected"] == "SOLVED":
        if run.status == "SOLVED":
            right = finite and suite.judge(suite.objective(case, run.x), reference_objective,
                                           suite.primal_residual(case, run.x), tol)
            verdict = "correct" if right else "wrong-SOLVED"
        else:
            verdict = "wrong-infeasible" if run.status in certificates else "not-solved"
    elif run.status == case["expected"]:
        verdict = "correct"
    elif run.status == "SOLVED":
        verdict = "wrong-SOLVED"
    else:
        verdict = "wrong-certificate" if run.status in certificates else "not-solved"
    return Judged(run, verdict, error, violation)


# ----------------------------------------------------------------------------- report


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def _cpu_model() -> str:
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def _package_fingerprint() -> str:
    """Where altdiff_jax was imported from, and whether its sources are HEAD's: the engine measured."""
    package = pathlib.Path(ad.__file__).resolve().parent
    files = {path.name: path.read_bytes() for path in sorted(package.glob("*.py"))}
    head_names = [name.split("/")[-1] for name in _git("ls-tree", "--name-only", "HEAD", "altdiff_jax/").split()]
    same = set(head_names) == set(files) and all(
        subprocess.run(["git", "show", f"HEAD:altdiff_jax/{name}"], cwd=ROOT, capture_output=True).stdout
        == files[name] for name in files)
    digest = hashlib.sha1(b"".join(name.encode() + data for name, data in files.items())).hexdigest()[:10]
    return f"altdiff_jax from {package} ({'= HEAD' if same else 'differs from HEAD'}, sources sha1 {digest})"


def header(args: argparse.Namespace, which: str) -> list[str]:
    """The provenance lines of the report."""
    import clarabel
    import osqp

    return [
        "# Hard problem suite: altdiff_jax vs OSQP",
        "",
        f"git {_git('rev-parse', '--short', 'HEAD')}, {datetime.datetime.now().isoformat(timespec='seconds')}, "
        f"{_cpu_model()}, {os.cpu_count()} cores; jax {jax.__version__}, osqp {osqp.__version__}, "
        f"clarabel {clarabel.__version__}; {_package_fingerprint()}.",
        "",
        f"Set: `{which}` ({'--quick' if args.quick else 'full'}); tol {args.tol:g}, max_iter {args.max_iter}, "
        f"OSQP check_termination {args.check_termination}; float64, CPU; time = median wall time of up to "
        f"{args.repeats} runs after compilation / one warm-up (OSQP: setup + solve), a run over {args.slow:g} s "
        f"not repeated. Correct = objective within 1e-5·max(1, |obj*|) of Clarabel's and violation within "
        f"tol·(1 + max(‖Ax‖∞, ‖Gx‖∞, ‖s‖∞, ‖b‖∞, ‖h‖∞)) (`tests/hard_suite.py::judge`).",
        "",
    ]


def summary_lines(cases: list[dict], results: dict) -> list[str]:
    """One line per solver: the verdict counts, feasible and infeasible cases apart."""
    lines = ["## Summary", ""]
    feasible = [c for c in cases if c["expected"] == "SOLVED"]
    infeasible = [c for c in cases if c["expected"] != "SOLVED"]
    for solver in SOLVERS:
        def count(group, verdict):
            return sum(results[c["name"]][solver].verdict == verdict for c in group)

        seconds = sum(results[c["name"]][solver].run.seconds for c in cases)
        lines.append(
            f"- **{solver}**: feasible {len(feasible)}: correct {count(feasible, 'correct')}, "
            f"wrong SOLVED {count(feasible, 'wrong-SOLVED')}, wrong infeasible "
            f"{count(feasible, 'wrong-infeasible')}, MAX_ITER/other {count(feasible, 'not-solved')}; "
            f"infeasible/unbounded {len(infeasible)}: correct certificate {count(infeasible, 'correct')}, "
            f"wrong SOLVED {count(infeasible, 'wrong-SOLVED')}, wrong certificate "
            f"{count(infeasible, 'wrong-certificate')}, MAX_ITER/other {count(infeasible, 'not-solved')}; "
            f"total time {seconds:.2f} s"
        )
    return lines + [""]


def category_table(cases: list[dict], results: dict) -> list[str]:
    """Correct verdicts per category and solver."""
    lines = ["## Correct per category", "", "| category | cases | " + " | ".join(SOLVERS) + " |",
             "|---|---|" + "---|" * len(SOLVERS)]
    for category in suite.CATEGORIES:
        group = [c for c in cases if c["category"] == category]
        if group:
            cells = [str(sum(results[c["name"]][s].verdict == "correct" for c in group)) for s in SOLVERS]
            lines.append(f"| {category} | {len(group)} | " + " | ".join(cells) + " |")
    return lines + [""]


def _fmt(value: float, spec: str = ".1e") -> str:
    return "—" if value is None or not np.isfinite(value) else format(value, spec)


def case_table(cases: list[dict], results: dict) -> list[str]:
    """One row per case and solver."""
    lines = ["## Cases", "",
             "| case | category | (n, p, m) | expected | solver | verdict | status | iterations | time (ms) "
             "| obj rel err | max violation |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for case in cases:
        for solver in SOLVERS:
            j = results[case["name"]][solver]
            verdict = j.verdict if j.verdict == "correct" else f"**{j.verdict}**"
            status = j.run.status + (f" ({j.run.note})" if j.run.note else "")
            ms = f"{1e3 * j.run.seconds:.1f}" + ("" if j.run.repeats > 1 else " (1 run)")
            lines.append(f"| {case['name']} | {case['category']} | {suite.shape(case)} | {case['expected']} "
                         f"| {solver} | {verdict} | {status} | {j.run.iterations} | {ms} "
                         f"| {_fmt(j.objective_error)} | {_fmt(j.violation)} |")
    return lines + [""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the small test_cases() set")
    parser.add_argument("--tol", type=float, default=1e-6)
    parser.add_argument("--max-iter", type=int, default=20_000)
    parser.add_argument("--check-termination", type=int, default=25, help="OSQP's check_termination")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--slow", type=float, default=2.0, help="seconds after which a run is not repeated")
    parser.add_argument("--only", default="", help="run only the cases whose name contains this")
    parser.add_argument("--output", type=pathlib.Path, default=ROOT / "benchmarks" / "results" / "hard_suite.md")
    args = parser.parse_args()

    which = "test_cases()" if args.quick else "benchmark_cases()"
    cases = [c for c in (suite.test_cases() if args.quick else suite.benchmark_cases()) if args.only in c["name"]]
    options = ad.Options(tol=args.tol, max_iter=args.max_iter)
    results: dict = {}
    start = time.perf_counter()
    for case in cases:
        reference_objective = suite.reference(case)[3] if case["expected"] == "SOLVED" else None
        runs = {
            "OSQP polish": run_osqp(case, args.tol, args.max_iter, True, args.check_termination,
                                    args.repeats, args.slow),
            "OSQP no polish": run_osqp(case, args.tol, args.max_iter, False, args.check_termination,
                                       args.repeats, args.slow),
            "altdiff_jax": run_altdiff(case, options, args.repeats, args.slow),
        }
        results[case["name"]] = {s: judge_run(case, r, reference_objective, args.tol) for s, r in runs.items()}
        print(f"{case['name']:55s} " + "  ".join(
            f"{s}: {j.verdict} ({j.run.status}, {j.run.iterations} it, {1e3 * j.run.seconds:.1f} ms)"
            for s, j in results[case["name"]].items()), flush=True)
        # Rewritten after every case, so an interrupted run leaves the cases it finished.
        done = [c for c in cases if c["name"] in results]
        write_report(args, which, done, results, time.perf_counter() - start, len(cases))
    print("\n".join(summary_lines(cases, results)))
    print(f"wrote {args.output} in {time.perf_counter() - start:.0f} s")


def write_report(args: argparse.Namespace, which: str, cases: list[dict], results: dict, elapsed: float,
                 total: int) -> None:
    """Writes the markdown report of the finished ``cases`` (of ``total``) to ``args.output``."""
    lines = header(args, which)
    if len(cases) < total:
        lines += [f"**Partial: {len(cases)} of {total} cases finished.**", ""]
    lines += summary_lines(cases, results)
    lines += [f"Whole run (references, compilation and timing included): {elapsed:.0f} s.", ""]
    lines += category_table(cases, results) + case_table(cases, results)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("\n".join(lines))


if __name__ == "__main__":
    main()
