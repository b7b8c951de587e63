"""Tables of cases: a :class:`Case` (a problem, its exact answer), :func:`run_cases` (each
case's contenders side by side), and the :class:`Ladder` that skips a contender on larger
cases once it ran over the budget or is projected to."""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Sequence

import numpy as np

from .workers import Measurement, side_by_side


class Ladder:
    """Budget bookkeeping over growing problems: a contender that ran over the budget is
    not run on larger ones, and one whose solve + gradient time at the last size, times the
    growth of the data (a lower bound: every contender reads all of it), exceeds the budget
    is skipped up front. (Compilation is left out of the projection: it does not grow with
    the data.)"""

    def __init__(self, budget_s: float):
        self.budget_s = budget_s
        self.last: dict = {}  # label -> (data size, seconds)
        self.stopped: dict = {}  # label -> size at which it overran

    def skip_reason(self, label: str, data_size: float) -> Optional[str]:
        if label in self.stopped:
            return f"skipped: over the {self.budget_s:.0f} s budget at {self.stopped[label]}"
        if label in self.last:
            size, seconds = self.last[label]
            projected = seconds * data_size / size
            if projected > self.budget_s:
                return f"skipped: projected >= {projected:.0f} s (> budget {self.budget_s:.0f} s)"
        return None

    def record(self, measurement: Measurement, data_size: float, size_label: str) -> None:
        if measurement.over_budget:
            self.stopped[measurement.label] = size_label
        elif measurement.skipped is None:
            self.last[measurement.label] = (data_size, measurement.total.best)


@dataclasses.dataclass
class Case:
    """One problem of a table: its data, exact answer, and what the rows call it.

    ``grads`` holds the exact gradient of gᵀx* by parameter name; ``data_size`` is what the
    :class:`Ladder` scales time with (n·(n + p + m) for a dense QP, n for a layer; the same
    for every case of a tolerance sweep).
    """

    label: str
    problem: dict
    g: np.ndarray
    x: np.ndarray
    grads: dict
    tol: float
    data_size: float
    note: str = ""


def run_cases(cases: Sequence[Case], contenders_of: Callable[[Case], list], repeats: int = 5,
              budget_s: float = 600.0, once_s: float = 10.0, jobs: int = 1,
              peers: Optional[Sequence[str]] = None) -> list:
    """[(case, {label: Measurement})]: each case's contenders (those whose label contains one
    of ``peers``, if given) side by side, except those a :class:`Ladder` over the cases rules
    out (over the budget on an earlier case, or projected to be)."""
    ladder = Ladder(budget_s)
    results = []
    for case in cases:
        print(f"-- {case.label}", flush=True)
        contenders = [c for c in contenders_of(case) if not peers or any(p in c.label for p in peers)]
        measurements = {}
        for item in contenders:
            reason = ladder.skip_reason(item.label, case.data_size)
            if reason:
                measurements[item.label] = Measurement(item.label, skipped=reason)
                print(f"  {item.label}: {reason}")
        chosen = [item for item in contenders if item.label not in measurements]
        measured = side_by_side(chosen, case.problem, case.g, repeats, budget_s, once_s, jobs)
        measurements = {item.label: measurements.get(item.label) or measured[item.label] for item in contenders}
        for m in measurements.values():
            ladder.record(m, case.data_size, case.label)
        results.append((case, measurements))
    return results
