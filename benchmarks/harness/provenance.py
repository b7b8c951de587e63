"""Provenance: the line every results file starts with (commit, date, CPU, cores, memory,
load, jax and the peers' versions), and the machine's memory."""

from __future__ import annotations

import datetime
import io
import importlib.metadata
import math
import os
import pathlib
import platform
import subprocess
import tarfile
from typing import Optional, Sequence

import jax

ROOT = pathlib.Path(__file__).resolve().parent.parent.parent
RESULTS = ROOT / "benchmarks" / "results"
PEER_PACKAGES = ("qpax", "jaxopt", "cvxpylayers", "diffcp", "qpth", "torch", "osqp", "cvxpy", "clarabel")


def package_version(name: str) -> Optional[str]:
    """The installed version of a distribution, or None."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def source_version() -> str:
    """``git rev-parse --short HEAD``, with a mark when altdiff_jax has uncommitted changes."""
    try:
        git = ["git", "-C", str(ROOT)]
        commit = subprocess.run(git + ["rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(git + ["status", "--porcelain", "--", "altdiff_jax"], capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "commit unknown (no git)"
    return f"commit {commit}" + (" + uncommitted changes to altdiff_jax" if dirty else "")


def export_package(ref: str, directory: pathlib.Path) -> pathlib.Path:
    """altdiff_jax as of git ``ref``, extracted into ``directory`` (returned): ``directory /
    "altdiff_jax"`` is that version's package."""
    archive = subprocess.run(["git", "archive", ref, "altdiff_jax"], cwd=ROOT, capture_output=True,
                             check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(directory)  # our own repository's archive
    return directory


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def _memory_kib(field: str) -> Optional[int]:
    try:
        with open("/proc/meminfo") as f:
            return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))
    except (OSError, StopIteration):
        return None


def total_memory() -> float:
    """Bytes of memory of the machine (MemTotal), or +inf where unknown."""
    kib = _memory_kib("MemTotal")
    return math.inf if kib is None else 1024.0 * kib


def available_memory() -> float:
    """Bytes of memory available now (MemAvailable), or +inf where unknown."""
    kib = _memory_kib("MemAvailable")
    return math.inf if kib is None else 1024.0 * kib


def hardware_line(packages: Sequence[str] = ()) -> str:
    """One line of provenance: commit, date, CPU, cores, memory, load, jax, package versions.

    Args:
        packages: distributions whose versions to add (those not installed are left out).
    """
    total = _memory_kib("MemTotal")
    parts = [
        source_version(),
        datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        _cpu_model(),
        f"{os.cpu_count()} cores",
        f"{total / 2**20:.0f} GiB RAM" if total else "RAM unknown",
        f"load {os.getloadavg()[0]:.1f}",
        f"Python {platform.python_version()}",
        f"jax {jax.__version__} ({jax.default_backend()}, x64 {jax.config.jax_enable_x64})",
    ]
    if "OPENBLAS_NUM_THREADS" in os.environ:
        parts.append(f"OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']}")
    versions = [f"{name} {package_version(name)}" for name in packages if package_version(name)]
    return "machine: " + ", ".join(parts) + ("; " + ", ".join(versions) if versions else "")
