"""Loaders for the public data sets of the notebooks: PJM load and MNIST (NumPy only).

The data is not part of the package. :func:`data_dir` looks for it in the directory
named by the environment variable ``ALTDIFF_DATA``, then in ``shared/data`` next to the
repository (``<repo>/../shared/data``), and expects this layout::

    <data dir>/pjm/pjm_load_data_2008-11.txt
    <data dir>/mnist/t10k-images-idx3-ubyte.gz
    <data dir>/mnist/t10k-labels-idx1-ubyte.gz

Where the public files come from:

* PJM: the energy-scheduling data of Donti et al.'s e2e-model-learning repository,
  https://github.com/locuslab/e2e-model-learning (``power_sched/pjm_load_data_2008-11.txt``):
  hourly PJM load and temperature, 2008–2011.
* MNIST: the test-set files ``t10k-images-idx3-ubyte.gz`` and ``t10k-labels-idx1-ubyte.gz``
  of the MNIST distribution (http://yann.lecun.com/exdb/mnist/ or one of its mirrors).
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import Optional, Union

import numpy as np

PathLike = Union[str, "os.PathLike[str]"]

ENVIRONMENT_VARIABLE = "ALTDIFF_DATA"
PJM_FILE = "pjm/pjm_load_data_2008-11.txt"
MNIST_IMAGES = "mnist/t10k-images-idx3-ubyte.gz"
MNIST_LABELS = "mnist/t10k-labels-idx1-ubyte.gz"

_SOURCES = {
    "pjm": (
        "the energy-scheduling data of Donti et al.'s e2e-model-learning repository, "
        "https://github.com/locuslab/e2e-model-learning (file power_sched/pjm_load_data_2008-11.txt)"
    ),
    "mnist": (
        "the MNIST test-set files t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz "
        "from the MNIST distribution, http://yann.lecun.com/exdb/mnist/ or one of its mirrors"
    ),
}

# Element types of the IDX format (third byte of the magic number).
_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def default_data_dir() -> Path:
    """The repository-relative default: ``shared/data`` beside the repository root.

    Returns:
        ``<repo>/../shared/data``, computed from this module's location
        (``<repo>/altdiff_jax/datasets.py``); it need not exist.
    """
    return Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def _candidates() -> list[Path]:
    directories = []
    if os.environ.get(ENVIRONMENT_VARIABLE):
        directories.append(Path(os.environ[ENVIRONMENT_VARIABLE]).expanduser())
    directories.append(default_data_dir())
    return directories


def data_dir(*required: str) -> Path:
    """The data directory: ``$ALTDIFF_DATA`` if set and it holds the files, else the default.

    Args:
        *required: paths relative to the data directory that must exist there, e.g.
            ``"pjm/pjm_load_data_2008-11.txt"``. With none, the first candidate directory
            that exists is returned.

    Returns:
        The first of ``$ALTDIFF_DATA`` and :func:`default_data_dir` that holds every
        required file.

    Raises:
        FileNotFoundError: if no candidate holds them; the message names the
            directories searched, where the public data comes from and where to put it.

    Examples:
        >>> from altdiff_jax.datasets import data_dir, PJM_FILE
        >>> (data_dir(PJM_FILE) / PJM_FILE).is_file()  # doctest: +SKIP
        True
    """
    candidates = _candidates()
    for directory in candidates:
        if directory.is_dir() and all((directory / name).is_file() for name in required):
            return directory
    raise FileNotFoundError(_missing_message(required, candidates))


def _missing_message(required: tuple[str, ...], candidates: list[Path]) -> str:
    what = ", ".join(required) if required else "a data directory"
    sources = [_SOURCES[name.split("/")[0]] for name in required if name.split("/")[0] in _SOURCES]
    lines = [
        f"altdiff_jax.datasets: could not find {what}.",
        "Searched: " + "; ".join(str(d) for d in candidates)
        + f" (set the environment variable {ENVIRONMENT_VARIABLE} to the directory that holds pjm/ and mnist/).",
    ]
    lines += [f"The public data: {source}." for source in dict.fromkeys(sources)]
    lines.append(
        f"Put the files at <data dir>/{PJM_FILE}, <data dir>/{MNIST_IMAGES} and <data dir>/{MNIST_LABELS}, "
        f"with <data dir> = ${ENVIRONMENT_VARIABLE} or {default_data_dir()}; the data is not part of the "
        "repository, so don't copy it in."
    )
    return "\n".join(lines)


def _resolve(path: Optional[PathLike], relative: str) -> Path:
    """An explicit ``path`` (checked to exist), else ``relative`` under :func:`data_dir`."""
    if path is None:
        return data_dir(relative) / relative
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"altdiff_jax.datasets: {path} does not exist. The public data: "
            f"{_SOURCES[relative.split('/')[0]]}."
        )
    return path


def load_pjm(path: Optional[PathLike] = None) -> dict[str, np.ndarray]:
    """PJM hourly load and temperature, 2008–2011 (Donti et al. 2017's energy-scheduling data).

    The text file has one row per hour, three space-separated columns: unix time (s),
    load, temperature (°F). Rows start at the first hour of 1 January 2008 (local time);
    at the daylight-saving changes the timestamps repeat or skip an hour, so every local
    day has exactly 24 rows.

    Args:
        path: the text file; ``None`` for ``pjm/pjm_load_data_2008-11.txt`` under
            :func:`data_dir`.

    Returns:
        A dict of float64 arrays of shape ``(hours,)``: ``"time"`` (unix seconds),
        ``"load"`` and ``"temperature"`` (°F).

    Raises:
        FileNotFoundError: if the file cannot be found (the message says where the
            public data comes from).
        ValueError: if the file does not have three numeric columns.

    Examples:
        >>> from altdiff_jax.datasets import load_pjm
        >>> pjm = load_pjm()  # doctest: +SKIP
        >>> pjm["load"].shape  # doctest: +SKIP
        (35039,)
    """
    raw = np.loadtxt(_resolve(path, PJM_FILE), dtype=np.float64, ndmin=2)
    if raw.shape[1] != 3:
        raise ValueError(f"expected 3 columns (time, load, temperature), got {raw.shape[1]}")
    return {"time": raw[:, 0], "load": raw[:, 1], "temperature": raw[:, 2]}


def read_idx(path: PathLike) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzipped or not, into a NumPy array.

    Args:
        path: a ``.gz`` or uncompressed IDX file.

    Returns:
        The array, of the file's element type (``uint8`` for MNIST) and shape (its
        dimension sizes, big-endian int32 in the header).

    Raises:
        ValueError: if the header is not an IDX header or the data size disagrees with it.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as file:
        content = file.read()
    if len(content) < 4 or content[0] != 0 or content[1] != 0 or content[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (magic bytes {content[:4]!r})")
    dtype, ndim = _IDX_DTYPES[content[2]], content[3]
    shape = tuple(int(d) for d in np.frombuffer(content, ">i4", count=ndim, offset=4))
    offset = 4 + 4 * ndim
    count = int(np.prod(shape))
    if len(content) - offset != count * dtype.itemsize:
        raise ValueError(f"{path}: header says {shape} of {dtype}, data has {len(content) - offset} bytes")
    return np.frombuffer(content, dtype, count=count, offset=offset).reshape(shape).astype(dtype.newbyteorder("="))


def load_mnist(
    path: Optional[PathLike] = None, *, limit: Optional[int] = None, dtype=np.float32
) -> tuple[np.ndarray, np.ndarray]:
    """The MNIST test set (10,000 handwritten digits), from the IDX gzip files.

    Args:
        path: the directory holding ``t10k-images-idx3-ubyte.gz`` and
            ``t10k-labels-idx1-ubyte.gz``; ``None`` for ``mnist/`` under :func:`data_dir`.
        limit: keep only the first ``limit`` images (``None``: all).
        dtype: floating dtype of the images.

    Returns:
        ``(images, labels)``: images ``(N, 784)`` of ``dtype`` in [0, 1] (pixel / 255,
        rows of the 28 × 28 image concatenated), labels ``(N,)`` int32 in 0..9.

    Raises:
        FileNotFoundError: if the files cannot be found (the message says where the
            public data comes from).
        ValueError: if the files are not IDX or disagree in length.

    Examples:
        >>> from altdiff_jax.datasets import load_mnist
        >>> images, labels = load_mnist(limit=100)  # doctest: +SKIP
        >>> images.shape, labels.shape  # doctest: +SKIP
        ((100, 784), (100,))
    """
    if path is None:
        directory = data_dir(MNIST_IMAGES, MNIST_LABELS) / "mnist"
    else:
        directory = Path(path).expanduser()
    images_file, labels_file = (directory / Path(name).name for name in (MNIST_IMAGES, MNIST_LABELS))
    for file in (images_file, labels_file):
        if not file.is_file():
            raise FileNotFoundError(
                f"altdiff_jax.datasets: {file} does not exist. The public data: {_SOURCES['mnist']}."
            )
    images, labels = read_idx(images_file), read_idx(labels_file)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(f"MNIST images {images.shape} and labels {labels.shape} do not match")
    images, labels = images[:limit], labels[:limit]
    images = images.reshape(len(images), -1).astype(dtype) / np.asarray(255, dtype)
    return images, labels.astype(np.int32)
