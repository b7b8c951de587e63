"""Report writers: the accuracy and results tables of :func:`~.cases.run_cases`, Markdown
tables and results files, and PNG plots."""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
import sys
from typing import Callable, Optional, Sequence

import numpy as np

from .cases import Case
from .provenance import ROOT
from .reference import cosine, relative_error
from .workers import Measurement


def accuracy(m: Measurement, case: Case) -> dict:
    """Cosine and relative error against the case's exact gradient, the parameter whose own
    cosine is lowest, and ‖x − x*‖∞ (None where not measured)."""
    if m.grads is None:
        return dict(cosine=None, error=None, worst="–", x_error=None)
    per = {k: cosine(m.grads[k], case.grads[k]) for k in m.grads
           if m.grads[k] is not None and np.linalg.norm(case.grads[k]) > 0}
    worst = min(per, key=per.get)
    return dict(cosine=cosine(m.grads, case.grads), error=relative_error(m.grads, case.grads),
                worst=f"{worst} {per[worst]:.6f}", x_error=float(np.max(np.abs(m.x - case.x))))


def backward_cell(m: Measurement) -> str:
    """Measured apart, or ≈ total − forward (clipped at 0: a difference of two noisy bests)."""
    if m.backward is not None:
        return fmt(m.backward_s)
    return "≈" + fmt(max(m.backward_s, 0.0))


RESULT_HEADER = ["method", "iterations", "set-up s (once)", "forward s", "backward s", "total s", "cosine",
                 "rel. error", "worst parameter (cosine)", "‖x − x*‖∞", "notes"]


def results_table(results, with_tol: bool = False) -> str:
    """One row per case and contender: :data:`RESULT_HEADER` after the case (and its tol)."""
    rows = []
    for case, measurements in results:
        for m in measurements.values():
            a = accuracy(m, case)
            timed = m.skipped is None
            rows.append([case.label] + ([f"{case.tol:g}"] if with_tol else []) + [
                m.label, m.iterations if timed else None, m.setup_s if timed else None,
                m.forward.best if timed else None, backward_cell(m) if timed else None,
                m.total.best if timed else None,
                f"{a['cosine']:.9f}" if a["cosine"] is not None else None,
                f"{a['error']:.2e}" if a["error"] is not None else None, a["worst"],
                f"{a['x_error']:.1e}" if a["x_error"] is not None else None,
                "; ".join(([m.skipped] if m.skipped else []) + m.notes)])
    header = ["case"] + (["tol"] if with_tol else []) + RESULT_HEADER
    return markdown_table(header, rows, "l" + ("r" if with_tol else "") + "l" + "r" * 7 + "lrl")


def pivot(results, value: Callable[[Measurement, Case], float], fmt_value: Callable[[float], str]) -> str:
    """The paper's layout: a row per contender, a column per case."""
    labels = list(dict.fromkeys(label for _, ms in results for label in ms))
    rows = []
    for label in labels:
        row = [label]
        for case, ms in results:
            m = ms.get(label)
            if m is None or m.skipped:
                row.append("–" if m is None else "over budget" if m.over_budget or "over the" in m.skipped
                           else "skipped (projected over budget)" if "projected" in m.skipped else "–")
            else:
                row.append(fmt_value(value(m, case)))
        rows.append(row)
    return markdown_table(["method"] + [case.label for case, _ in results], rows, "l" + "r" * len(results))


def timing_spread(results) -> str:
    """How much the machine swung: the spread of the total-time runs over all contenders."""
    spreads = [m.total.spread for _, ms in results for m in ms.values() if len(m.total.times) > 1]
    return (f"spread of the total-time runs (slowest/fastest − 1): median {100 * np.median(spreads):.0f}%, "
            f"max {100 * max(spreads):.0f}%" if spreads else "")


def fmt(value, digits: int = 4) -> str:
    """A table cell: numbers to ``digits`` significant digits, None/NaN as '–'."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence], align: Optional[str] = None) -> str:
    """A Markdown table; ``align`` has one letter per column, 'l' or 'r' (default: text
    left, numbers right, from the first row)."""
    if align is None:
        first = rows[0] if rows else header
        align = "".join("r" if isinstance(v, (int, float)) else "l" for v in first)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_markdown(path, title: str, header_line: str, body: Sequence[str], command: Optional[str] = None) -> None:
    """A results file: the hardware line first, then the title, the command and the body."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    command = command or "python " + " ".join([os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:])
    text = f"{header_line}\n\n# {title}\n\n`{command}`\n\n" + "\n".join(body).rstrip() + "\n"
    path.write_text(text)
    print(f"wrote {os.path.relpath(path, ROOT)}")


@dataclasses.dataclass
class Panel:
    """One plot: series name -> (xs, ys); NaN points are left out."""

    title: str
    xlabel: str
    ylabel: str
    series: dict
    logx: bool = True
    logy: bool = True


def plot_panels(path, panels: Sequence[Panel], header_line: str = "") -> bool:
    """A PNG of the panels side by side (False, with a printed line, without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("note: matplotlib is not installed: no plot (`pip install matplotlib`)")
        return False
    figure, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.0), squeeze=False)
    for axis, panel in zip(axes[0], panels):
        for name, (xs, ys) in panel.series.items():
            points = [(x, y) for x, y in zip(xs, ys) if y is not None and np.isfinite(y) and (y > 0 or not panel.logy)]
            if points:
                axis.plot(*zip(*points), "o-", label=name, markersize=4)
        axis.set_xscale("log" if panel.logx else "linear")
        axis.set_yscale("log" if panel.logy else "linear")
        axis.set_title(panel.title, fontsize=10)
        axis.set_xlabel(panel.xlabel)
        axis.set_ylabel(panel.ylabel)
        axis.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=7)
    if header_line:
        figure.text(0.01, 0.005, header_line[:220], fontsize=5, alpha=0.7)
    figure.tight_layout(rect=(0, 0.03, 1, 1))
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    print(f"wrote {os.path.relpath(path, ROOT)}")
    return True
