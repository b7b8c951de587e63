"""Solve + gradient time of each differentiation strategy, side by side in one run.

Run ``python benchmarks/strategies.py [--sizes 50 100 200 500 1000] [--out benchmarks/results]``.

For the paper's dense-QP generator (p = n/5 equalities, m = n/2 inequalities, float64,
CPU) and a scalar loss gᵀx*, it times ``jax.jit(jax.grad(loss))`` (compilation excluded,
median of 3 calls) for ``Options.differentiation`` in {altdiff, adjoint, kkt}, while the
differentiated leaves grow: q only; q and b; all six leaves P, q, A, b, G, h. Each
gradient's cosine against the ``kkt`` one is printed beside its time. Writes
``strategies.md`` (the table) and, if matplotlib is installed, ``strategies.png``.
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

import altdiff_jax as ad  # noqa: E402

STRATEGIES = ("altdiff", "adjoint", "kkt")
LEAF_SETS = {"q": "q", "q,b": "qb", "all six": "PqAbGh"}


def paper_qp(seed: int, n: int) -> ad.QP:
    rng = np.random.default_rng(seed)
    p, m = n // 5, n // 2
    M = rng.standard_normal((n, n))
    A, G, x0 = rng.standard_normal((p, n)), rng.standard_normal((m, n)), rng.standard_normal(n)
    data = dict(P=M.T @ M, q=rng.standard_normal(n), A=A, b=A @ x0, G=G, h=G @ x0 + rng.uniform(size=m))
    return ad.QP(**{k: jnp.asarray(v) for k, v in data.items()})


def gradient_function(leaves: str, options: ad.Options):
    def loss(selected, problem, g):
        return ad.solve(problem._replace(**selected), options).x @ g

    grad = jax.jit(jax.grad(loss))

    def run(problem, g):
        return grad({name: getattr(problem, name) for name in leaves}, problem, g)

    return run


def timed(fn, *args):
    result = jax.block_until_ready(fn(*args))  # compile
    times = []
    for _ in range(3):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return result, statistics.median(times)


def cosine(a: dict, b: dict) -> float:
    u = np.concatenate([np.ravel(a[k]) for k in sorted(a)])
    v = np.concatenate([np.ravel(b[k]) for k in sorted(b)])
    return float(u @ v / (np.linalg.norm(u) * np.linalg.norm(v)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[50, 100, 200, 500, 1000])
    parser.add_argument("--tol", type=float, default=1e-6)
    parser.add_argument("--out", default=str(pathlib.Path(__file__).parent / "results"))
    args = parser.parse_args()
    rows = []
    header = "| n | leaves | entries | " + " | ".join(f"{s} (s)" for s in STRATEGIES) + \
        " | altdiff / adjoint | cos altdiff | cos adjoint |"
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    print(header)
    for n in args.sizes:
        problem = paper_qp(0, n)
        g = jnp.asarray(np.random.default_rng(1).standard_normal(n))
        for label, leaves in LEAF_SETS.items():
            entries = sum(getattr(problem, name).size for name in leaves)
            times, grads = {}, {}
            for strategy in STRATEGIES:
                options = ad.Options(tol=args.tol, differentiation=strategy)
                grads[strategy], times[strategy] = timed(gradient_function(leaves, options), problem, g)
            line = (f"| {n} | {label} | {entries} | " + " | ".join(f"{times[s]:.4f}" for s in STRATEGIES)
                    + f" | {times['altdiff'] / times['adjoint']:.1f} | {cosine(grads['altdiff'], grads['kkt']):.6f}"
                    f" | {cosine(grads['adjoint'], grads['kkt']):.6f} |")
            print(line, flush=True)
            lines.append(line)
            rows.append((n, label, times))
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "strategies.md").write_text(
        f"Solve + gradient of gᵀx*, paper generator (p = n/5, m = n/2), tol {args.tol:g}, float64, "
        "CPU (2 cores), median of 3 jitted calls, compilation excluded. Cosines against `kkt`.\n\n"
        + "\n".join(lines) + "\n"
    )
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    figure, axes = plt.subplots(1, len(LEAF_SETS), figsize=(4 * len(LEAF_SETS), 3.4), sharey=True)
    for axis, label in zip(axes, LEAF_SETS):
        for strategy in STRATEGIES:
            sizes = [n for n, lab, _ in rows if lab == label]
            axis.loglog(sizes, [t[strategy] for _, lab, t in rows if lab == label], "o-", label=strategy)
        axis.set_title(f"gradient w.r.t. {label}")
        axis.set_xlabel("n")
    axes[0].set_ylabel("solve + gradient (s)")
    axes[0].legend()
    figure.tight_layout()
    figure.savefig(out / "strategies.png", dpi=110)


if __name__ == "__main__":
    main()
