"""Shared settings of the speed benchmarks: CPU cases run with 2 torch threads (the project's machine)."""

import pytest
import torch


@pytest.fixture(autouse=True)
def two_threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)
