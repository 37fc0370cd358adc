"""Input checks shared by the public ops: each message says what is wrong and what to do."""

from __future__ import annotations

import torch
from torch import Tensor

FLOAT_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


def check_2d(name: str, x: Tensor, shape_hint: str) -> None:
    if x.dim() != 2:
        raise ValueError(f"{name} must be 2-D {shape_hint}, got shape {tuple(x.shape)}")
    if x.shape[1] == 0:
        raise ValueError(f"{name} has K = 0 candidates {tuple(x.shape)}; a pool needs K >= 1")


def check_float(name: str, x: Tensor) -> None:
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be a floating tensor (float32/float64/bfloat16), got {x.dtype}")


def check_same_shape(name: str, x: Tensor, ref_name: str, ref: Tensor) -> None:
    if x.shape != ref.shape:
        raise ValueError(
            f"{name} has shape {tuple(x.shape)} but {ref_name} has {tuple(ref.shape)}; they must match"
        )


def check_same_device(*named: tuple[str, Tensor]) -> None:
    devices = {t.device for _, t in named}
    if len(devices) > 1:
        listing = ", ".join(f"{n} on {t.device}" for n, t in named)
        raise ValueError(f"inputs must be on one device, got {listing}; move them with .to(device)")


def check_finite(name: str, x: Tensor) -> None:
    if torch.isnan(x).any():
        raise ValueError(f"{name} contains NaN; check the model's outputs or the inputs upstream")


def check_mode(mode: str, modes: tuple[str, ...]) -> None:
    if mode not in modes:
        raise ValueError(f"unknown reward mode {mode!r}; expected one of {', '.join(modes)}")
