"""End-to-end runs read the shared data folder and may download or cache nothing."""

import pytest

from helpers import data_dir


@pytest.fixture(scope="session")
def shared_data():
    folder = data_dir()
    if not (folder / "tinyshakespeare" / "input.txt").is_file() or not (folder / "multi30k" / "train.de.gz").is_file():
        pytest.fail(f"the shared data is not under {folder}; set QKV_DATA_DIR (make test does)")
    return folder


@pytest.fixture(autouse=True)
def _offline_data(shared_data, tmp_path, monkeypatch):
    monkeypatch.setenv("QKV_DATA_DIR", str(shared_data))
    monkeypatch.setenv("QKV_CACHE_DIR", str(tmp_path / "cache"))  # nothing may be downloaded or cached
