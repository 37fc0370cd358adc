"""The kernel tests. Without a GPU, tests/conftest.py (which pytest loads before this file, for
any run of these tests) sets TRITON_INTERPRET=1 before anything imports triton, so that the
Triton kernels run on CPU tensors. Helpers live in _kernel_helpers.py."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
