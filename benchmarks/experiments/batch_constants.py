"""The batching constants against each other: polishing stops per lane in a float64 batch
(``_solve.BATCH_POLISH_ATTEMPTS``), the share of a batch below which ``on_needing_lanes``
gathers the lanes still running (``_batching.COMPACTED_LANES``) and the chunk of
``computed_where`` under ``vmap`` on CPU (``_linalg.GATHERED_FRACTION``).

Each variant runs in a process of its own (the constants are read at trace time), the
variants in turn for ``--rounds`` rounds, in alternating order; each process times the
batch cases of ``benchmarks/batches.py`` (the 150 degenerate QPs, 512 paper QPs with
every leaf batched) and 512 paper QPs sharing P, A and G, as ``jax.jit(jax.vmap(solve))``
against a Python loop of ``jax.jit(solve)`` (``batches.measure``), best of 4 interleaved
runs in the process, best over rounds.

    python benchmarks/experiments/batch_constants.py [--rounds 2] [--output benchmarks/results/batch_constants.md]
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
    "polish stops 2, gather at 1/16, chunks of 1/8": {"attempts": 2, "compacted": 16, "chunk": 8},
    "polish stops unlimited, gather at 1/16, chunks of 1/8": {"attempts": None, "compacted": 16, "chunk": 8},
    "polish stops unlimited, gather at 1/4, chunks of 1/8": {"attempts": None, "compacted": 4, "chunk": 8},
    "polish stops unlimited, gather at 1/4, chunks of 1/4": {"attempts": None, "compacted": 4, "chunk": 4},
}
CASES = ("degenerate", "paper", "shared")


def child(settings: dict) -> dict:
    import jax
    jax.config.update("jax_enable_x64", True)

    from altdiff_jax import _batching, _linalg, _solve
    from batches import degenerate_problems, measure, paper_problems

    _solve.BATCH_POLISH_ATTEMPTS = {4: 0, 8: settings["attempts"]}
    _batching.COMPACTED_LANES = settings["compacted"]
    _linalg.GATHERED_FRACTION = settings["chunk"]
    out = {}
    for case in CASES:
        problems = degenerate_problems() if case == "degenerate" else paper_problems()
        vmap_s, loop_s, _, iterations, solved, *_ = measure(problems, 4, ("P", "A", "G") if case == "shared" else ())
        out[case] = {"vmap": vmap_s, "loop": loop_s, "max_iterations": int(iterations.split(" / ")[1]),
                     "solved": int(solved.split("/")[0])}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--output", default=str(HERE.parent / "results" / "batch_constants.md"))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    import harness

    best: dict = {}
    names = list(VARIANTS)
    for round_ in range(args.rounds):
        for name in names if round_ % 2 == 0 else names[::-1]:
            result = subprocess.run([sys.executable, __file__, "--child", json.dumps(VARIANTS[name])],
                                    capture_output=True, text=True, check=True)
            for case, row in json.loads(result.stdout.strip().splitlines()[-1]).items():
                kept = best.setdefault((name, case), row)
                kept["vmap"], kept["loop"] = min(kept["vmap"], row["vmap"]), min(kept["loop"], row["loop"])
            print(name, "done", file=sys.stderr)
    rows = [[case, name, f"{best[name, case]['vmap']:.3f}", f"{best[name, case]['loop']:.3f}",
             f"{best[name, case]['vmap'] / best[name, case]['loop']:.2f}", best[name, case]["max_iterations"],
             best[name, case]["solved"]] for case in CASES for name in names]
    body = [harness.markdown_table(["case", "variant", "vmap s", "loop s", "vmap / loop", "most iterations of a lane",
                                    "SOLVED"], rows), "",
            "degenerate: the 150 LP-like QPs of `benchmarks/batches.py`; paper: 512 QPs of the paper's generator "
            "(n 50, 10 eq, 25 ineq) with every leaf batched; shared: the same with P, A and G shared. Forward "
            f"solves, float64, default Options, best of 4 in each process and of {args.rounds} rounds."]
    harness.write_markdown(args.output, "Batching constants", harness.hardware_line(), body)


if __name__ == "__main__":
    main()
