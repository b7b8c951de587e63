"""Where polishing's factor update pays for its code: one dense float64 QP's solve + gradient
with ``_solve.REUSABLE_FACTOR_SIZE`` forced to "always update" and to "always factor anew".

For each size of the paper's generator both variants are compiled in one process (the
constant is read at trace time), their compile times taken, then the two compiled
functions timed interleaved, best of ``--repeats``.

    python benchmarks/experiments/reusable_factor.py --sizes 100 200 400 700 1500 3000 --output benchmarks/results/reusable_factor.md
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(BENCHMARKS))

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import altdiff_jax as ad  # noqa: E402
import harness  # noqa: E402
from altdiff_jax import _solve  # noqa: E402

VARIANTS = {"update": 0, "factor anew": 10**9}


def compiled(threshold: int, problem, g):
    _solve.REUSABLE_FACTOR_SIZE = threshold

    def loss(problem):
        return ad.solve(problem).x @ g

    start = time.perf_counter()
    function = jax.jit(jax.value_and_grad(loss)).trace(problem).lower().compile()
    return function, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 200, 400, 700, 1500])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    warm = ad.QP(**{k: jnp.asarray(v) for k, v in harness.paper_qp(20, 10, 4).items()})
    compiled(0, warm, jnp.ones(20))  # the process's one-time costs, outside the table
    rows = []
    for n in args.sizes:
        p, m = (200, 500) if n == 1500 else (n // 2, n // 5)  # n 1500: the paper's Tiny
        problem = ad.QP(**{k: jnp.asarray(v) for k, v in harness.paper_qp(n, m, p).items()})
        g = jnp.asarray(harness.loss_vector(n))
        functions, compile_s, outputs = {}, {}, {}
        for name, threshold in VARIANTS.items():
            functions[name], compile_s[name] = compiled(threshold, problem, g)
            outputs[name] = harness.block(functions[name](problem))
        timing = harness.interleaved({name: (lambda f=f: f(problem)) for name, f in functions.items()},
                                     repeats=args.repeats)
        difference = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                         for a, b in zip(jax.tree_util.tree_leaves(outputs["update"]),
                                         jax.tree_util.tree_leaves(outputs["factor anew"])))
        rows.append([f"{n} / {p} / {m}", f"{compile_s['update']:.2f}", f"{compile_s['factor anew']:.2f}",
                     harness.fmt(timing["update"].best), harness.fmt(timing["factor anew"].best),
                     f"{timing['update'].best / timing['factor anew'].best:.2f}", f"{difference:.1e}"])
        print(rows[-1], flush=True)
    header = ["n / eq / ineq", "compile s, update", "compile s, anew", "run s, update", "run s, anew",
              "run update / anew", "largest output difference"]
    table = harness.markdown_table(header, rows)
    print(table)
    if args.output:
        body = ["The paper's QP, float64, `jit(value_and_grad)` of solve with the gradient of all six leaves, "
                f"default options; compile = trace + lower + XLA compile in one process (after a warm-up "
                f"compile at n 20); run: interleaved, best of {args.repeats}.", "", table, "",
                "A largest output difference of 0 means that no polishing round of that problem used "
                "the update (a factor with no update in use solves as the plain one)."]
        harness.write_markdown(args.output, "Polishing's factor update against factoring anew",
                               harness.hardware_line(), body)


if __name__ == "__main__":
    main()
