"""End-to-end runs read the shared data folder and may download or cache nothing."""

import pytest


@pytest.fixture(autouse=True)
def _offline_data(data_dir):
    """Every e2e test runs with `data_dir`'s environment (tests/conftest.py)."""
