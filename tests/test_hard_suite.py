"""The hard suite (tests/hard_suite.py) against Clarabel: no wrong SOLVED, no wrong
infeasibility, every unbounded and infeasible case detected.

The cases are padded to two shapes (the m >= 25n family apart, so that the other lanes do
not pay for 500 rows) and solved as two vmapped batches: two compilations for 69 problems.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import altdiff_jax as ad
import hard_suite

TOL = 1e-6
# The criterion is at 20 000 iterations; a lane that has not finished by this cap
# reports MAX_ITER, which the criterion allows. The benchmark (benchmarks/hard_suite.py)
# runs the full cap and compares the SOLVED count with OSQP's.
OPTIONS = ad.Options(tol=TOL, max_iter=5_000)
WIDE = 200  # cases with more inequality rows than this form the second batch

solve_batch = jax.jit(jax.vmap(ad.solve, in_axes=(0, None)))


def _batch(cases):
    n, p, m = hard_suite.common_shape(cases)
    padded = [hard_suite.pad(case, n, p, m) for case in cases]
    leaves = {k: jnp.asarray(np.stack([case[k] for case in padded])) for k in "PqAbGh"}
    return ad.QP(**leaves)


@functools.lru_cache(maxsize=None)
def _results():
    cases = hard_suite.test_cases()
    groups = [[c for c in cases if hard_suite.shape(c)[2] <= WIDE], [c for c in cases if hard_suite.shape(c)[2] > WIDE]]
    results = []
    for group in groups:
        solutions = solve_batch(_batch(group), OPTIONS)
        for i, case in enumerate(group):
            n = case["q"].size
            results.append((case, int(solutions.info.status[i]), np.asarray(solutions.x[i, :n])))
    return results


def test_no_wrong_status_and_every_certificate():
    wrong = []
    solved = 0
    for case, status, x in _results():
        expected = ad.Status[case["expected"]]
        if expected != ad.Status.SOLVED:
            if status != expected:
                wrong.append((case["name"], ad.Status(status).name, "expected " + case["expected"]))
            continue
        if status == ad.Status.SOLVED:
            _, _, _, reference_objective = hard_suite.reference(case)
            objective = hard_suite.objective(case, x)
            if not hard_suite.judge(objective, reference_objective, hard_suite.primal_residual(case, x), TOL):
                error = hard_suite.objective_error(objective, reference_objective)
                wrong.append((case["name"], "SOLVED", f"objective error {error:.1e}"))
            solved += 1
        elif status != ad.Status.MAX_ITER:
            wrong.append((case["name"], ad.Status(status).name, "a feasible, bounded problem"))
    assert not wrong, wrong
    # Measured when written: 54 of the 55 feasible cases SOLVED at this cap (OSQP, C, with
    # polish: 46 of these 55 at 20 000 iterations, `python benchmarks/hard_suite.py --quick`;
    # benchmarks/results/hard_suite.md holds the larger benchmark set: 32/34 vs OSQP 23/34).
    assert solved >= 52, solved
