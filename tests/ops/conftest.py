"""Fixtures for the op tests (helpers live in _op_helpers.py, a name no other conftest shadows)."""

import pytest
import torch

import flexrec.ops  # noqa: F401  (registers every op)


@pytest.fixture
def gen():
    """A seeded generator: every test draws fresh random inputs from it, reproducibly."""
    return torch.Generator().manual_seed(1234)
