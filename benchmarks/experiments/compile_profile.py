"""Where the first call's time goes: tracing, lowering and XLA's compile of solve + gradient,
and how the compile time changes when parts of the program are switched off by options.

Each row is a fresh process: ``jax.jit(jax.value_and_grad(loss)).trace(...).lower().compile()``
of the paper's QP at one size, float64, timed stage by stage, with the compiled program's
counts from its HLO text (fusions, dots, custom calls) and the number of kernels XLA's CPU
compiler generated code for (its ``FusionCompiler::Compile`` events, read from a JAX
profiler trace of the compile: fusions of identical computations share one kernel). On a
2-core CPU each kernel costs about 16 ms of compile on average, so the kernel count
is what a smaller program has to cut.

``--reductions`` adds the cause of many of them: one ∞-norm of a 100-vector compiles to
three kernels by ``jnp.max`` (XLA's CPU compiler rewrites a reduction over more than 32
entries into a windowed reduction and a second one) and to one by ``_linalg.max_over``.

    python benchmarks/experiments/compile_profile.py [--n 100] [--reductions] [--output benchmarks/results/compile_profile.md]

At ``--n 1500`` the QP is the paper's Tiny (500 inequalities, 200 equalities).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

VARIANTS = {
    "default": "",
    "polish=False": "polish=False",
    "differentiation='adjoint'": "differentiation='adjoint'",
    "differentiation='altdiff'": "differentiation='altdiff'",
    "scaling_iterations=0": "scaling_iterations=0",
}
# From n 400 (where both apply): the program without the blocked triangular solves, and
# without polishing's factor update, by their size thresholds (module constants, read at
# trace time; _kkt.GATHERED_GRAM_FROM keeps its value, so the gathered Gram matrix stays).
LARGE_VARIANTS = {
    "whole-matrix solves": "_linalg.BLOCKED_SOLVE_FROM=10**9",
    "no factor update in polishing": "_solve.REUSABLE_FACTOR_SIZE=10**9",
}


def child(n: int, options: str) -> dict:
    import jax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import altdiff_jax as ad
    import harness
    problem = ad.QP(**{k: jnp.asarray(v) for k, v in harness.paper_qp_of_size(n).items()})
    g = jnp.asarray(harness.loss_vector(n))
    if options.startswith("_"):  # a module constant (LARGE_VARIANTS)
        import importlib
        name, value = options.split("=")
        module, constant = name.split(".")
        setattr(importlib.import_module(f"altdiff_jax.{module}"), constant, eval(value))  # noqa: S307
        options = ""
    opts = eval(f"ad.Options({options})")  # noqa: S307 - our own table above

    def loss(problem):
        return ad.solve(problem, opts).x @ g

    f = jax.jit(jax.value_and_grad(loss))
    start = time.perf_counter()
    traced = f.trace(problem)
    t_trace = time.perf_counter()
    lowered = traced.lower()
    t_lower = time.perf_counter()
    compiled, kernels = _compiled_with_kernel_count(lowered)
    t_compile = time.perf_counter()
    text = compiled.as_text()
    return {"trace": t_trace - start, "lower": t_lower - t_trace, "compile": t_compile - t_lower,
            "fusions": text.count(" fusion("), "dots": text.count(" dot("), "custom_calls": text.count(" custom-call("),
            "kernels": kernels}


def _compiled_with_kernel_count(lowered):
    """``(compiled, kernels)``: the compile of ``lowered`` under a JAX profiler trace, and the
    number of kernels XLA's CPU compiler generated code for in it."""
    import tempfile

    import jax
    from jax.profiler import ProfileData
    with tempfile.TemporaryDirectory() as directory:
        with jax.profiler.trace(directory):
            compiled = lowered.compile()
        planes = [ProfileData.from_file(str(path)) for path in Path(directory).rglob("*.xplane.pb")]
    kernels = sum(event.name == "FusionCompiler::Compile" for profile in planes for plane in profile.planes
                  for line in plane.lines for event in line.events)
    return compiled, kernels


def reduction_kernels() -> list[list]:
    """Kernels XLA compiles for ‖2v‖∞ of a 100-vector, by ``jnp.max`` and by ``max_over``."""
    import jax
    import jax.numpy as jnp
    from altdiff_jax._linalg import max_over
    v = jnp.ones(100)
    rows = []
    for name, norm in (("jnp.max", lambda v: jnp.max(jnp.abs(2 * v))), ("_linalg.max_over", lambda v: max_over(jnp.abs(2 * v)))):
        text = jax.jit(norm).lower(v).compile().as_text()
        rows.append([name, text.count(" fusion("), text.count("reduce-window(")])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--child", nargs=2)
    parser.add_argument("--reductions", action="store_true")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(int(args.child[0]), args.child[1])))
        return
    import harness
    best: dict = {}
    for _ in range(args.rounds):
        for name, options in {**VARIANTS, **(LARGE_VARIANTS if args.n >= 400 else {})}.items():
            out = subprocess.run([sys.executable, __file__, "--child", str(args.n), options], capture_output=True,
                                 text=True, check=True).stdout.strip().splitlines()[-1]
            result = json.loads(out)
            if name not in best or result["compile"] < best[name]["compile"]:
                best[name] = result
            print(name, result, flush=True)
    rows = [[name, f"{r['trace']:.2f}", f"{r['lower']:.2f}", f"{r['compile']:.2f}", r["kernels"], r["fusions"],
             r["dots"], r["custom_calls"]] for name, r in best.items()]
    table = harness.markdown_table(["options", "trace s", "lower s", "XLA compile s", "kernels compiled", "fusions",
                                    "dots", "custom calls"], rows)
    print(table)
    body = [f"The paper's QP at n {args.n}, float64, `jit(value_and_grad)` of solve with the gradient of all "
            f"six leaves; fresh processes, best of {args.rounds} by compile time (each compile under a JAX "
            "profiler trace, which counts the kernels).", "", table]
    if args.reductions:
        reductions = harness.markdown_table(["‖2v‖∞ of a 100-vector by", "fusions", "windowed reductions"],
                                            reduction_kernels())
        print(reductions)
        body += ["", "One reduction, compiled alone:", "", reductions]
    if args.output:
        harness.write_markdown(args.output, "Where the first call's time goes", harness.hardware_line(), body)


if __name__ == "__main__":
    main()
