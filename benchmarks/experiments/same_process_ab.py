"""Same-process A/B of two versions of altdiff_jax on the engine's benchmarks.

The version at a git ref (``--before``) is exported to a temporary directory and imported
under another name next to the working tree's package, so both run in one process, on
the same data, timed interleaved (best of ``--repeats``): a machine's slow phase hits both.
Each case also reports the largest difference between the two versions' outputs.

Cases: Tiny (n 1500) and Small (n 3000) solve + gradient of all six leaves; 512 QPs of n 50 under
``vmap(grad)`` with P, A, G shared and with every leaf batched; the 150 degenerate QPs of
``benchmarks/batches.py`` under ``vmap(solve)``; solve + gradient with
``differentiation="altdiff"`` at n 300 (the loop carries every column); ``jacobians(wrt=("b",))``
at Tiny with ``tol=1e-3``.

    python benchmarks/experiments/same_process_ab.py --before HEAD~1 --output benchmarks/results/NAME.md
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(BENCHMARKS))

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import altdiff_jax  # noqa: E402
import harness  # noqa: E402
from batches import degenerate_problems  # noqa: E402


def import_version(ref: str, directory: Path):
    """altdiff_jax as of git ``ref``, imported as the package ``altdiff_before``."""
    harness.export_package(ref, directory)
    package = directory / "altdiff_before"
    (directory / "altdiff_jax").rename(package)
    spec = importlib.util.spec_from_file_location("altdiff_before", package / "__init__.py",
                                                  submodule_search_locations=[str(package)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["altdiff_before"] = module
    spec.loader.exec_module(module)
    return module


def stacked(ad, problems, shared=()):
    keys = list(problems[0])
    return ad.QP(**{k: jnp.asarray(problems[0][k] if k in shared else np.stack([p[k] for p in problems]))
                    for k in keys})


def cases(ad):
    """name -> (function, arguments) for one version ``ad``."""
    def loss(problem, g):
        return ad.solve(problem).x @ g

    tiny = ad.QP(**{k: jnp.asarray(v) for k, v in harness.paper_qp(1500, 500, 200).items()})
    g_tiny = jnp.asarray(harness.loss_vector(1500))
    paper_small = ad.QP(**{k: jnp.asarray(v) for k, v in harness.paper_qp(3000, 1000, 500).items()})
    g_paper_small = jnp.asarray(harness.loss_vector(3000))
    mid = ad.QP(**{k: jnp.asarray(v) for k, v in harness.paper_qp(300, 150, 60).items()})
    g_mid = jnp.asarray(harness.loss_vector(300))
    altdiff = ad.Options(differentiation="altdiff", tol=1e-6)
    small = [harness.paper_qp(50, 25, 10, seed=seed) for seed in range(512)]
    g_small = jnp.asarray(harness.loss_vector(50))
    every = ad.QP(P=0, q=0, A=0, b=0, G=0, h=0)
    shared = ad.QP(P=None, q=0, A=None, b=0, G=None, h=0)
    degenerate = stacked(ad, degenerate_problems())
    return {
        "Tiny solve + all-six gradient": (jax.jit(jax.value_and_grad(loss)), (tiny, g_tiny)),
        "Small solve + all-six gradient": (jax.jit(jax.value_and_grad(loss)), (paper_small, g_paper_small)),
        "512 x n 50 vmap(grad), P, A, G shared": (
            jax.jit(jax.vmap(jax.grad(loss), in_axes=(shared, None))),
            (stacked(ad, small, shared=("P", "A", "G")), g_small)),
        "512 x n 50 vmap(grad), every leaf": (jax.jit(jax.vmap(jax.grad(loss), in_axes=(every, None))),
                                             (stacked(ad, small), g_small)),
        "150 degenerate QPs, vmap(solve)": (jax.jit(jax.vmap(lambda p: ad.solve(p).x)), (degenerate,)),
        "altdiff solve + all-six gradient, n 300, tol 1e-6": (
            jax.jit(jax.value_and_grad(lambda p, g: ad.solve(p, altdiff).x @ g)), (mid, g_mid)),
        "jacobians(wrt=b), Tiny, tol 1e-3": (
            jax.jit(lambda p: ad.jacobians(p, ad.Options(tol=1e-3), wrt=("b",))), (tiny,)),
    }


def largest_difference(a, b) -> float:
    a, b = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)  # the versions' pytree classes differ
    if [jnp.shape(x) for x in a] != [jnp.shape(y) for y in b]:
        raise ValueError("the two versions return outputs of different shapes")
    pairs = zip(a, b)
    return max(float(np.max(np.abs(np.asarray(x, float) - np.asarray(y, float)), initial=0.0)) for x, y in pairs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", default="HEAD~1")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--output", type=Path)
    parser.add_argument("--only", nargs="+", help="run only the cases whose names start with these words")
    args = parser.parse_args()
    args.before = subprocess.run(["git", "rev-parse", "--short", args.before], cwd=harness.ROOT, capture_output=True,
                                 text=True, check=True).stdout.strip()  # a fixed name for the results
    with tempfile.TemporaryDirectory() as tmp:
        before = import_version(args.before, Path(tmp))
        versions = {"before": cases(before), "after": cases(altdiff_jax)}
        rows = []
        for name in versions["after"]:
            if args.only and not any(name.startswith(word) for word in args.only):
                continue
            runs = {label: versions[label][name] for label in versions}
            outputs = {label: harness.block(f(*a)) for label, (f, a) in runs.items()}  # compile
            timing = harness.interleaved({label: (lambda f=f, a=a: f(*a)) for label, (f, a) in runs.items()},
                                         repeats=args.repeats)
            ratio = timing["after"].best / timing["before"].best
            rows.append([name, timing["before"].best, timing["after"].best, ratio,
                         f"{largest_difference(outputs['before'], outputs['after']):.1e}"])
            print(rows[-1], flush=True)
    header = ["case", f"before ({args.before}) s", "after s", "after / before", "largest output difference"]
    table = harness.markdown_table(header, [[r[0], harness.fmt(r[1]), harness.fmt(r[2]), f"{r[3]:.2f}", r[4]]
                                            for r in rows])
    print(table)
    if args.output:
        body = [f"Both versions imported in one process (the `--before` ref exported by git), timed "
                f"interleaved, best of {args.repeats}; float64, default options.", "", table]
        harness.write_markdown(args.output, "Same-process A/B of the engine's benchmarks",
                               harness.hardware_line(), body)

if __name__ == "__main__":
    main()
