"""Shared helpers for the op tests: pool sizes and per-dtype tolerances."""

from __future__ import annotations

import torch

# Pool sizes the issue asks for: K = 1 and 2 (degenerate), odd sizes, the paper's 30, and 100.
KS = (1, 2, 5, 30, 31, 100)
# (atol, rtol) of a kernel against the float64 reference, per input dtype.
TOL = {torch.float64: (1e-10, 1e-9), torch.float32: (2e-5, 1e-5)}


def assert_close_to_fp64(got: torch.Tensor, want64: torch.Tensor, low_prec: torch.Tensor | None = None):
    """Compare with the float64 reference; for half precision use the flash-attention rule:
    the kernel's error may be at most twice plain PyTorch's error in the same dtype."""
    if got.dtype in TOL:
        atol, rtol = TOL[got.dtype]
        torch.testing.assert_close(got, want64.to(got.dtype), atol=atol, rtol=rtol)
        return
    assert low_prec is not None, "half-precision comparisons need the reference in that dtype"
    err = (got.double() - want64).abs().max().item()
    err_torch = (low_prec.double() - want64).abs().max().item()
    assert err <= 2 * err_torch + 1e-3, f"error {err} vs plain torch {err_torch}"
