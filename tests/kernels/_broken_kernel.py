"""A kernel that Triton's interpreter runs correctly but its compiler rejects: ``tl.dot`` of 4x4
tiles (the compiler needs K >= 8, and tensor cores 16). tests/kernels/test_aot.py checks that
``flexrec.kernels.aot`` reports it as failing, naming the kernel, its shape and the target."""

import triton
import triton.language as tl


@triton.jit
def small_dot_kernel(a_ptr, out_ptr, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    a = tl.load(a_ptr + offs[:, None] * BLOCK + offs[None, :])
    tl.store(out_ptr + offs[:, None] * BLOCK + offs[None, :], tl.dot(a, a))
