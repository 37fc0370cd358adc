"""GPU: every provider of every op side by side, on the same inputs, in one run.

    pytest benchmarks/test_gpu_kernels.py -s        (skips without a GPU)
    FLEXREC_GPU_BENCH=goals pytest ...               (goal points only, no torch.compile provider)

Providers: ``eager`` (the pure-torch reference), ``compiled`` (torch.compile of the reference),
``triton`` (flexrec.kernels), ``cuda`` (torch.ops.flexrec_C, when built with FLEXREC_CUDA=1).
Each row reports the median time (CUDA events, after warm-up), the achieved bandwidth (bytes the
op must move at least / time) or FLOP rate, and the peak memory the call allocated. Rows go to
benchmarks/out/gpu_kernels.json, and the issue's goals are reported as ratios from the same run.
Nothing here fails on speed. Sizes come from benchmarks/sizes.py; the goal points are the issue's.
"""

from __future__ import annotations

import json
import os
from typing import Callable, Optional

import pytest
import torch
from sizes import GPU_DECODE_SIZES, GPU_SIZES, size_id

import flexrec.ops  # noqa: F401  (loads flexrec._C)
from flexrec.ops import extension as _ext
from flexrec.ops import reference as R

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "out", "gpu_kernels.json")
ROWS: list[dict] = []
GOALS: list[dict] = []
DEV = "cuda"
HEAD_DTYPE = torch.bfloat16  # LLM heads run in bf16
# The goal points (issue 3): measured in the same run as the providers they compare.
GOAL_SWAP = {"B": 8192, "K": 30}
GOAL_DECODE = {"B": 256, "K": 30, "H": 2048, "V": 151936}
GOAL_PERM = {"B": 4096, "K": 30}
# FLEXREC_GPU_BENCH=goals (benchmarks/gpu_session.sh): only the goal points and one SmolLM2-sized
# head, and no torch.compile provider (its compiles alone would take minutes), so the run fits
# the session's time budget. Default "all": every size of benchmarks/sizes.py.
GOALS_ONLY = os.environ.get("FLEXREC_GPU_BENCH", "all") == "goals"
LIST_SIZES = [GOAL_SWAP, GOAL_PERM] if GOALS_ONLY else (
    GPU_SIZES + [s for s in (GOAL_SWAP, GOAL_PERM) if s not in GPU_SIZES])
HEAD_SIZES = [{"B": 1024, "K": 30, "H": 576, "V": 49152}, GOAL_DECODE] if GOALS_ONLY else (
    GPU_DECODE_SIZES + [s for s in (GOAL_DECODE,) if s not in GPU_DECODE_SIZES])


def cuda_time(fn: Callable, warmup: int = 3, reps: int = 20) -> float:
    """Median seconds of ``fn()`` over ``reps`` runs, timed with CUDA events on the current stream."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return sorted(times)[len(times) // 2]


def peak_mb(fn: Callable) -> float:
    """Memory the call allocates at its peak, beyond what was allocated before it (MiB)."""
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


COMPILED: dict[Callable, Callable] = {}


def providers(op: str, ref: Callable, args: tuple) -> dict[str, Callable]:
    """Every provider of ``op`` as a zero-argument callable on the same ``args``."""
    out = {"eager": lambda: ref(*args)}
    if not GOALS_ONLY:
        compiled = COMPILED.setdefault(ref, torch.compile(ref))  # one per op: recompiles go dynamic
        out["compiled"] = lambda: compiled(*args)
    if triton_available():
        import importlib

        mod = importlib.import_module(f"flexrec.kernels.{op.replace('_backward', '')}")
        fn = getattr(mod, op)
        out["triton"] = lambda: fn(*args)
    if _ext.has_cuda_kernels():
        c_fn = getattr(torch.ops.flexrec_C, op)
        out["cuda"] = lambda: c_fn(*args)
    return out


def measure(op: str, calls: dict[str, Callable], sizes: dict, bytes_moved: float = 0.0,
            flops: float = 0.0) -> dict[str, float]:
    """Time every provider, add one row each; returns provider -> seconds."""
    times = {}
    for provider, fn in calls.items():
        try:
            t = cuda_time(fn)
            mem = peak_mb(fn)
        except Exception as exc:  # an OOM or a missing kernel is a row, not a failed benchmark
            ROWS.append({"op": op, "provider": provider, **sizes, "error": f"{type(exc).__name__}: {exc}"[:200]})
            torch.cuda.empty_cache()
            continue
        times[provider] = t
        row = {"op": op, "provider": provider, **sizes, "median_ms": t * 1e3, "peak_mb": mem}
        if bytes_moved:
            row["GB_per_s"] = bytes_moved / t / 1e9
        if flops:
            row["TFLOP_per_s"] = flops / t / 1e12
        ROWS.append(row)
    eager = times.get("eager")
    for row in ROWS:
        if row["op"] == op and all(row.get(k) == v for k, v in sizes.items()) and "median_ms" in row:
            row["speedup_vs_eager"] = eager * 1e3 / row["median_ms"] if eager else None
    torch.cuda.empty_cache()
    return times


def goal(name: str, ratio: Optional[float], target: str, ok: Optional[bool]) -> None:
    GOALS.append({"goal": name, "ratio": ratio, "target": target, "met": ok})


@pytest.fixture(scope="module", autouse=True)
def _write_rows():
    yield
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    info = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
            "build": _ext.build_info()}
    with open(OUT, "w") as f:
        json.dump({"info": info, "rows": ROWS, "goals": GOALS}, f, indent=1)
    print(f"\n== {info['device']}, torch {info['torch']}; rows in {OUT}")
    for r in ROWS:
        sizes = " ".join(f"{k}={r[k]}" for k in ("B", "K", "H", "V") if k in r)
        if "error" in r:
            print(f"{r['op']:<30} {r['provider']:<9} {sizes:<32} {r['error']}")
            continue
        rate = f"{r['GB_per_s']:8.1f} GB/s" if "GB_per_s" in r else (
            f"{r['TFLOP_per_s']:8.2f} TF/s" if "TFLOP_per_s" in r else "")
        speed = r.get("speedup_vs_eager")
        print(f"{r['op']:<30} {r['provider']:<9} {sizes:<32} {r['median_ms']:9.4f} ms {rate:>14} "
              f"{r['peak_mb']:9.1f} MiB" + (f"  x{speed:.1f} vs eager" if speed else ""))
    for g in GOALS:
        ratio = "n/a" if g["ratio"] is None else f"{g['ratio']:.2f}"
        print(f"GOAL {g['goal']:<62} {ratio:>8} (target {g['target']}) {'MET' if g['met'] else 'NOT MET'}")


def list_inputs(B: int, K: int) -> dict:
    gen = torch.Generator(device=DEV).manual_seed(0)
    used = torch.rand(B, K, device=DEV, generator=gen) < 0.5
    used[:, 0] = False
    return {
        "gains": torch.randint(0, 4, (B, K), device=DEV, generator=gen).float(),
        "gain_var": torch.rand(B, K, device=DEV, generator=gen),
        "logits": torch.randn(B, K, device=DEV, generator=gen),
        "used": used,
        "gumbel": -torch.log(-torch.log(torch.rand(B, K, device=DEV, generator=gen).clamp(1e-9, 1 - 1e-9))),
        "step_logits": torch.randn(B, K, K, device=DEV, generator=gen),
        "perm": torch.argsort(torch.rand(B, K, device=DEV, generator=gen), -1),
        "grad_bk": torch.randn(B, K, device=DEV, generator=gen),
    }


@pytest.mark.parametrize("size", LIST_SIZES, ids=size_id)
def test_ranked_list_ops(size):
    B, K = size["B"], size["K"]
    x = list_inputs(B, K)
    f4 = 4
    times = measure("swap_reward", providers("swap_reward", R.swap_reward, (x["gains"], 0, "causal")),
                    size, bytes_moved=2 * B * K * f4)
    if size == GOAL_SWAP:
        out = torch.empty_like(x["gains"])
        copy = cuda_time(lambda: out.copy_(x["gains"]))  # the same bytes: read B*K, write B*K
        ROWS.append({"op": "device_copy", "provider": "torch", **size, "median_ms": copy * 1e3,
                     "GB_per_s": 2 * B * K * f4 / copy / 1e9, "peak_mb": 0.0})
        for p in ("cuda", "triton"):
            if p in times:
                r = times["eager"] / times[p]
                goal(f"swap_reward B=8192 K=30 {p}: eager / {p}", r, ">= 20", r >= 20)
                r = times[p] / copy
                goal(f"swap_reward B=8192 K=30 {p}: {p} / device copy", r, "<= 3", r <= 3)
    measure("swap_reward_var",
            providers("swap_reward_var", R.swap_reward_var, (x["gains"], x["gain_var"], 0, "causal")),
            size, bytes_moved=3 * B * K * f4)
    measure("pool_sample",
            providers("pool_sample", R.pool_sample, (x["logits"], x["used"], x["gumbel"], 1.0)),
            size, bytes_moved=B * K * (4 + 1 + 4 + 1) + B * 12)
    fwd = providers("permutation_logprob", R.permutation_logprob, (x["step_logits"], x["perm"], 1.0))
    measure("permutation_logprob", fwd, size, bytes_moved=B * K * K * f4 + 3 * B * K * 8)
    bwd = providers("permutation_logprob_backward", R.permutation_logprob_backward,
                    (x["grad_bk"], x["grad_bk"], x["step_logits"], x["perm"], 1.0))
    measure("permutation_logprob_backward", bwd, size, bytes_moved=2 * B * K * K * f4 + 3 * B * K * 8)
    # Forward + backward as training runs it: eager = the reference plus autograd through it.
    logits = x["step_logits"].clone().requires_grad_(True)

    def eager_fwd_bwd():
        lp, ent = R.permutation_logprob(logits, x["perm"], 1.0)
        torch.autograd.grad((lp * x["grad_bk"]).sum() + (ent * x["grad_bk"]).sum(), logits)

    both = {"eager": eager_fwd_bwd}
    for p in ("triton", "cuda"):
        if p in fwd:
            both[p] = (lambda f, b: lambda: (f(), b()))(fwd[p], bwd[p])
    t = measure("permutation_logprob_fwd_bwd", both, size, bytes_moved=3 * B * K * K * f4)
    if size == GOAL_PERM:
        for p in ("cuda", "triton"):
            if p in t:
                r = t["eager"] / t[p]
                goal(f"permutation_logprob fwd+bwd B=4096 K=30 {p}: eager / {p}", r, ">= 3", r >= 3)


def head_inputs(B: int, K: int, H: int, V: int) -> dict:
    gen = torch.Generator(device=DEV).manual_seed(0)
    used = torch.rand(B, K, device=DEV, generator=gen) < 0.5
    used[:, 0] = False
    ids = torch.argsort(torch.rand(B, V, device=DEV, generator=gen), -1)[:, :K].contiguous()
    return {
        "hidden": torch.randn(B, H, device=DEV, generator=gen).to(HEAD_DTYPE),
        "weight": (torch.randn(V, H, device=DEV, generator=gen) * H**-0.5).to(HEAD_DTYPE),
        "cand_ids": ids,
        "used": used,
        "gumbel": -torch.log(-torch.log(torch.rand(B, K, device=DEV, generator=gen).clamp(1e-9, 1 - 1e-9))),
        "grad": torch.randn(B, K, device=DEV, generator=gen).to(HEAD_DTYPE),
    }


def eager_full_vocab(hidden, weight, cand_ids, used, temperature=1.0):
    """What a user would write without flexrec: the full-vocabulary head, then restrict, mask,
    log-softmax and torch.multinomial. Builds the (B, V) logits."""
    full = hidden @ weight.T  # (B, V)
    logits = full.gather(1, cand_ids).float() / temperature
    logits = logits.masked_fill(used, float("-inf"))
    logp = torch.log_softmax(logits, -1)
    index = torch.multinomial(logp.exp(), 1).squeeze(1)
    used_out = used.clone().scatter_(1, index[:, None], True)
    return index, logp.gather(1, index[:, None]).squeeze(1), used_out


@pytest.mark.parametrize("size", HEAD_SIZES, ids=size_id)
def test_head_ops(size):
    B, K, H, V = size["B"], size["K"], size["H"], size["V"]
    x = head_inputs(B, K, H, V)
    elt = x["hidden"].element_size()
    gather_bytes = B * K * H * elt + B * H * elt
    calls = providers("decode_step", R.decode_step,
                      (x["hidden"], x["weight"], x["cand_ids"], x["used"], x["gumbel"], 1.0, None))
    calls["eager_full_vocab"] = lambda: eager_full_vocab(x["hidden"], x["weight"], x["cand_ids"], x["used"])
    t = measure("decode_step", calls, size, bytes_moved=gather_bytes, flops=2 * B * K * H)
    if size == GOAL_DECODE:
        for p in ("cuda", "triton"):
            if p in t and "eager_full_vocab" in t:
                r = t["eager_full_vocab"] / t[p]
                goal(f"decode_step B=256 H=2048 V=151936 {p}: full-vocab eager / {p}", r, ">= 5", r >= 5)
        return
    measure("candidate_logits",
            providers("candidate_logits", R.candidate_logits, (x["hidden"], x["weight"], x["cand_ids"], None)),
            size, bytes_moved=gather_bytes, flops=2 * B * K * H)
    measure("candidate_logits_backward",
            providers("candidate_logits_backward", R.candidate_logits_backward,
                      (x["grad"], x["hidden"], x["weight"], x["cand_ids"], False)),
            size, bytes_moved=2 * gather_bytes + V * H * elt, flops=4 * B * K * H)
