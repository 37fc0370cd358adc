"""Input checks of the public ops: each message says what is wrong and what to do.

The ops call them on every call unless given ``check=False``. Checks marked "value check" read the
tensors' values, which on a GPU is a host sync; a hot loop makes them once, before the loop (for
decoding: ``check_decode_inputs``), and then calls the op with ``check=False``.
"""

from __future__ import annotations

import torch
from torch import Tensor

FLOAT_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
GAINS_ARE = "gains are graded labels (or 2^label - 1); check the labels or the critic's outputs upstream"
VARIANCES_ARE = "variances of the gains (0 for an observed label); check the critic's outputs upstream"


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


def check_mode(mode: str, modes: tuple[str, ...]) -> None:
    if mode not in modes:
        raise ValueError(f"unknown reward mode {mode!r}; expected one of {', '.join(modes)}")


def check_int64(name: str, x: Tensor) -> None:
    if x.dtype != torch.int64:
        raise TypeError(f"{name} must be int64 (torch.long), got {x.dtype}; convert with {name}.long()")


def check_bool(name: str, x: Tensor) -> None:
    if x.dtype != torch.bool:
        raise TypeError(
            f"{name} must be a bool tensor, got {x.dtype}; build it with torch.zeros(B, K, dtype=torch.bool)"
        )


def check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}; use 1.0 for plain sampling")


def is_fake(x: Tensor) -> bool:
    # Value checks need real data: skip them while torch.compile traces and on meta/fake tensors
    # (the compiled kernels check the same invariants again).
    return (
        torch.compiler.is_compiling()
        or x.device.type == "meta"
        or isinstance(x, torch._subclasses.FakeTensor)
    )


def check_permutation(name: str, perm: Tensor) -> None:
    """Each row of perm (B, K) must list 0..K-1 exactly once (one sort, one compare)."""
    if is_fake(perm) or perm.numel() == 0:
        return
    K = perm.shape[-1]
    expected = torch.arange(K, device=perm.device)
    ok = (torch.sort(perm, dim=-1).values == expected).all(dim=-1)
    if not bool(ok.all()):
        row = int((~ok).nonzero()[0, 0])
        raise ValueError(
            f"{name} row {row} is not a permutation of 0..{K - 1} (an index out of range or "
            f"repeated): {perm[row].tolist()[:12]}{' ...' if K > 12 else ''}; each row must list "
            "every candidate exactly once"
        )


def check_ids(name: str, ids: Tensor, V: int) -> None:
    """ids (N, K) in [0, V) and distinct within each row."""
    if is_fake(ids) or ids.numel() == 0:
        return
    lo, hi = int(ids.min()), int(ids.max())
    if lo < 0 or hi >= V:
        raise ValueError(
            f"{name} must lie in [0, V = {V}), got values in [{lo}, {hi}]; check the slot-token ids"
        )
    s = torch.sort(ids, dim=-1).values
    dup = (s[:, 1:] == s[:, :-1]).any(dim=-1)
    if bool(dup.any()):
        row = int(dup.nonzero()[0, 0])
        raise ValueError(
            f"{name} row {row} names a candidate twice; each row must list K distinct token ids"
        )


def check_no_nan(name: str, x: Tensor) -> None:
    """Value check: no NaN in x."""
    if not is_fake(x) and bool(torch.isnan(x).any()):
        raise ValueError(f"{name} contains NaN; check the model's outputs or the inputs upstream")


def _first(name: str, x: Tensor, bad: Tensor) -> str:
    """'name[i, j] = value' of the first True entry of ``bad``."""
    at = tuple(int(i) for i in bad.nonzero()[0])
    return f"{name}[{', '.join(map(str, at))}] is {x[at].item()}"


def check_finite(name: str, x: Tensor, what: str) -> None:
    """Value check: no NaN or infinity in x. ``what`` says what x is and where a bad value comes
    from."""
    if is_fake(x) or x.numel() == 0:
        return
    bad = ~torch.isfinite(x)
    if bool(bad.any()):
        raise ValueError(f"{_first(name, x, bad)}; {name} must be finite: {what}")


def check_nonnegative(name: str, x: Tensor, what: str) -> None:
    """Value check: every entry >= 0."""
    if is_fake(x) or x.numel() == 0:
        return
    bad = x < 0
    if bool(bad.any()):
        raise ValueError(f"{name} has negative entries ({_first(name, x, bad)}); {name} must be >= 0 ({what})")


def check_pool_inputs(
    op: str, used: Tensor, gumbel: Tensor | None, temperature: float, like_name: str, like: Tensor,
    check_values: bool = True,
) -> list[tuple[str, Tensor]]:
    """Checks of one decoding step's pool state (pool_sample and decode_step): ``used`` and
    ``gumbel`` shaped like ``like`` (B, K), a positive temperature, and every row with at least
    one candidate left (a value check, skipped when ``check_values`` is False). Returns the
    (name, tensor) pairs for the device check."""
    check_bool("used", used)
    check_same_shape("used", used, like_name, like)
    named = [("used", used)]
    if gumbel is not None:
        check_float("gumbel", gumbel)
        check_same_shape("gumbel", gumbel, like_name, like)
        named.append(("gumbel", gumbel))
    check_temperature(temperature)
    if check_values and not is_fake(used) and bool(used.all(dim=-1).any()):
        row = int(used.all(dim=-1).nonzero()[0, 0])
        raise ValueError(
            f"{op}: row {row} has no allowed candidate (every entry of used is True); "
            "a permutation of K candidates takes exactly K steps"
        )
    return named


def check_head_inputs(
    hidden: Tensor, weight: Tensor, cand_ids: Tensor, bias: Tensor | None
) -> list[tuple[str, Tensor]]:
    """Shape and dtype checks of a candidate-restricted head's inputs (candidate_logits and
    decode_step). Returns the (name, tensor) pairs for the device check."""
    check_2d("hidden", hidden, "(N, H)")
    if weight.dim() != 2 or weight.shape[1] != hidden.shape[1]:
        raise ValueError(
            f"weight must be (V, H) with H = hidden.shape[1] = {hidden.shape[1]}, "
            f"got {tuple(weight.shape)}"
        )
    check_2d("cand_ids", cand_ids, "(N, K)")
    if cand_ids.shape[0] != hidden.shape[0]:
        raise ValueError(
            f"cand_ids has {cand_ids.shape[0]} rows but hidden has {hidden.shape[0]}; one row of "
            "candidate ids per hidden state"
        )
    check_float("hidden", hidden)
    check_float("weight", weight)
    if weight.dtype != hidden.dtype:
        raise TypeError(f"hidden is {hidden.dtype} but weight is {weight.dtype}; cast one of them")
    check_int64("cand_ids", cand_ids)
    named = [("hidden", hidden), ("weight", weight), ("cand_ids", cand_ids)]
    if bias is not None:
        if bias.shape != (weight.shape[0],):
            raise ValueError(f"bias must be (V,) = ({weight.shape[0]},), got {tuple(bias.shape)}")
        if bias.dtype != weight.dtype:
            raise TypeError(f"bias is {bias.dtype} but weight is {weight.dtype}; cast one of them")
        named.append(("bias", bias))
    return named


def check_decode_inputs(
    hidden: Tensor,
    weight: Tensor,
    cand_ids: Tensor,
    used: Tensor | None = None,
    gumbel: Tensor | None = None,
    temperature: float = 1.0,
    bias: Tensor | None = None,
) -> None:
    """Every check ``flexrec.ops.decode_step`` makes, once: a decoding loop calls this before its
    first step and then ``decode_step(..., check=False)`` each step, so that the K steps make no
    host sync. ``used=None`` stands for the first step's all-False pool.

    Shapes: as ``flexrec.ops.decode_step``.
    """
    if used is None:
        used = torch.zeros(cand_ids.shape, dtype=torch.bool, device=cand_ids.device)
    named = check_head_inputs(hidden, weight, cand_ids, bias)
    named += check_pool_inputs("decode_step", used, gumbel, temperature, "cand_ids", cand_ids)
    check_same_device(*named)
    check_ids("cand_ids", cand_ids, weight.shape[0])
