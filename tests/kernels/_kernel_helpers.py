"""Helpers of the kernel tests (a module name no other test folder uses)."""

import math
import os

import torch

# K values that stress masking: 1 (a single candidate), 2, odd, just under and over a power of
# two, and the paper's 30.
ODD_KS = (1, 2, 5, 30, 31, 100)

TOL = {torch.float32: dict(atol=2e-5, rtol=2e-5), torch.float64: dict(atol=1e-10, rtol=1e-10)}


def to64(x):
    return x.double() if torch.is_tensor(x) and x.is_floating_point() else x


def interpreted(x: torch.Tensor) -> bool:
    return x.device.type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1"


def assert_close_lowp(out, ref_lowp, ref64, what: str, atol: float = 1e-6) -> None:
    """flash-attention's rule for low precision: the kernel's error against a float64 reference
    is at most twice plain PyTorch's error in the same dtype (plus a small absolute floor).

    Triton's CPU interpreter (3.9) converts float32 to bfloat16 by truncation, where GPUs round to
    nearest even, so an interpreted bf16 output may be off by up to one more ulp per rounding (the
    head rounds twice: product, then + bias); on CPU tensors the bound allows 2 ulps more.
    """
    err = (out.double() - ref64.double()).abs().max().item()
    torch_err = (ref_lowp.double() - ref64.double()).abs().max().item()
    slack = atol
    if interpreted(out) and out.dtype == torch.bfloat16:
        top = ref64.abs().max().item()
        slack += 2 * (2.0 ** (math.floor(math.log2(top)) - 7) if top > 0 else 0.0)
    assert err <= 2 * torch_err + slack, (
        f"{what}: kernel error {err:.3g} > 2 x torch's {torch_err:.3g} + {slack:.3g}"
    )


def gumbel_noise(B: int, K: int, device="cpu") -> torch.Tensor:
    return -torch.log(-torch.log(torch.rand(B, K, device=device).clamp_min(1e-10)))
