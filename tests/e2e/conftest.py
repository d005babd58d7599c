"""Shared setup of the end-to-end tests: each module's runs use one thread (train.threads = 1, which sets
torch's global thread count); the next module gets back the count it had."""

import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
