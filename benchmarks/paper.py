"""The paper's tables, reproduced side by side with the peers.

Run ``python benchmarks/paper.py --quick`` (small sizes: minutes) or ``--full`` (the
paper's sizes: hours, for a quiet machine); also ``python -m benchmarks.paper``. Options:
``--tables 1 2 4 5 6``, ``--tol`` (default 1e-6, the tolerance of every solver),
``--budget-s`` (per contender and problem), ``--repeats``, ``--peers`` (substrings of the
labels to keep), ``--sizes`` (Table 1's sizes to keep, by label), ``--out`` (default
benchmarks/results).

Writes ``paper_table{1,2,4,5,6}.md`` and ``.png``:

* Table 1, dense quadratic layer (paper Table 1): the paper's generator (P = MᵀM, M
  Gaussian; q, A, G Gaussian; b = A x0, h = G x0 + U(0, 1)) at its sizes (n, inequalities,
  equalities) Tiny (1500, 500, 200), Small (3000, 1000, 500), Medium (5000, 2000, 1000),
  Large (10000, 5000, 2000) with ``--full``; n = 100, 300, 500 in the same proportions, and
  Tiny, with ``--quick``. Set-up, forward, backward and total time, and the gradient of gᵀx* with
  respect to P, q, A, b, G, h (each contender: all it supports) against the exact one.
* Table 2, truncation (paper Table 2): tolerances 1e-1 … 1e-6 on one problem (Small;
  n = 300 with ``--quick``): iterations, time and gradient accuracy of altdiff_jax, qpth
  and cvxpylayers (the paper's contenders, each with its tolerance set to the value).
* Table 4, constrained sparsemax (paper appendix Table 4): n = 3000, 5000, 10000, 20000
  (2n inequality constraints); n = 100, 300, 1000 with ``--quick``. altdiff_jax,
  cvxpylayers ("lsqr" derivative, as in the paper) and qpth (the dense QP).
* Table 5, truncation for constrained sparsemax (paper Table 5): tolerances 1e-1 … 1e-6
  at n = 10000 (n = 1000 with ``--quick``).
* Table 6, constrained softmax (paper appendix Table 6, a non-quadratic objective):
  n = 100, 300, 500, 1000 (100, 300 with ``--quick``), altdiff_jax vs cvxpylayers. The
  paper's Table 6 adds dense random constraints to an entropy objective; here the layer is
  ``constrained_softmax(y, u)`` (1ᵀx = 1, x <= u), whose exact gradient is closed-form.

Methods and fairness: every solver gets the same tolerance (``--tol``) where it has one;
see ``benchmarks/harness/peers.py`` for each adapter's settings. Times are the best of
``--repeats`` runs interleaved across contenders (each contender in its own child process,
so that a slow or crashing one is stopped at the budget without taking the others down);
set-up (compilation, canonicalization) is reported apart and excluded from the totals.
Backward is measured apart for qpth, OSQP and cvxpylayers, and is total − forward for the
jitted JAX contenders (altdiff_jax's ``altdiff`` strategy carries its Jacobians in the
forward loop under grad: that cost lands in its backward column). Gradient references:
Clarabel (or a dense interior point) and the dense active-set KKT adjoint for QPs
(``harness.reference``); the closed forms of ``benchmarks/layers.py`` for the layers.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import time

if __package__:
    from . import harness, layers
else:
    import harness
    import layers

TOLERANCES = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6)
QUICK = dict(
    table1=[("n=100", 100, 33, 13), ("n=300", 300, 100, 40), ("n=500", 500, 167, 67), ("Tiny", 1500, 500, 200)],
    table2=("n=300", 300, 100, 40), table4=(100, 300, 1000), table5=1000, table6=(100, 300),
    budget_s=120.0, repeats=5, once_s=5.0, jobs=2)
FULL = dict(
    table1=[("Tiny", 1500, 500, 200), ("Small", 3000, 1000, 500), ("Medium", 5000, 2000, 1000),
            ("Large", 10000, 5000, 2000)],
    table2=("Small", 3000, 1000, 500), table4=(3000, 5000, 10000, 20000), table5=10000,
    table6=(100, 300, 500, 1000), budget_s=900.0, repeats=3, once_s=30.0, jobs=1)
PEERS = ("altdiff_jax", "qpax", "jaxopt", "cvxpylayers", "diffcp", "qpth", "torch", "osqp", "clarabel")


# ------------------------------------------------------------------------------ contenders


def qp_memory(n: int, p: int, m: int) -> float:
    """Rough peak bytes of a dense-QP contender's child: the data thrice, two dense KKT-sized
    matrices."""
    return 8.0 * (3 * n * (n + p + m) + 2 * (n + p + m) ** 2)


def qp_contenders(tol: float, n: int, p: int, m: int, table2: bool = False) -> list:
    memory = qp_memory(n, p, m)
    c = harness.contender
    jacobians = 8.0 * 6 * n * (n + p + m)  # the altdiff strategy's carried Jacobians
    canonical = 8.0 * 30 * n * n  # cvxpylayers' parameter-to-data map of the n² entries of Lᵀ
    altdiff = [c(f"altdiff_jax {s}", "altdiff", tol, memory + (jacobians if s == "altdiff" else 0), differentiation=s)
               for s in layers.STRATEGIES]
    peers = [c("cvxpylayers (dense)", "cvxpylayers_qp", tol, memory + canonical, mode="dense"),
             c("qpth (OptNet)", "qpth_qp", tol, memory)]
    if table2:
        return altdiff + peers
    return altdiff + [c("qpax (κ=1e-3, default)", "qpax_qp", tol, memory),
                      c("qpax (κ=1e-8)", "qpax_qp", tol, memory, target_kappa=1e-8),
                      c("jaxopt OSQP", "jaxopt_qp", tol, memory)] + peers + [c("OSQP (C)", "osqp_qp", tol, memory)]


# ---------------------------------------------------------------------------------- cases


def qp_case(label: str, n: int, ineq: int, eq: int, tol: float) -> harness.Case:
    problem = harness.paper_qp(n, ineq, eq, seed=0)
    g = harness.loss_vector(n)
    start = time.perf_counter()
    ref = harness.reference(problem, g)
    note = f"{label} (n={n}, {ineq} inequalities, {eq} equalities): {ref.note} ({time.perf_counter() - start:.0f} s)"
    print(note, flush=True)
    return harness.Case(label, problem, g, ref.x, ref.grads, tol, n * (n + ineq + eq), note)


def sweep(case: harness.Case) -> list:
    """The case at each of :data:`TOLERANCES` (same problem: the same data size)."""
    return [dataclasses.replace(case, label=f"tol {tol:g}", tol=tol, data_size=1.0) for tol in TOLERANCES]


# ---------------------------------------------------------------------------------- output


def series(results, value, x_of) -> dict:
    """Plot series: contender -> (x of each case, value, NaN where not measured)."""
    out = {}
    for case, ms in results:
        for label, m in ms.items():
            xs, ys = out.setdefault(label, ([], []))
            xs.append(x_of(case))
            ys.append(math.nan if m.skipped else value(m, case))
    return out


def one_minus_cosine(m, case) -> float:
    return max(1.0 - harness.accuracy(m, case)["cosine"], 1e-16)


def total_s(m, case) -> float:
    return m.total.best


def panels(results, x_name: str, x_of, iterations: bool = False) -> list:
    out = [harness.Panel("forward (solve only)", x_name, "seconds", series(results, lambda m, c: m.forward.best, x_of)),
           harness.Panel("total (solve + gradient)", x_name, "seconds", series(results, total_s, x_of)),
           harness.Panel("gradient accuracy", x_name, "1 − cosine", series(results, one_minus_cosine, x_of))]
    if iterations:
        out.append(harness.Panel("iterations (forward)", x_name, "iterations",
                                 series(results, lambda m, c: m.iterations or math.nan, x_of), logy=False))
    return out


def write(args, number: int, title: str, preamble: str, results, with_tol: bool, plots: list) -> None:
    header = harness.hardware_line(PEERS)
    notes = common_notes(args) + [case.note for case, _ in results if case.note] + [harness.timing_spread(results)]
    body = [preamble, "", harness.results_table(results, with_tol),
            "In the paper's layout, total seconds (solve + gradient):", "",
            harness.pivot(results, total_s, lambda v: f"{v:.4g}"),
            "Cosine similarity with the exact gradient:", "",
            harness.pivot(results, lambda m, c: harness.accuracy(m, c)["cosine"], lambda v: f"{v:.6f}"),
            "Notes:", ""] + [f"- {line}" for line in notes if line]
    harness.write_markdown(os.path.join(args.out, f"paper_table{number}.md"), title, header, body)
    harness.plot_panels(os.path.join(args.out, f"paper_table{number}.png"), plots, header)


def common_notes(args) -> list:
    return [f"tolerance {args.tol:g} for every solver that has one (tolerance sweeps: the tol column); times: best "
            f"of {args.repeats} runs interleaved across contenders, each contender in its own process; a run over "
            f"{args.once_s:g} s is not repeated; budget {args.budget_s:.0f} s per contender and problem for "
            f"set-up plus first calls, and again per timed call: one that runs over is stopped and not run on "
            f"larger problems; {args.jobs} contender(s) compiled at once",
            "backward: measured apart for qpth, OSQP and cvxpylayers; ≈ total − forward (best of each) for the "
            "jitted JAX contenders",
            "set-up: compilation (JAX), canonicalization (cvxpylayers, cached per shape), dense-to-CSC "
            "conversion (OSQP); excluded from forward/backward/total",
            "gradient of P: its symmetric part for every contender; cosine and relative error over the "
            "concatenation of all parameters the contender differentiates; 'worst parameter' is the one whose "
            "own cosine is lowest"]


def run(args, cases, contenders_of) -> list:
    return harness.run_cases(cases, contenders_of, args.repeats, args.budget_s, args.once_s, args.jobs, args.peers)


# --------------------------------------------------------------------------------- tables


def table1(args, sizes) -> None:
    cases = [qp_case(label, n, ineq, eq, args.tol) for label, n, ineq, eq in sizes]
    dims = {case.label: (n, eq, ineq) for case, (_, n, ineq, eq) in zip(cases, sizes)}
    results = run(args, cases, lambda case: qp_contenders(args.tol, *dims[case.label]))
    write(args, 1, "Table 1: dense quadratic layer, altdiff_jax vs the peers",
          "Paper's dense QP generator; loss gᵀx*, g ~ N(0, I); gradient with respect to P, q, A, b, G, h.",
          results, False, panels(results, "n", lambda case: dims[case.label][0]))


def table2(args, size) -> None:
    label, n, ineq, eq = size
    results = run(args, sweep(qp_case(label, n, ineq, eq, args.tol)),
                  lambda case: qp_contenders(case.tol, n, eq, ineq, table2=True))
    write(args, 2, f"Table 2: truncation, dense QP {label} (n={n}, {ineq} inequalities, {eq} equalities)",
          "Each contender's tolerance set to the case's value (altdiff_jax: Options.tol, which truncates the "
          "solve and its derivative; qpth: eps; cvxpylayers: Clarabel's gap and feasibility tolerances).",
          results, True, panels(results, "tolerance", lambda case: case.tol, iterations=True))


def layer_table(args, number: int, layer: str, sizes, title: str) -> None:
    results = run(args, [layers.case(layer, n, args.tol) for n in sizes],
                  lambda case: layers.layer_contenders(layer, case.tol, case.problem["y"].size))
    write(args, number, title, f"{layers.LABEL[layer]}: gradient of gᵀx* with respect to y and u, against the "
          "closed form (benchmarks/layers.py), on problems planted with an unambiguous active set.",
          results, False, panels(results, "n", lambda case: case.problem["y"].size))


def table5(args, n: int) -> None:
    layer = "constrained_sparsemax"
    results = run(args, sweep(layers.case(layer, n, args.tol)),
                  lambda case: layers.layer_contenders(layer, case.tol, n))
    write(args, 5, f"Table 5: truncation, constrained sparsemax n={n}",
          "Each contender's tolerance set to the case's value.", results, True,
          panels(results, "tolerance", lambda case: case.tol, iterations=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group(required=True)
    size.add_argument("--quick", action="store_true", help="small sizes (minutes)")
    size.add_argument("--full", action="store_true", help="the paper's sizes (hours)")
    parser.add_argument("--tables", nargs="*", type=int, default=[1, 2, 4, 5, 6], choices=[1, 2, 4, 5, 6])
    parser.add_argument("--tol", type=float, default=1e-6)
    parser.add_argument("--budget-s", type=float, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--once-s", type=float, default=None)
    parser.add_argument("--jobs", type=int, default=None, help="contenders compiled at once (default: 2 quick, 1 full)")
    parser.add_argument("--peers", nargs="*", default=None, help="keep the contenders whose label contains one")
    parser.add_argument("--sizes", nargs="*", default=None,
                        help="keep these Table 1 sizes by label (e.g. Tiny Small)")
    parser.add_argument("--out", default=str(harness.RESULTS))
    args = parser.parse_args()
    plan = dict(QUICK if args.quick else FULL)
    if args.sizes:
        plan["table1"] = [size for size in plan["table1"] if size[0] in args.sizes]
    for name in ("budget_s", "repeats", "once_s", "jobs"):
        if getattr(args, name) is None:
            setattr(args, name, plan[name])
    started = time.perf_counter()
    print(harness.hardware_line(PEERS), flush=True)
    try:
        if 1 in args.tables:
            table1(args, plan["table1"])
        if 2 in args.tables:
            table2(args, plan["table2"])
        if 4 in args.tables:
            layer_table(args, 4, "constrained_sparsemax", plan["table4"],
                        "Table 4: constrained sparsemax, altdiff_jax vs cvxpylayers and qpth")
        if 5 in args.tables:
            table5(args, plan["table5"])
        if 6 in args.tables:
            layer_table(args, 6, "constrained_softmax", plan["table6"],
                        "Table 6: constrained softmax, altdiff_jax vs cvxpylayers")
    finally:
        harness.shutdown()
    print(f"whole run {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
