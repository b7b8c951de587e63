"""A vmapped batch against a Python loop over the same problems: does a batch cost what its
lanes need?

Cases (float64, default ``Options``, forward solve):

* ``degenerate``: 150 LP-like QPs on the 4 × 4 Sudoku constraints of OptNet's Sudoku
  experiment: 64 one-hot variables, the 40 independent rows of the cell, row, column and
  box equalities (= 1), x >= 0 as ``G = −I, h = 0``, P = 1e-3 I, and q = −(the clues of a
  random puzzle) + 0.1·N(0, 1). Solutions sit at degenerate vertices (88 active rows for 64
  variables), where the multipliers are not unique.
* ``degenerate_shared``: the same problems with only q batched, P, A, b, G and h shared
  (how OptNet's Sudoku layer batches them).
* ``paper``: 512 QPs of the paper's generator, n 50, 10 eq, 25 ineq, every leaf batched.

For each: ``jax.jit(jax.vmap(solve))`` on the stacked batch, and a Python loop of
``jax.jit(solve)`` over the problems, interleaved, best of ``--repeats``; the iteration
spread of the lanes; the largest difference between a lane and the same problem solved
alone.

    python benchmarks/batches.py [--repeats 5] [--cases degenerate degenerate_shared paper]
"""

from __future__ import annotations

import argparse
import itertools
import sys

import numpy as np

try:
    from benchmarks import harness
except ImportError:  # run as a script
    import harness

import jax
import jax.numpy as jnp

import altdiff_jax as ad


def sudoku_equalities() -> np.ndarray:
    """``(40, 64)``: the independent rows of the 4 × 4 Sudoku's one-hot constraints."""
    def index(row, column, digit):
        return 16 * row + 4 * column + digit

    groups = [[index(r, c, d) for d in range(4)] for r, c in itertools.product(range(4), range(4))]
    groups += [[index(r, c, d) for c in range(4)] for r, d in itertools.product(range(4), range(4))]
    groups += [[index(r, c, d) for r in range(4)] for c, d in itertools.product(range(4), range(4))]
    groups += [[index(2 * br + i, 2 * bc + j, d) for i in range(2) for j in range(2)]
               for br, bc, d in itertools.product(range(2), range(2), range(4))]
    rows = np.zeros((len(groups), 64))
    for i, group in enumerate(groups):
        rows[i, group] = 1.0
    independent = []
    for i in range(rows.shape[0]):
        if np.linalg.matrix_rank(rows[independent + [i]]) == len(independent) + 1:
            independent.append(i)
    return rows[independent]


def degenerate_problems(count: int = 150, seed: int = 0) -> list[dict]:
    A = sudoku_equalities()
    rng = np.random.default_rng(seed)
    problems = []
    for _ in range(count):
        clues = np.eye(4)[rng.integers(0, 4, 16)].reshape(-1) * (rng.uniform(size=64) < 0.5)
        q = -clues + 0.1 * rng.standard_normal(64)
        problems.append(dict(P=1e-3 * np.eye(64), q=q, A=A, b=np.ones(A.shape[0]), G=-np.eye(64), h=np.zeros(64)))
    return problems


def paper_problems(count: int = 512) -> list[dict]:
    return [harness.paper_qp(50, 25, 10, seed=seed) for seed in range(count)]


CASES = {  # name: (title, problems, the leaves the lanes share)
    "degenerate": ("150 degenerate LP-like QPs (4 × 4 Sudoku constraints, n 64, 40 eq, x >= 0), every leaf batched",
                   degenerate_problems, ()),
    "degenerate_shared": ("the same 150, only q batched (P, A, b, G, h shared, as in OptNet's Sudoku layer)",
                          degenerate_problems, ("P", "A", "b", "G", "h")),
    "paper": ("512 QPs of the paper's generator, n 50, 10 eq, 25 ineq, every leaf batched", paper_problems, ()),
}


def measure(problems: list[dict], repeats: int, shared: tuple = ()) -> list:
    options = ad.Options()
    keys = list(problems[0])
    batch = ad.QP(**{k: jnp.asarray(problems[0][k] if k in shared else np.stack([pr[k] for pr in problems]))
                     for k in keys})
    singles = [ad.QP(**{k: jnp.asarray(problems[0][k] if k in shared else pr[k]) for k in keys}) for pr in problems]
    in_axes = ad.QP(**{k: None if k in shared else 0 for k in keys})
    batched = jax.jit(jax.vmap(ad.solve, in_axes=(in_axes, None)))
    alone = jax.jit(ad.solve)
    lanes = harness.block(batched(batch, options))
    solutions = harness.block([alone(single, options) for single in singles])
    timings = harness.interleaved({
        "vmap": lambda: batched(batch, options),
        "loop": lambda: [alone(single, options) for single in singles],
    }, repeats=repeats)
    iterations = np.asarray(lanes.info.iterations)
    difference = max(float(np.max(np.abs(np.asarray(lanes.x[i]) - np.asarray(s.x))) / (1 + np.max(np.abs(s.x))))
                     for i, s in enumerate(solutions))
    solved = int(np.sum(np.asarray(lanes.info.status) == ad.Status.SOLVED))
    return [timings["vmap"].best, timings["loop"].best, timings["vmap"].best / timings["loop"].best,
            f"{np.median(iterations):.0f} / {iterations.max()}", f"{solved}/{len(problems)}",
            f"{np.mean(np.asarray(lanes.info.polished)):.0%}", f"{difference:.1e}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(harness.RESULTS / "batches.md"))
    args = parser.parse_args()
    header = harness.hardware_line()
    rows = []
    for name in args.cases:
        title, make, shared = CASES[name]
        rows.append([title, *measure(make(), args.repeats, shared)])
        print(rows[-1], file=sys.stderr)
    body = [harness.markdown_table(
        ["batch", "vmap (s)", "loop (s)", "vmap / loop", "iterations median / max", "SOLVED", "polished",
         "max lane − alone (rel.)"], rows), "",
        "vmap: `jax.jit(jax.vmap(solve))` on the stacked batch; loop: `jax.jit(solve)` called on each problem "
        "in turn. Forward solves, float64, default Options, best of interleaved runs after the first call. "
        "A lane runs as its problem alone does, but batched arithmetic rounds differently, so the two agree to "
        "round-off, or to the tolerance where a check falls differently, not bit for bit."]
    harness.write_markdown(args.out, "Batches against loops", header, body)


if __name__ == "__main__":
    main()
