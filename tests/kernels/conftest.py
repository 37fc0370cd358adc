"""The kernel tests. Without a GPU, TRITON_INTERPRET=1 is set first, before anything imports
triton, so that the Triton kernels run on CPU tensors (tests/conftest.py does the same, for runs
that collect other test folders first). Helpers live in _kernel_helpers.py."""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
