"""Ahead-of-time compilation of every flexrec Triton kernel for named NVIDIA targets, no GPU needed.

The interpreter (``TRITON_INTERPRET=1``, how the tests run the kernels on CPU) accepts code that
the compiler rejects (block shapes, dtypes, ``tl.dot`` sizes, masks). This module compiles each
kernel with ``triton.compile(ASTSource(...), target=GPUTarget("cuda", arch, 32))`` at the block
sizes and warps its launcher picks (each launcher's ``launch_config``, not a copy of it) for the
benchmark shapes, and reports what ptxas says of each: registers per thread, spill bytes, shared
memory, and the occupancy those allow on an sm_90 SM.

    python -m flexrec.kernels.aot [--targets 80,90] [--quick] [--report PATH]

exits 1 when a kernel does not compile, naming the kernel, the shape and the target.

Configurations that compile to the same specialisation (same constexprs, argument types,
divisibility hints and warps) are compiled once; the row lists every shape that launches it.
Compiling needs no device, but it cannot run in a process whose kernels were decorated under
``TRITON_INTERPRET=1``; ``compile_all`` then runs the compiler in a subprocess without it.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import io
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
import warnings

# The benchmark shapes (issue 20; K = 100 is also in benchmarks/sizes.py's GPU sizes): pool sizes K,
# hidden sizes H (the tiny model, SmolLM2-135M, Qwen2.5-3B) and the dtypes the ops run in.
SWEEP_K = (10, 20, 30, 100)
SWEEP_H = (64, 576, 2048)
SWEEP_DTYPES = ("fp32", "bf16")
# The fast test tier (representative_specs): the paper's K, SmolLM2's H, the LLM heads' dtype.
QUICK_K, QUICK_H, QUICK_DTYPES = (30,), (576,), ("bf16",)
DEFAULT_TARGETS = (80, 90)
N_MODES = 5  # swap_reward / swap_reward_var reward modes (kernels/_util.py MODE_IDS)

# sm_90 (H100 / H200) per-SM limits used for occupancy (CUDA C Programming Guide, compute
# capability 9.0): 65536 registers, 228 KB shared memory (1 KB of it reserved per block), 2048
# threads = 64 warps, 32 blocks; registers are allocated per warp in units of 256.
SM90 = {"regs": 65536, "smem": 228 * 1024, "smem_reserved": 1024, "warps": 64, "blocks": 32,
        "reg_unit": 256}


@dataclasses.dataclass
class Spec:
    """One specialisation of one kernel: everything ``triton.compile`` needs, and the shapes
    (``"K=30 H=576 bf16 bias"``) whose launches use it."""

    module: str  # "flexrec.kernels.swap_reward"
    kernel: str  # "swap_reward_kernel"
    signature: dict  # argument name -> Triton type ("*bf16", "i32", "fp32", "constexpr")
    constexprs: dict  # constexpr name -> int / bool / dtype name ("fp32")
    divisible: list  # integer or pointer arguments Triton's launcher would mark as multiples of 16
    num_warps: int
    shapes: list = dataclasses.field(default_factory=list)

    def key(self):
        return (self.module, self.kernel, tuple(sorted(self.signature.items())),
                tuple(sorted((k, str(v)) for k, v in self.constexprs.items())),
                tuple(sorted(self.divisible)), self.num_warps)

    def config(self) -> str:
        """The compile-time choices, e.g. ``BLOCK_K=32 BLOCK_J=32 MODE=0 w1``."""
        items = [f"{k}={v}" for k, v in self.constexprs.items() if k != "C"]
        return " ".join(items + [f"w{self.num_warps}"])


def _signature(arg_types: dict, constexprs: dict) -> dict:
    sig = dict(arg_types)
    sig.update({name: "constexpr" for name in constexprs})
    return sig


def _specs_for_shape(K: int, H: int, dt: str) -> list[tuple[str, str, dict, dict, list, int]]:
    """(module, kernel, arg types, constexprs, divisible args, num_warps) of every kernel launch
    at one shape, with each launcher's own ``launch_config``."""
    from .candidate_logits import launch_config as head_config
    from .permutation_logprob import launch_config as perm_config
    from .pool_sample import launch_config as pool_config
    from .swap_reward import launch_config as swap_config

    c = "fp32"  # compute dtype of fp32 and bf16 inputs (kernels/_util.py compute_dtype)
    ptrs = lambda names, t: {n: f"*{t}" for n in names.split()}
    out = []
    # Pointers from torch's allocator are 16-byte aligned; H of every benchmark shape is a
    # multiple of 16 (K of none), so the launcher marks H divisible, as Triton does at run time.
    h_div = ["H"] if H % 16 == 0 else []

    head = head_config(K, H)
    hw = head.pop("num_warps")
    for bias in (False, True):
        cx = {"HAS_BIAS": bias, **head, "C": c}
        args = {**ptrs("hidden_ptr weight_ptr", dt), "ids_ptr": "*i64", "bias_ptr": f"*{dt}",
                "out_ptr": f"*{dt}", "K": "i32", "H": "i32"}
        out.append(("candidate_logits", "candidate_logits_kernel", args, cx, h_div, hw))
        args = {**ptrs("grad_ptr hidden_ptr weight_ptr", dt), "ids_ptr": "*i64",
                **ptrs("grad_hidden_ptr grad_weight_ptr grad_bias_ptr", c), "K": "i32", "H": "i32"}
        out.append(("candidate_logits", "candidate_logits_backward_kernel", args, cx, h_div, hw))
        for gumbel in (False, True):
            cx = {"HAS_BIAS": bias, "HAS_GUMBEL": gumbel, "TEMP_FROM_PTR": False, **head, "C": c}
            args = {**ptrs("hidden_ptr weight_ptr", dt), "ids_ptr": "*i64", "bias_ptr": f"*{dt}",
                    "used_ptr": "*i8", "gumbel_ptr": f"*{c}", "index_ptr": "*i64",
                    "logprob_ptr": f"*{c}", "used_out_ptr": "*i8", "temperature": "fp32",
                    "temp_ptr": f"*{dt}", "K": "i32", "H": "i32"}
            out.append(("decode_step", "decode_step_kernel", args, cx, h_div, hw))

    pool = pool_config(K)
    pw = pool.pop("num_warps")
    for gumbel in (False, True):
        cx = {"HAS_GUMBEL": gumbel, "TEMP_FROM_PTR": False, **pool, "C": c}
        args = {"logits_ptr": f"*{dt}", "used_ptr": "*i8", "gumbel_ptr": f"*{c}",
                "index_ptr": "*i64", "logprob_ptr": f"*{c}", "used_out_ptr": "*i8",
                "temperature": "fp32", "temp_ptr": f"*{dt}", "K": "i32"}
        out.append(("pool_sample", "pool_sample_kernel", args, cx, [], pw))

    perm = perm_config(K)
    pmw = perm.pop("num_warps")
    cx = {"TEMP_FROM_PTR": False, **perm, "C": c}
    args = {"logits_ptr": f"*{dt}", "perm_ptr": "*i64", **ptrs("logprob_ptr entropy_ptr", c),
            "temperature": "fp32", "temp_ptr": f"*{dt}", "K": "i32"}
    out.append(("permutation_logprob", "permutation_logprob_kernel", args, cx, [], pmw))
    args = {**ptrs("grad_logprob_ptr grad_entropy_ptr", c), "logits_ptr": f"*{dt}",
            "perm_ptr": "*i64", "grad_logits_ptr": f"*{dt}", "temperature": "fp32",
            "temp_ptr": f"*{dt}", "K": "i32"}
    out.append(("permutation_logprob", "permutation_logprob_backward_kernel", args, cx, [], pmw))

    swap = swap_config(K)
    sw = swap.pop("num_warps")
    for mode in range(N_MODES):
        cx = {"MODE": mode, **swap, "C": c}
        args = {"gains_ptr": f"*{dt}", "d_ptr": f"*{c}", "out_ptr": f"*{dt}", "K": "i32"}
        out.append(("swap_reward", "swap_reward_kernel", args, cx, [], sw))
        args = {"gains_ptr": f"*{dt}", "var_ptr": f"*{dt}", "d_ptr": f"*{c}", "out_ptr": f"*{dt}",
                "K": "i32"}
        out.append(("swap_reward_var", "swap_reward_var_kernel", args, cx, [], sw))
    return out


def kernel_specs(ks=SWEEP_K, hs=SWEEP_H, dtypes=SWEEP_DTYPES) -> list[Spec]:
    """Every distinct specialisation the launchers compile at these shapes, deduplicated."""
    specs: dict = {}
    for dt in dtypes:
        for K in ks:
            for H in hs:
                for module, kernel, args, cx, div, warps in _specs_for_shape(K, H, dt):
                    uses_h = "H" in args
                    flags = [k.lower().replace("has_", "") for k, v in cx.items() if v is True]
                    flags += [f"mode={cx['MODE']}"] if "MODE" in cx else []
                    shape = " ".join([f"K={K}"] + ([f"H={H}"] if uses_h else []) + [dt] + flags)
                    spec = Spec(f"flexrec.kernels.{module}", kernel, _signature(args, cx), cx,
                                list(div), warps)
                    spec = specs.setdefault(spec.key(), spec)
                    if shape not in spec.shapes:
                        spec.shapes.append(shape)
    return list(specs.values())


def representative_specs() -> list[Spec]:
    """One specialisation per kernel, the fast test tier: K = 30, H = 576, bf16, no bias, no
    Gumbel noise, the causal reward mode."""
    first: dict = {}
    for spec in kernel_specs(QUICK_K, QUICK_H, QUICK_DTYPES):
        first.setdefault(spec.kernel, spec)
    return list(first.values())


def occupancy_sm90(regs: int, shared: int, num_warps: int) -> tuple[int, float]:
    """(resident blocks per SM, fraction of the SM's 64 warps) on sm_90.

    blocks = min(32, floor(64 / W), floor(floor(65536 / (ceil(32 R / 256) * 256)) / W),
                 floor(228 KB / (S + 1 KB))),  occupancy = blocks * W / 64,
    for R registers per thread, W warps per block and S bytes of shared memory per block.
    """
    per_warp = math.ceil(regs * 32 / SM90["reg_unit"]) * SM90["reg_unit"]
    by_regs = (SM90["regs"] // per_warp) // num_warps if per_warp else SM90["blocks"]
    by_smem = SM90["smem"] // (shared + SM90["smem_reserved"])
    blocks = min(SM90["blocks"], SM90["warps"] // num_warps, by_regs, by_smem)
    return blocks, blocks * num_warps / SM90["warps"]


_PTXAS_REGS = re.compile(r"Used (\d+) registers")
_PTXAS_SPILL = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")
_PTXAS_STACK = re.compile(r"(\d+) bytes stack frame")


def _decode_constexprs(cx: dict) -> dict:
    import triton.language as tl

    return {k: getattr(tl, {"fp32": "float32", "fp64": "float64"}[v]) if k == "C" else v
            for k, v in cx.items()}


def _compile_here(spec: dict, target: int) -> dict:
    """Compile one spec (a Spec as a dict) for sm_<target> in this process; the result row."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    row = {"kernel": spec["kernel"], "target": f"sm_{target}", "config": spec["config"],
           "shapes": spec["shapes"], "num_warps": spec["num_warps"]}
    start = time.perf_counter()
    try:
        fn = getattr(importlib.import_module(spec["module"]), spec["kernel"])
        if not hasattr(fn, "cache_key"):
            raise RuntimeError("the kernel was decorated under TRITON_INTERPRET=1; compile in a "
                               "process without it (compile_all does)")
        names = list(fn.arg_names)
        attrs = {(names.index(a),): [["tt.divisibility", 16]] for a in spec["divisible"]}
        attrs.update({(i,): [["tt.divisibility", 16]] for i, a in enumerate(names)
                      if spec["signature"][a].startswith("*")})
        src = ASTSource(fn, spec["signature"], _decode_constexprs(spec["constexprs"]), attrs)
        log = io.StringIO()
        with contextlib.redirect_stdout(log), warnings.catch_warnings():
            # ptxas -v goes to stdout (dump_ptxas_log). Compiled with Triton's default FP fusion,
            # as the launchers are; its notice that the default will change is not ours to act on.
            warnings.filterwarnings("ignore", message="TRITON_DEFAULT_FP_FUSION")
            compiled = triton.compile(src, target=GPUTarget("cuda", target, 32),
                                      options={"num_warps": spec["num_warps"]})
        text = log.getvalue()
        regs = int(_PTXAS_REGS.search(text).group(1))
        spill = _PTXAS_SPILL.search(text)
        stack = _PTXAS_STACK.search(text)
        shared = int(compiled.metadata.shared)
        blocks, occ = occupancy_sm90(regs, shared, spec["num_warps"])
        row.update(ok=True, regs=regs, spill_stores=int(spill.group(1)) if spill else 0,
                   spill_loads=int(spill.group(2)) if spill else 0,
                   stack=int(stack.group(1)) if stack else 0, shared=shared,
                   blocks_per_sm90=blocks, occupancy_sm90=occ)
    except Exception as exc:  # noqa: BLE001 (any compiler error is this spec's failure)
        msg = f"{type(exc).__name__}: {exc}".strip()
        row.update(ok=False, error=msg[-2000:])
    row["seconds"] = time.perf_counter() - start
    return row


def _as_dict(spec: Spec) -> dict:
    d = dataclasses.asdict(spec)
    d["constexprs"] = {k: (v if k != "C" else str(v)) for k, v in spec.constexprs.items()}
    d["config"] = spec.config()
    return d


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def compile_all(specs: list[Spec], targets=DEFAULT_TARGETS, progress=None) -> list[dict]:
    """Compile every spec for every target (sm_<target>); one result row each.

    A row has kernel, target, config, shapes, ok, and either regs, spill_stores, spill_loads,
    stack, shared (bytes), blocks_per_sm90, occupancy_sm90, or error. Runs in a subprocess
    without TRITON_INTERPRET when this process has it set.
    """
    jobs = [{**_as_dict(s), "target": t} for t in targets for s in specs]
    if _interpreting():
        env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        proc = subprocess.run([sys.executable, "-m", "flexrec.kernels.aot", "--worker"],
                              input=json.dumps(jobs), capture_output=True, text=True, env=env,
                              check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"AOT compile worker failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
        return json.loads(proc.stdout.strip().splitlines()[-1])
    return _compile_jobs(jobs, progress)


def _compile_jobs(jobs: list[dict], progress=None) -> list[dict]:
    import triton

    rows = []
    # A fresh cache, so that ptxas runs (and reports) for every spec.
    with (tempfile.TemporaryDirectory(prefix="flexrec-aot-") as cache, triton.knobs.cache.scope(),
          triton.knobs.nvidia.scope()):
        triton.knobs.cache.dir = cache
        triton.knobs.nvidia.dump_ptxas_log = True
        for job in jobs:
            rows.append(_compile_here(job, job["target"]))
            if progress:
                progress(rows[-1])
    return rows


def failures(rows: list[dict]) -> list[str]:
    """One line per failed compile: kernel, shapes, target and the compiler's last lines."""
    out = []
    for r in rows:
        if not r["ok"]:
            tail = " | ".join(line for line in r["error"].splitlines()[-6:] if line.strip())
            out.append(f"FAILED {r['kernel']} [{r['config']}] for {r['target']} "
                       f"(shapes: {', '.join(r['shapes'])}): {tail}")
    return out


def table(rows: list[dict]) -> str:
    """A markdown table of the compiled rows."""
    lines = ["| kernel | target | config | shapes | regs/thread | spill st/ld (B) | shared (B) "
             "| blocks/SM, occupancy (sm_90) |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        shapes = shape_summary(r["shapes"])
        if not r["ok"]:
            lines.append(f"| {r['kernel']} | {r['target']} | {r['config']} | {shapes} | "
                         "FAILED | | | |")
            continue
        lines.append(f"| {r['kernel']} | {r['target']} | {r['config']} | {shapes} | {r['regs']} | "
                     f"{r['spill_stores']}/{r['spill_loads']} | {r['shared']} | "
                     + (f"{r['blocks_per_sm90']}, {r['occupancy_sm90']:.0%} |" if r["target"] == "sm_90"
                        else "- |"))
    return "\n".join(lines)


def shape_summary(shapes: list[str]) -> str:
    """'K=30 H=576 bf16 bias', ... condensed: K, H and dtypes that share this specialisation."""
    ks, hs, dts = [], [], []
    for s in shapes:
        for tok in s.split():
            bucket = ks if tok.startswith("K=") else hs if tok.startswith("H=") else (
                dts if tok in ("fp32", "bf16", "fp64") else None)
            if bucket is not None and tok not in bucket:
                bucket.append(tok)
    parts = ["K " + ",".join(k[2:] for k in ks)]
    if hs:
        parts.append("H " + ",".join(h[2:] for h in hs))
    return "; ".join(parts + [",".join(dts)])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m flexrec.kernels.aot", description=__doc__.split("\n\n")[0])
    ap.add_argument("--targets", default=",".join(map(str, DEFAULT_TARGETS)),
                    help="compute capabilities to compile for, e.g. 80,90 (sm_80, sm_90)")
    ap.add_argument("--quick", action="store_true",
                    help=f"one specialisation per kernel, at K={QUICK_K[0]}, H={QUICK_H[0]}, "
                         f"{QUICK_DTYPES[0]} (the test tier)")
    ap.add_argument("--report", help="write the result rows as JSON to this path")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:  # compile_all's subprocess: jobs on stdin, rows as one JSON line on stdout
        jobs = json.loads(sys.stdin.read())
        rows = _compile_jobs(jobs)
        sys.stdout.write("\n" + json.dumps(rows) + "\n")
        return 0
    targets = [int(t) for t in args.targets.split(",") if t.strip()]
    specs = representative_specs() if args.quick else kernel_specs()
    n_shapes = sum(len(s.shapes) for s in specs)
    print(f"flexrec AOT: {len(specs)} distinct kernel specialisations (from {n_shapes} launches) "
          f"x {len(targets)} targets ({', '.join(f'sm_{t}' for t in targets)})", flush=True)
    start = time.perf_counter()
    total = len(specs) * len(targets)

    def progress(row):
        done = progress.n = getattr(progress, "n", 0) + 1
        if not row["ok"]:
            print(f"  FAILED {row['kernel']} [{row['config']}] for {row['target']}", flush=True)
        if done % 50 == 0 or done == total:
            print(f"  {done}/{total} compiled, {time.perf_counter() - start:.0f} s", flush=True)

    rows = compile_all(specs, targets, progress)
    elapsed = time.perf_counter() - start
    print(table(rows))
    bad = failures(rows)
    print(f"flexrec AOT: compiled {sum(r['ok'] for r in rows)}/{len(rows)} in {elapsed:.1f} s")
    if args.report:
        os.makedirs(os.path.dirname(os.path.abspath(args.report)), exist_ok=True)
        with open(args.report, "w") as f:
            json.dump({"targets": targets, "seconds": elapsed, "rows": rows}, f, indent=1)
        print(f"flexrec AOT: rows written to {args.report}")
    for line in bad:
        print(line, file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
