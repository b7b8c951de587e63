"""The README's main command: the demo runs and its Alt-Diff gradients match its own
independent dense KKT reference (printed per leaf)."""

from __future__ import annotations

import re
import subprocess
import sys


def test_demo_runs_and_its_gradients_match_the_kkt_reference():
    result = subprocess.run(
        [sys.executable, "-m", "altdiff_jax.demo", "--n", "20", "--p", "4", "--m", "10", "--tol", "1e-10"],
        capture_output=True, text=True, timeout=600, check=True,
    )
    assert "solve: SOLVED" in result.stdout
    rows = re.findall(r"^\s+([PqAbGh])\s+\S+\s+([0-9.]+)\s+([0-9.e+-]+)$", result.stdout, re.MULTILINE)
    assert [leaf for leaf, _, _ in rows] == list("PqAbGh")
    for leaf, cosine, error in rows:
        # measured at n = 100, tol 1e-8: relative errors 5e-9 to 8e-9
        assert float(cosine) >= 1 - 1e-9 and float(error) <= 1e-6, (leaf, cosine, error)
