"""First call of two versions of altdiff_jax, side by side: each call in a fresh process.

The version at a git ref (``--before``) is exported to a temporary directory; each round
runs, for every size, one fresh process per version (alternating which goes first), each
timing the first call (trace, compile, run) of ``jit(value_and_grad(loss))`` of the
paper's QP (gᵀx*, gradient of all six leaves, float64) and then a second call on new data.
Best and median over the rounds. Machines here swing 2x between runs: only a comparison
within one run means anything. "after" is the working tree (uncommitted changes included);
both versions run with the working tree's benchmark harness, and the loss vector is
``harness.loss_vector`` (``first_call.py`` uses another).

    python benchmarks/experiments/first_call_ab.py --before 5cfd081 [--sizes 100 1500] [--rounds 3] [--output FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(BENCHMARKS))


def child(n: int) -> dict:
    """First and second call in this process, of the altdiff_jax found first on the path."""
    import jax
    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_enable_compilation_cache", False)
    import jax.numpy as jnp
    import altdiff_jax as ad
    import harness
    first, second = ({k: jnp.asarray(v) for k, v in harness.paper_qp_of_size(n, seed).items()} for seed in (0, 1))
    g = jnp.asarray(harness.loss_vector(n))
    f = jax.jit(jax.value_and_grad(lambda params, g: ad.solve(ad.QP(**params)).x @ g))
    jax.block_until_ready((first, second))
    start = time.perf_counter()
    jax.block_until_ready(f(first, g))
    middle = time.perf_counter()
    jax.block_until_ready(f(second, g))
    return {"first": middle - start, "second": time.perf_counter() - middle, "package": ad.__file__}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", default="HEAD~1")
    parser.add_argument("--sizes", nargs="+", type=int, default=[100, 1500])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", type=int)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child)))
        return
    import harness
    with tempfile.TemporaryDirectory() as directory:
        versions = {f"before ({args.before})": harness.export_package(args.before, Path(directory)),
                    "after": harness.ROOT}
        runs = {(name, n): [] for name in versions for n in args.sizes}
        for round_ in range(args.rounds):
            for n in args.sizes:
                order = list(versions.items()) if round_ % 2 == 0 else list(versions.items())[::-1]
                for name, path in order:
                    env = dict(os.environ, PYTHONPATH=str(path))
                    out = subprocess.run([sys.executable, __file__, "--child", str(n)], env=env, capture_output=True,
                                         text=True, check=True, cwd=directory).stdout
                    result = json.loads(out.strip().splitlines()[-1])
                    assert result["package"].startswith(str(path)), result["package"]
                    runs[(name, n)].append(result)
                    print(round_, n, name, result, flush=True)
    rows = []
    for n in args.sizes:
        for name in versions:
            firsts = [r["first"] for r in runs[(name, n)]]
            seconds = [r["second"] for r in runs[(name, n)]]
            rows.append([n, name, f"{min(firsts):.2f}", f"{statistics.median(firsts):.2f}", f"{min(seconds):.4f}"])
    table = harness.markdown_table(["n", "version", "first call best s", "first call median s", "second call best s"],
                                   rows)
    print(table)
    if args.output:
        body = [f"Fresh processes, {args.rounds} interleaved rounds; the paper's QP (n 1500: Tiny), float64, "
                "`jit(value_and_grad)` of solve with the gradient of all six leaves.", "", table]
        harness.write_markdown(args.output, "First call of two versions", harness.hardware_line(), body)


if __name__ == "__main__":
    main()
