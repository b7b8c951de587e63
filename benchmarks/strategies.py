"""Solve + gradient time of each differentiation strategy, side by side in one run.

Run ``python benchmarks/strategies.py [--sizes 50 100 200 500 1000] [--out benchmarks/results]``.

For the paper's dense-QP generator (p = n/5 equalities, m = n/2 inequalities, float64,
CPU) and a scalar loss gᵀx*, it times ``jax.jit(jax.grad(loss))`` (compilation excluded;
the three strategies interleaved, best of 5 calls) for ``Options.differentiation`` in
{altdiff, adjoint, kkt}, while the differentiated leaves grow: q only; q and b; all six
leaves P, q, A, b, G, h. Each gradient's cosine against the ``kkt`` one is printed beside
its time. Writes ``strategies.md`` (the table) and, if matplotlib is installed,
``strategies.png``.
"""

from __future__ import annotations

import argparse
import pathlib

import jax
import jax.numpy as jnp

if __package__:
    from . import harness
else:
    import harness

import altdiff_jax as ad  # noqa: E402

STRATEGIES = ("altdiff", "adjoint", "kkt")
LEAF_SETS = {"q": "q", "q,b": "qb", "all six": "PqAbGh"}


def gradient_function(leaves: str, options: ad.Options):
    def loss(selected, problem, g):
        return ad.solve(problem._replace(**selected), options).x @ g

    grad = jax.jit(jax.grad(loss))

    def run(problem, g):
        return grad({name: getattr(problem, name) for name in leaves}, problem, g)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[50, 100, 200, 500, 1000])
    parser.add_argument("--tol", type=float, default=1e-6)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(harness.RESULTS))
    args = parser.parse_args()
    header_line = harness.hardware_line()
    print(header_line)
    rows, series = [], {label: {s: ([], []) for s in STRATEGIES} for label in LEAF_SETS}
    header = (["n", "leaves", "entries"] + [f"{s} (s)" for s in STRATEGIES]
              + ["altdiff / adjoint", "cos altdiff", "cos adjoint"])
    for n in args.sizes:
        problem = ad.QP(**{k: jnp.asarray(v) for k, v in harness.paper_qp(n, n // 2, n // 5).items()})
        g = jnp.asarray(harness.loss_vector(n))
        for label, leaves in LEAF_SETS.items():
            entries = sum(getattr(problem, name).size for name in leaves)
            functions = {s: gradient_function(leaves, ad.Options(tol=args.tol, differentiation=s)) for s in STRATEGIES}
            grads = {s: jax.block_until_ready(f(problem, g)) for s, f in functions.items()}  # compile
            times = harness.interleaved({s: (lambda f=f: f(problem, g)) for s, f in functions.items()}, args.repeats)
            best = {s: times[s].best for s in STRATEGIES}
            row = [n, label, entries] + [best[s] for s in STRATEGIES] + [
                f"{best['altdiff'] / best['adjoint']:.1f}", f"{harness.cosine(grads['altdiff'], grads['kkt']):.6f}",
                f"{harness.cosine(grads['adjoint'], grads['kkt']):.6f}"]
            print(" | ".join(harness.fmt(v) for v in row), flush=True)
            rows.append(row)
            for s in STRATEGIES:
                series[label][s][0].append(n)
                series[label][s][1].append(best[s])
    out = pathlib.Path(args.out)
    harness.write_markdown(out / "strategies.md", "Solve + gradient time of each differentiation strategy", header_line,
                           [f"Paper generator (p = n/5, m = n/2), tol {args.tol:g}, float64, CPU; best of "
                            f"{args.repeats} jitted calls, the strategies interleaved, compilation excluded. "
                            "Cosines against `kkt`.", "", harness.markdown_table(header, rows)])
    harness.plot_panels(out / "strategies.png", [harness.Panel(f"gradient w.r.t. {label}", "n", "solve + gradient (s)",
                                                               series[label]) for label in LEAF_SETS], header_line)


if __name__ == "__main__":
    main()
