"""Every notebook in notebooks/ runs top to bottom in quick mode without an error.

Each notebook is executed by nbclient in a fresh kernel with ALTDIFF_QUICK=1 (fewer
training steps, less data) and ALTDIFF_DATA pointing at the data directory; a cell that
raises, including a notebook's own assert cells on the claims its text makes, fails the
test and the error names the cell. Needs the ``examples`` extra (nbclient, ipykernel,
optax, matplotlib, tqdm) and the data (see ``altdiff_jax.datasets``); skipped without them.

Most of a quick run is XLA compilation. The kernels share a persistent JAX compilation
cache in pytest's cache directory (``.pytest_cache/d/jax-compilation-cache``), so a rerun
with unchanged code compiles nothing; set JAX_COMPILATION_CACHE_DIR to use another
directory, or run pytest with ``-p no:cacheprovider`` to compile from scratch.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from altdiff_jax import datasets

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
TIMEOUT_PER_CELL = 600
CACHE_LIMIT_BYTES = 1 << 30  # the cache evicts least recently used entries beyond this

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")


def _data_directory() -> Path:
    try:
        return datasets.data_dir(datasets.PJM_FILE, datasets.MNIST_IMAGES, datasets.MNIST_LABELS)
    except FileNotFoundError as error:
        pytest.skip(str(error))


@pytest.fixture(scope="module")
def compilation_cache(request) -> str | None:
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return os.environ["JAX_COMPILATION_CACHE_DIR"]
    cache = getattr(request.config, "cache", None)
    return None if cache is None else str(cache.mkdir("jax-compilation-cache"))


def test_notebooks_found():
    assert {p.name for p in NOTEBOOKS} >= {"energy_scheduling.ipynb", "quickstart.ipynb", "mnist_qp_layer.ipynb"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_in_quick_mode(path: Path, monkeypatch, compilation_cache):
    for module in ("optax", "matplotlib", "tqdm"):
        pytest.importorskip(module)
    # The kernel inherits this process's environment.
    monkeypatch.setenv("ALTDIFF_QUICK", "1")
    monkeypatch.setenv("ALTDIFF_DATA", str(_data_directory()))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    if compilation_cache is not None:
        monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", compilation_cache)
        monkeypatch.setenv("JAX_COMPILATION_CACHE_MAX_SIZE", str(CACHE_LIMIT_BYTES))
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        timeout=TIMEOUT_PER_CELL,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    start = time.perf_counter()
    client.execute()  # raises CellExecutionError naming the failing cell
    print(f"{path.name}: {time.perf_counter() - start:.0f} s in quick mode")
