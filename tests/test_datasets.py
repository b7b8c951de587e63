"""altdiff_jax.datasets: the PJM and MNIST loaders on the real files, the ALTDIFF_DATA
override, and the error that says where the data comes from when it is missing."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest

from altdiff_jax import datasets


def _have(*names: str) -> bool:
    try:
        datasets.data_dir(*names)
        return True
    except FileNotFoundError:
        return False


needs_pjm = pytest.mark.skipif(not _have(datasets.PJM_FILE), reason="PJM data not found (see altdiff_jax.datasets)")
needs_mnist = pytest.mark.skipif(
    not _have(datasets.MNIST_IMAGES, datasets.MNIST_LABELS), reason="MNIST data not found (see altdiff_jax.datasets)"
)


@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv(datasets.ENVIRONMENT_VARIABLE, raising=False)


def test_default_is_shared_data_beside_the_repository():
    repository = Path(datasets.__file__).resolve().parents[1]
    assert datasets.default_data_dir() == repository.parent / "shared" / "data"


@needs_pjm
def test_load_pjm_shapes_ranges_dtypes():
    pjm = datasets.load_pjm()
    assert set(pjm) == {"time", "load", "temperature"}
    hours = len(pjm["load"])
    assert hours == 35039  # 2008-2011 less the last hour
    for column in pjm.values():
        assert column.shape == (hours,) and column.dtype == np.float64 and np.all(np.isfinite(column))
    # hourly timestamps, starting at 2008-01-01 (local time, US Eastern)
    step = np.diff(pjm["time"])
    assert np.median(step) == 3600 and np.all(np.isin(step, [0, 3600, 7200]))
    assert np.datetime64("2008-01-01") <= np.datetime64(int(pjm["time"][0]), "s") < np.datetime64("2008-01-02")
    assert 0.5 < pjm["load"].min() and pjm["load"].max() < 3.5  # load in units of 10^5 MW
    assert -20 < pjm["temperature"].min() and pjm["temperature"].max() < 110  # °F


@needs_pjm
def test_load_pjm_explicit_path_matches_default(tmp_path):
    source = datasets.data_dir(datasets.PJM_FILE) / datasets.PJM_FILE
    copy = tmp_path / "some_name.txt"
    copy.write_bytes(b"".join(source.open("rb").readlines()[:48]))
    pjm = datasets.load_pjm(copy)
    assert pjm["load"].shape == (48,)
    np.testing.assert_array_equal(pjm["load"], datasets.load_pjm()["load"][:48])


@needs_mnist
def test_load_mnist_shapes_ranges_dtypes():
    images, labels = datasets.load_mnist()
    assert images.shape == (10_000, 784) and images.dtype == np.float32
    assert labels.shape == (10_000,) and labels.dtype == np.int32
    assert images.min() == 0.0 and images.max() == 1.0
    assert set(np.unique(labels)) == set(range(10))
    assert np.all(np.bincount(labels) > 800)  # roughly balanced classes
    # the first test digit of MNIST is a 7, the second a 2
    assert labels[:3].tolist() == [7, 2, 1]
    # a digit is dark background with a bright stroke
    assert 0.05 < images.mean() < 0.25


@needs_mnist
def test_load_mnist_limit_and_dtype():
    images, labels = datasets.load_mnist(limit=100, dtype=np.float64)
    assert images.shape == (100, 784) and images.dtype == np.float64 and labels.shape == (100,)
    full, _ = datasets.load_mnist()
    np.testing.assert_allclose(images, full[:100], rtol=1e-6)


def _write_idx(path, array: np.ndarray, type_code: int):
    header = bytes([0, 0, type_code, array.ndim]) + np.asarray(array.shape, ">i4").tobytes()
    with gzip.open(path, "wb") as file:
        file.write(header + array.tobytes())


def test_read_idx_round_trip(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    _write_idx(tmp_path / "a.gz", array, 0x08)
    np.testing.assert_array_equal(datasets.read_idx(tmp_path / "a.gz"), array)
    wide = (np.arange(6).reshape(2, 3) - 3).astype(">i4")
    _write_idx(tmp_path / "b.gz", wide, 0x0C)
    out = datasets.read_idx(tmp_path / "b.gz")
    np.testing.assert_array_equal(out, wide)
    assert out.dtype == np.int32 and out.dtype.isnative


def test_read_idx_rejects_other_files(tmp_path):
    with gzip.open(tmp_path / "bad.gz", "wb") as file:
        file.write(b"not an idx file")
    with pytest.raises(ValueError, match="not an IDX file"):
        datasets.read_idx(tmp_path / "bad.gz")


def test_environment_variable_overrides_default(tmp_path, monkeypatch):
    (tmp_path / "pjm").mkdir()
    (tmp_path / datasets.PJM_FILE).write_text(" 1.0e+09 1.5 30.0\n 1.0000036e+09 1.6 31.0\n")
    images = np.zeros((3, 28, 28), np.uint8)
    images[1, 0, 0] = 255
    (tmp_path / "mnist").mkdir()
    _write_idx(tmp_path / datasets.MNIST_IMAGES, images, 0x08)
    _write_idx(tmp_path / datasets.MNIST_LABELS, np.array([4, 5, 6], np.uint8), 0x08)
    monkeypatch.setenv(datasets.ENVIRONMENT_VARIABLE, str(tmp_path))

    assert datasets.data_dir(datasets.PJM_FILE) == tmp_path
    pjm = datasets.load_pjm()
    np.testing.assert_array_equal(pjm["load"], [1.5, 1.6])
    x, y = datasets.load_mnist()
    assert x.shape == (3, 784) and y.tolist() == [4, 5, 6] and x[1, 0] == 1.0 and x.sum() == 1.0


@needs_pjm
def test_environment_variable_without_the_file_falls_back_to_default(tmp_path, monkeypatch):
    if not (datasets.default_data_dir() / datasets.PJM_FILE).is_file():
        pytest.skip("PJM is not in the default data directory")
    monkeypatch.setenv(datasets.ENVIRONMENT_VARIABLE, str(tmp_path))
    assert datasets.data_dir(datasets.PJM_FILE) == datasets.default_data_dir()


def test_missing_data_raises_with_the_source(tmp_path, monkeypatch):
    monkeypatch.setenv(datasets.ENVIRONMENT_VARIABLE, str(tmp_path / "empty"))
    monkeypatch.setattr(datasets, "default_data_dir", lambda: tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError) as error:
        datasets.load_pjm()
    message = str(error.value)
    assert "github.com/locuslab/e2e-model-learning" in message
    assert "ALTDIFF_DATA" in message and str(tmp_path / "empty") in message and str(tmp_path / "nowhere") in message
    assert datasets.PJM_FILE in message

    with pytest.raises(FileNotFoundError) as error:
        datasets.load_mnist()
    message = str(error.value)
    assert "MNIST" in message and "t10k-images-idx3-ubyte.gz" in message and "ALTDIFF_DATA" in message


def test_missing_explicit_path_raises_with_the_source(tmp_path):
    with pytest.raises(FileNotFoundError, match="e2e-model-learning"):
        datasets.load_pjm(tmp_path / "absent.txt")
    with pytest.raises(FileNotFoundError, match="MNIST"):
        datasets.load_mnist(tmp_path)


def test_missing_without_environment_variable(tmp_path, monkeypatch, no_env):
    monkeypatch.setattr(datasets, "default_data_dir", lambda: tmp_path)
    with pytest.raises(FileNotFoundError, match="ALTDIFF_DATA"):
        datasets.data_dir(datasets.MNIST_IMAGES)


@needs_mnist
def test_partial_copy_is_not_used(tmp_path, monkeypatch):
    """A directory with only the images file does not shadow a complete default."""
    if not (datasets.default_data_dir() / datasets.MNIST_LABELS).is_file():
        pytest.skip("MNIST is not in the default data directory")
    (tmp_path / "mnist").mkdir()
    shutil.copy(datasets.data_dir(datasets.MNIST_IMAGES) / datasets.MNIST_IMAGES, tmp_path / datasets.MNIST_IMAGES)
    monkeypatch.setenv(datasets.ENVIRONMENT_VARIABLE, str(tmp_path))
    assert datasets.data_dir(datasets.MNIST_IMAGES, datasets.MNIST_LABELS) == datasets.default_data_dir()
