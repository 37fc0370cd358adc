import os

import torch

# Without a GPU, Triton kernels run on CPU tensors only in Triton's interpreter, which must be
# enabled before anything imports triton (tests/kernels/ checks them; see docs/DEVELOPING.md).
# With a GPU, Triton compiles for it and tests/kernels/test_cuda.py runs the kernels there.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
