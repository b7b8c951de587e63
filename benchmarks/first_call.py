"""The first call: tracing and compiling solve + gradient in a fresh process, next to the second call.

A user in a notebook pays the first call for every new shape or new function. Each
measurement here is a fresh Python process (nothing cached in memory, JAX's persistent
compilation cache off) that builds ``jax.jit(jax.value_and_grad(loss))`` of one layer, with
the loss gᵀx* and the gradient of every leaf, and times its first call (trace, compile,
run) and its second call on new data of the same shapes. Contenders run interleaved, round
by round; the best round of each is reported.

Cases: the paper's dense QP at n 20, 100, 500 and Tiny (1500); the constrained sparsemax
and softmax layers at n 1000. Contenders: altdiff_jax, qpax, jaxopt's OSQP (QPs), and
cvxpylayers (its set-up, the canonicalisation, is its first-call cost; it has no compile).
``--cache`` adds altdiff_jax in a process whose persistent compilation cache a previous
process filled. ``--closed-over`` adds altdiff_jax with P, A, G (and b, h) closed over as constants rather than
passed, next to the same problem passed as arguments: a vmapped batch of 16 QPs at n 729 and
one QP at n 3000. ``--fast-compile`` adds altdiff_jax jitted with XLA's backend optimisation
level 0 (``jax.jit(..., compiler_options={"xla_backend_optimization_level": 0})``): less
code generation for a slower program, a choice for exploring in a notebook.

    python benchmarks/first_call.py [--cases qp20 qp100 ...] [--rounds 2] [--cache] [--closed-over] [--fast-compile]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

QP_SIZES = {"qp20": 20, "qp100": 100, "qp500": 500, "tiny": 1500}
LAYER_CASES = {"sparsemax1000": ("constrained_sparsemax", 1000), "softmax1000": ("constrained_softmax", 1000)}
QP_CONTENDERS = ["altdiff_jax", "qpax", "jaxopt", "cvxpylayers"]
FAST_COMPILE = {"xla_backend_optimization_level": 0}  # the compiler options of --fast-compile
LAYER_CONTENDERS = ["altdiff_jax", "cvxpylayers"]


def _qp_function(contender: str):
    """``loss(params, g)`` of a QP contender, ``params`` a dict of the six leaves."""
    if contender == "altdiff_jax":
        import altdiff_jax as ad

        def loss(params, g):
            return ad.solve(ad.QP(**params)).x @ g
    elif contender == "qpax":
        import qpax

        def loss(params, g):
            return qpax.solve_qp_primal(*(params[k] for k in ("P", "q", "A", "b", "G", "h")), solver_tol=1e-6) @ g
    elif contender == "jaxopt":
        import jaxopt
        solver = jaxopt.OSQP(tol=1e-6, maxiter=4000)

        def loss(params, g):
            run = solver.run(params_obj=(params["P"], params["q"]), params_eq=(params["A"], params["b"]),
                             params_ineq=(params["G"], params["h"]))
            return run.params.primal @ g
    else:
        raise ValueError(contender)
    return loss


def _jax_first_and_second(loss, first_args, second_args, compiler_options=None) -> dict:
    import jax
    f = jax.jit(jax.value_and_grad(loss), compiler_options=compiler_options)
    start = time.perf_counter()
    jax.block_until_ready(f(*first_args))
    first = time.perf_counter() - start
    start = time.perf_counter()
    jax.block_until_ready(f(*second_args))
    return {"first": first, "second": time.perf_counter() - start}


def child_qp(contender: str, n: int, compiler_options=None) -> dict:
    import jax
    jax.config.update("jax_enable_x64", True)
    import numpy as np

    import harness
    problems = [harness.paper_qp_of_size(n, seed) for seed in (0, 1)]
    g = np.linspace(-1.0, 1.0, problems[0]["q"].shape[0])
    if contender == "cvxpylayers":
        return child_cvxpylayers_qp(problems, g)
    import jax.numpy as jnp
    loss = _qp_function(contender)
    args = [({k: jnp.asarray(v) for k, v in problem.items()}, jnp.asarray(g)) for problem in problems]
    return _jax_first_and_second(loss, *args, compiler_options=compiler_options)


def _cvxpylayers_first_and_second(build, loss, first_args, second_args) -> dict:
    """cvxpylayers (JAX interface, run eagerly: it is not jittable): building the layer
    (canonicalisation) plus the first value and gradient, then the second. Its imports
    come before the clock starts, as the JAX contenders' do."""
    import cvxpy  # noqa: F401
    import jax
    from harness import peers
    peers._cvxpylayers()  # imports cvxpylayers.jax
    start = time.perf_counter()
    layer = build()
    f = jax.value_and_grad(lambda *a: loss(layer, *a))
    jax.block_until_ready(f(*first_args))
    first = time.perf_counter() - start
    start = time.perf_counter()
    jax.block_until_ready(f(*second_args))
    return {"first": first, "second": time.perf_counter() - start}


def child_cvxpylayers_qp(problems, g) -> dict:
    import jax.numpy as jnp
    from harness import peers
    n, p, m = problems[0]["q"].shape[0], problems[0]["b"].shape[0], problems[0]["h"].shape[0]
    clarabel = dict(solve_method="Clarabel", tol_gap_abs=1e-6, tol_gap_rel=1e-6, tol_feas=1e-6)

    def loss(layer, params, g):
        Lt = jnp.linalg.cholesky(params["P"]).T
        x = layer(Lt, *(params[k] for k in ("q", "A", "b", "G", "h")), solver_args=clarabel)[0]
        return x @ g

    args = [({k: jnp.asarray(v) for k, v in problem.items()}, jnp.asarray(g)) for problem in problems]
    return _cvxpylayers_first_and_second(lambda: peers._cvxpy_qp_layer(n, p, m), loss, *args)


def child_layer(contender: str, layer: str, n: int) -> dict:
    import jax
    jax.config.update("jax_enable_x64", True)
    import numpy as np
    rng = np.random.default_rng(0)
    ys = [rng.standard_normal(n) for _ in range(2)]
    u = np.full(n, 2.0 / n)
    g = np.linspace(-1.0, 1.0, n)
    if contender == "cvxpylayers":
        import jax.numpy as jnp
        from harness import peers
        clarabel = dict(solve_method="Clarabel", tol_gap_abs=1e-6, tol_gap_rel=1e-6, tol_feas=1e-6)

        def cvx_loss(cvx_layer, params, g):
            return cvx_layer(params["y"], params["u"], solver_args=clarabel)[0] @ g

        args = [({"y": jnp.asarray(y), "u": jnp.asarray(u)}, jnp.asarray(g)) for y in ys]
        return _cvxpylayers_first_and_second(lambda: peers._cvxpy_layer(layer, n), cvx_loss, *args)
    import jax.numpy as jnp
    import altdiff_jax as ad
    function = getattr(ad, layer)

    def loss(params, g):
        return function(params["y"], params["u"]).x @ g

    args = [({"y": jnp.asarray(y), "u": jnp.asarray(u)}, jnp.asarray(g)) for y in ys]
    return _jax_first_and_second(loss, *args)


def child_closed_over(how: str, case: str) -> dict:
    """altdiff_jax with the fixed matrices passed (``how="arguments"``) or closed over."""
    import jax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import numpy as np
    import altdiff_jax as ad
    import harness
    if case == "batch729":
        n, p, m, lanes = 729, 252, 729, 16
    else:
        n, p, m, lanes = 3000, 500, 1000, 0
    base = harness.paper_qp(n, m, p, seed=0)
    fixed = {k: jnp.asarray(base[k]) for k in ("P", "A", "G", "b", "h")}
    rng = np.random.default_rng(1)
    qs = [jnp.asarray(rng.standard_normal((lanes, n) if lanes else n)) for _ in range(2)]
    g = jnp.asarray(np.linspace(-1.0, 1.0, n))

    def one(q, fixed):
        return ad.solve(ad.QP(q=q, **fixed)).x @ g

    def loss_arguments(q, fixed):
        return jnp.sum(jax.vmap(one, in_axes=(0, None))(q, fixed)) if lanes else one(q, fixed)

    if how == "arguments":
        return _jax_first_and_second(loss_arguments, (qs[0], fixed), (qs[1], fixed))
    return _jax_first_and_second(lambda q: loss_arguments(q, fixed), (qs[0],), (qs[1],))


def run_child(args: list[str], cache: Optional[str] = None) -> dict:
    """One child process; with ``cache`` a directory for JAX's persistent compilation cache."""
    command = [sys.executable, str(Path(__file__).resolve()), "--child", *args]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_COMPILATION_CACHE", "JAX_PERSISTENT_CACHE"))}
    if cache:
        env.update(JAX_COMPILATION_CACHE_DIR=cache, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                   JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    result = subprocess.run(command, capture_output=True, text=True, cwd=HERE.parent, env=env)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not lines:
        tail = (result.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": tail[:120]}
    return json.loads(lines[-1])


def _contender_jobs(cases: list[str], only: Optional[list[str]]) -> list[tuple]:
    """(case, contender, child arguments) of each contender on each case."""
    jobs = []
    for case in cases:
        contenders = QP_CONTENDERS if case in QP_SIZES else LAYER_CONTENDERS
        if case == "tiny":  # cvxpylayers runs out of memory there, jaxopt's OSQP takes minutes a call
            contenders = ["altdiff_jax", "qpax"]
        for contender in only or contenders:
            if contender not in contenders:
                continue
            child = (["qp", contender, str(QP_SIZES[case])] if case in QP_SIZES
                     else ["layer", contender, *map(str, LAYER_CASES[case])])
            jobs.append((case, contender, child))
    return jobs


def _jobs(args, cache_dir: Optional[str]) -> list[tuple]:
    """Every measurement the options ask for; with ``--cache``, fills the cache first."""
    jobs = _contender_jobs(args.cases, args.contenders)
    qp_cases = [case for case in args.cases if case in QP_SIZES]
    if args.fast_compile:
        jobs += [(case, "altdiff_jax, XLA backend optimisation level 0",
                  ["qp", "altdiff_jax", str(QP_SIZES[case]), "fast"]) for case in qp_cases]
    if args.closed_over:
        jobs += [(case, f"altdiff_jax, matrices {how}", ["closed", how.split()[0], case])
                 for case in ("batch729", "single3000") for how in ("arguments", "closed over")]
    for case in qp_cases if args.cache else []:
        child = ["qp", "altdiff_jax", str(QP_SIZES[case])]
        filled = run_child(child, cache_dir)  # fills the cache
        if "error" in filled:
            raise RuntimeError(f"filling the compilation cache failed: {filled['error']}")
        jobs.append((case, "altdiff_jax, warm persistent cache", child))
    return jobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", nargs="+")
    parser.add_argument("--cases", nargs="+", default=list(QP_SIZES) + list(LAYER_CASES))
    parser.add_argument("--contenders", nargs="+")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--closed-over", action="store_true")
    parser.add_argument("--fast-compile", action="store_true",
                        help="add altdiff_jax compiled at XLA's backend optimisation level 0")
    parser.add_argument("--cache", action="store_true",
                        help="add altdiff_jax with a warm persistent compilation cache (a second process)")
    parser.add_argument("--output", type=Path, default=HERE / "results" / "first_call.md")
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "qp":
            print(json.dumps(child_qp(rest[0], int(rest[1]), FAST_COMPILE if rest[2:] == ["fast"] else None)))
        elif kind == "layer":
            print(json.dumps(child_layer(rest[0], rest[1], int(rest[2]))))
        else:
            print(json.dumps(child_closed_over(rest[0], rest[1])))
        return
    import harness
    cache_dir = tempfile.mkdtemp(prefix="altdiff_cache_") if args.cache else None
    jobs = _jobs(args, cache_dir)
    best: dict = {}
    for round_ in range(args.rounds):
        for case, contender, child in (jobs if round_ % 2 == 0 else jobs[::-1]):
            result = run_child(child, cache_dir if "cache" in contender else None)
            print(round_, case, contender, result, flush=True)
            kept = best.setdefault((case, contender), result)
            if "error" not in result and ("error" in kept or result["first"] < kept["first"]):
                best[(case, contender)] = result
    rows = []
    for (case, contender), result in best.items():
        if "error" in result:
            rows.append([case, contender, "failed: " + result["error"], "", ""])
        else:
            rows.append([case, contender, f"{result['first']:.2f}", f"{result['second']:.4f}",
                         f"{result['first'] / result['second']:.0f}"])
    table = harness.markdown_table(["case", "contender", "first call s", "second call s", "first / second"], rows)
    print(table)
    body = [f"Fresh processes, float64, best of {args.rounds} interleaved rounds. First call: trace, compile "
            "and run of `jit(value_and_grad(loss))` (cvxpylayers, not jittable, run eagerly: building the layer and its first solve and "
            "backward); second call: new data of the same shapes.", "", table]
    harness.write_markdown(args.output, "First call and second call", harness.hardware_line(
        ["qpax", "jaxopt", "cvxpylayers"]), body)


if __name__ == "__main__":
    main()
