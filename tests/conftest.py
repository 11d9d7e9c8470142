"""Shared test settings."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _single_thread():
    """One torch thread for the whole run: deterministic reductions, and under ``pytest -n 2`` two
    workers with two OpenMP threads each make the many tiny matmuls here far slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
