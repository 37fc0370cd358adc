"""Resource table of every flexrec GPU kernel, without a GPU: registers per thread, spills, shared
memory per block and the occupancy they allow on an sm_90 SM (H100 / H200).

    python benchmarks/resources.py            # print the section
    python benchmarks/resources.py --write    # and replace it in benchmarks/RESULTS.md

- Triton: ``flexrec.kernels.aot`` compiles every kernel at the launchers' own block sizes for the
  benchmark shapes, for sm_80 and sm_90; ptxas reports registers and spills, Triton's metadata the
  shared memory.
- CUDA: ``.ci/check-cuda-build`` builds the extension for sm_80 and sm_90 and, with
  ``FLEXREC_CUDA_RESOURCES=PATH``, writes ``cuobjdump --dump-resource-usage`` of the .so, read
  here (``--cuda-dump PATH`` to reuse one; the default builds it, which takes minutes).
  Threads and dynamic shared memory per block are the launchers' (``CUDA_LAUNCH`` below).

Occupancy (``flexrec.kernels.aot.occupancy_sm90``), for R registers per thread, W warps and S bytes
of shared memory per block: blocks/SM = min(32, 64 / W, (65536 / (ceil(32 R / 256) * 256)) / W,
228 KB / (S + 1 KB)), every division rounded down; occupancy = blocks * W / 64 warps.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
from collections import defaultdict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "RESULTS.md")
BEGIN, END = "<!-- resources:begin -->", "<!-- resources:end -->"
COMMAND = "python benchmarks/resources.py --write"

# CUDA launches (csrc/cuda/*.cu; tests/kernels/test_resources.py checks these against the sources):
# threads per block, and dynamic shared memory per block for K candidates and an accumulator of
# `acc` bytes (4 for float/bf16, 8 for double).
def _row_threads(K: int) -> int:  # common.cuh row_threads
    return -(-min(K, 256) // 32) * 32


CUDA_LAUNCH = {
    "candidate_logits_kernel": (lambda K: 128, lambda K, acc: 0),
    "candidate_logits_backward_kernel": (lambda K: 256, lambda K, acc: K * (acc + 8)),
    "decode_step_kernel": (lambda K: 128, lambda K, acc: K * acc),
    "pool_sample_kernel": (lambda K: 128, lambda K, acc: 0),
    "permutation_logprob_kernel": (lambda K: 128, lambda K, acc: 4 * K),
    "permutation_logprob_backward_kernel": (lambda K: 128, lambda K, acc: 4 * K),
    "swap_reward_kernel": (_row_threads, lambda K, acc: 2 * K * acc),
    "swap_reward_var_kernel": (_row_threads, lambda K, acc: 3 * K * acc),
}
CUDA_K = (30, 100)  # the benchmark pool sizes (K only changes threads and shared memory)
CUDA_TYPES = {"float": ("fp32", 4), "c10::BFloat16": ("bf16", 4)}  # the dtypes the Triton sweep has

# Why a row below 50% occupancy (or with spills) is acceptable: kernel -> reason. Every such row
# must have one; the table prints it.
ACCEPTED = {
    "swap_reward_kernel": (
        "one program per row with its (BLOCK_K, BLOCK_J) pairwise tile in registers: the "
        "causal and noncausal modes need the most registers. The tile work is register-resident "
        "compares and FMAs rather than memory latency, and a batch of thousands of rows still fills "
        "every SM several times over; halving BLOCK_J would trade registers for twice the loop "
        "trips. To revisit with the first GPU timing (goal: within 3x of a device copy)."),
    "swap_reward_var_kernel": "as swap_reward_kernel (the same tile, one program per row).",
    "candidate_logits_backward_kernel": (
        "four warps per row with a (BLOCK_K, BLOCK_H) tile and atomic adds into grad_weight: the "
        "atomics bound it, not occupancy."),
    "permutation_logprob_backward_kernel": (
        "a (BLOCK_T, BLOCK_K) softmax tile and its gradient in registers, low only at the largest "
        "tile (the K = 30 rows are not). A smaller BLOCK_T would trade registers for more "
        "programs per row; not changed before a GPU timing can choose between them."),
    "permutation_logprob_kernel": "as permutation_logprob_backward_kernel (the same tile).",
    "candidate_logits_kernel": "each program gathers K weight rows of H elements: long coalesced "
                               "loads, so few resident programs saturate bandwidth.",
    "decode_step_kernel": "as candidate_logits_kernel (the same gather), plus a one-row sample.",
    "pool_sample_kernel": "one-warp programs: the 32-blocks/SM limit caps them at 50%; a row is "
                          "only K elements, so the launch is short whatever the occupancy.",
}
# Why a row with spills is acceptable: kernel -> reason (a kernel that spills without one fails
# the command).
SPILLS_ACCEPTED = {
    "candidate_logits_backward_kernel": (
        "ptxas's static count of a few bytes, at a register count far below the limit, in a "
        "variant with a bias (the LLM heads have none); to re-check with a profiler on the first "
        "GPU of that architecture."),
}
LOW_OCCUPANCY = 0.5


def triton_rows(targets=(80, 90), report: str | None = None) -> tuple[list[dict], float]:
    """Compile every Triton specialisation (or read a report of ``python -m flexrec.kernels.aot``)."""
    if report:
        with open(report) as f:
            data = json.load(f)
        return data["rows"], data["seconds"]
    import time

    from flexrec.kernels import aot

    start = time.perf_counter()
    rows = aot.compile_all(aot.kernel_specs(), targets)
    return rows, time.perf_counter() - start


def group_triton(rows: list[dict]) -> list[dict]:
    """One row per (kernel, block sizes, warps) over flags (bias, Gumbel, mode), dtypes and targets:
    register range per target, worst spills, largest shared memory, lowest sm_90 occupancy."""
    from flexrec.kernels.aot import shape_summary

    groups: dict = defaultdict(list)
    for r in rows:
        blocks = " ".join(t for t in r["config"].split() if t.startswith(("BLOCK_", "w")))
        groups[(r["kernel"], blocks)].append(r)
    out = []
    for (kernel, blocks), rs in groups.items():
        failed = [r for r in rs if not r["ok"]]
        ok = [r for r in rs if r["ok"]]
        regs = {t: sorted({r["regs"] for r in ok if r["target"] == t}) for t in ("sm_80", "sm_90")}
        spilled = [f"{r['target']} {shape_summary(r['shapes'])}"
                   + (" bias" if "HAS_BIAS=True" in r["config"] else "")
                   + f": {r['spill_stores']}/{r['spill_loads']} B stored/loaded, {r['regs']} registers"
                   for r in ok if r["spill_stores"] or r["spill_loads"]]
        sm90 = [r for r in ok if r["target"] == "sm_90"]
        worst = min(sm90, key=lambda r: r["occupancy_sm90"]) if sm90 else None
        ks, hs = set(), set()
        for r in rs:
            for s in r["shapes"]:
                for tok in s.split():
                    if tok.startswith("K="):
                        ks.add(int(tok[2:]))
                    elif tok.startswith("H="):
                        hs.add(int(tok[2:]))
        out.append({
            "kernel": kernel, "config": blocks, "K": sorted(ks), "H": sorted(hs),
            "compiles": len(rs), "failed": len(failed),
            "regs": regs, "spilled": spilled, "spills": max((r["spill_stores"] + r["spill_loads"] for r in ok), default=0),
            "shared": max((r["shared"] for r in ok), default=0),
            "occupancy": worst["occupancy_sm90"] if worst else None,
            "blocks": worst["blocks_per_sm90"] if worst else None,
            "worst_config": worst["config"] if worst else "",
        })
    return out


_FN = re.compile(r"^\s*Function (\S+):")
_RES = re.compile(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)")
_ARCH = re.compile(r"arch = (sm_\d+)")


def parse_cuobjdump(text: str) -> list[dict]:
    """Rows {arch, mangled, regs, stack, shared, local} of ``cuobjdump --dump-resource-usage``."""
    rows, arch, fn = [], None, None
    for line in text.splitlines():
        if m := _ARCH.search(line):
            arch = m.group(1)
        elif m := _FN.match(line):
            fn = m.group(1)
        elif (m := _RES.search(line)) and fn:
            rows.append({"arch": arch, "mangled": fn, "regs": int(m.group(1)), "stack": int(m.group(2)),
                         "shared": int(m.group(3)), "local": int(m.group(4))})
            fn = None
    names = demangle([r["mangled"] for r in rows])
    for r, name in zip(rows, names):
        r["name"] = name
    return rows


def demangle(names: list[str]) -> list[str]:
    try:
        out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True,
                             check=True).stdout.splitlines()
        return out if len(out) == len(names) else names
    except (OSError, subprocess.CalledProcessError):
        return names


# An sm_90 cubin counts the 1 KB of shared memory the runtime reserves per block in its static
# shared memory (the same kernels show it on sm_90 and not on sm_80); occupancy_sm90 adds it.
SM90_RESERVED_IN_CUBIN = 1024


def cuda_rows(dump_text: str) -> list[dict]:
    """One row per flexrec CUDA kernel, dtype and K: sm_80 and sm_90 registers and local memory,
    threads and shared memory per block, sm_90 occupancy."""
    from flexrec.kernels.aot import occupancy_sm90

    per_arch: dict = {}
    for r in parse_cuobjdump(dump_text):
        m = re.search(r"flexrec::cuda::\(anonymous namespace\)::(\w+)<([^,>]+)", r["name"])
        if not m or m.group(1) not in CUDA_LAUNCH or m.group(2) not in CUDA_TYPES:
            continue
        per_arch[(m.group(1), CUDA_TYPES[m.group(2)][0], r["arch"])] = r
    out = []
    for (kernel, dt, arch), r in per_arch.items():
        if arch != "sm_90":
            continue
        acc = dict(CUDA_TYPES.values())[dt]
        sm80 = per_arch.get((kernel, dt, "sm_80"), {})
        threads_of, smem_of = CUDA_LAUNCH[kernel]
        static = max(r["shared"] - SM90_RESERVED_IN_CUBIN, 0)
        for K in CUDA_K:
            threads, dyn = threads_of(K), smem_of(K, acc)
            blocks, occ = occupancy_sm90(r["regs"], static + dyn, threads // 32)
            out.append({"kernel": kernel, "dtype": dt, "K": K, "threads": threads,
                        "regs": (sm80.get("regs"), r["regs"]), "local": (sm80.get("local"), r["local"]),
                        "stack": (sm80.get("stack"), r["stack"]), "static_shared": static,
                        "dynamic_shared": dyn, "blocks": blocks, "occupancy": occ})
    return sorted(out, key=lambda r: (r["kernel"], r["dtype"], r["K"]))


def build_cuda_dump() -> str:
    """Run .ci/check-cuda-build with FLEXREC_CUDA_RESOURCES and return the dump (minutes)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "cuda_resources.txt")
        env = {**os.environ, "FLEXREC_CUDA_RESOURCES": path}
        subprocess.run(["bash", os.path.join(ROOT, ".ci", "check-cuda-build")], env=env, check=True)
        with open(path) as f:
            return f.read()


def _reason(kernel: str, occupancy, spills) -> str:
    reasons = []
    if spills:
        if kernel not in SPILLS_ACCEPTED:
            raise SystemExit(f"resources: {kernel} spills and SPILLS_ACCEPTED gives no reason; "
                             "change its launch config or say why it is acceptable")
        reasons.append(SPILLS_ACCEPTED[kernel])
    if occupancy is not None and occupancy < LOW_OCCUPANCY:
        reasons.append(ACCEPTED[kernel])
    return " ".join(reasons)


def section(triton: list[dict], seconds: float, cuda: list[dict], cuda_source: str,
            command: str = COMMAND) -> str:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    import triton as _triton

    n_compiles = sum(g["compiles"] for g in triton)
    n_failed = sum(g["failed"] for g in triton)
    lines = [
        BEGIN,
        "## Kernel resources without a GPU (issue 20)",
        "",
        f"Generated {now} on {platform.node() or 'this machine'} ({os.cpu_count()} CPUs, no GPU) "
        f"by `{command}` (`{COMMAND}` alone recompiles and rebuilds everything; `--aot-report` "
        "reuses the JSON of `python -m flexrec.kernels.aot --targets 80,90 --report PATH`, "
        "`--cuda-dump` the file of `FLEXREC_CUDA_RESOURCES=PATH .ci/check-cuda-build`), "
        f"Triton {_triton.__version__}. Occupancy is for an sm_90 SM (H100/H200): "
        "blocks/SM = min(32, 64 / W, (65536 / (ceil(32 R / 256) * 256)) / W, 228 KB / (S + 1 KB)), "
        "each division rounded down, occupancy = blocks x W / 64 warps, for R registers per thread, "
        "W warps and S bytes of shared memory per block. Rows below "
        f"{LOW_OCCUPANCY:.0%} occupancy or with spills say why that is acceptable.",
        "",
        f"### Triton (`python -m flexrec.kernels.aot --targets 80,90`: {n_compiles} compiles, "
        f"{n_failed} failed, {seconds:.0f} s)",
        "",
        "Each row is one block configuration of a kernel, over its flag variants (bias, Gumbel "
        "noise, reward mode), fp32 and bf16 inputs, and the shapes that launch it (K in 10, 20, 30, "
        "100; H in 64, 576, 2048); registers are the range over those variants; occupancy is the "
        "lowest, with the variant that has it.",
        "",
        "| kernel | blocks, warps | K | H | compiles | regs sm_80 | regs sm_90 | spill B | shared B "
        "| sm_90 blocks/SM, occupancy (lowest) | why acceptable |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    rng = lambda v: (f"{v[0]}" if len(v) == 1 else f"{v[0]}-{v[-1]}") if v else "-"
    for g in sorted(triton, key=lambda g: (g["kernel"], g["K"], g["H"])):
        occ = "-" if g["occupancy"] is None else f"{g['blocks']}, {g['occupancy']:.0%}"
        if g["occupancy"] is not None and g["occupancy"] < LOW_OCCUPANCY:
            flags = " ".join(t for t in g["worst_config"].split()
                             if not t.startswith("BLOCK_") and not t.startswith("w") and "=False" not in t)
            occ += f" ({flags})" if flags else ""
        failed = f" (**{g['failed']} failed**)" if g["failed"] else ""
        lines.append(
            f"| {g['kernel']} | {g['config']} | {','.join(map(str, g['K']))} | "
            f"{','.join(map(str, g['H'])) or '-'} | {g['compiles']}{failed} | {rng(g['regs']['sm_80'])} | "
            f"{rng(g['regs']['sm_90'])} | {g['spills']} | {g['shared']} | {occ} | "
            f"{'Spills in ' + '; '.join(g['spilled']) + '. ' if g['spilled'] else ''}"
            f"{_reason(g['kernel'], g['occupancy'], g['spills'])} |")
    lines += ["", f"### CUDA ({cuda_source})", ""]
    if not cuda:
        lines.append("Not generated: no `cuobjdump` dump of a CUDA build (run without `--no-cuda`).")
    else:
        lines += [
            "Registers, local memory (spills, local arrays) and stack, sm_80 / sm_90, and static shared "
            "memory from `cuobjdump --dump-resource-usage` of the built .so (less the 1 KB per block "
            "an sm_90 cubin counts as reserved); threads and dynamic shared memory per block from "
            "the launchers (csrc/cuda/*.cu) at K = 30 and K = 100.",
            "",
            "| kernel | dtype | K | regs sm_80 / sm_90 | local B | stack B | threads "
            "| shared B (static + dynamic) | sm_90 blocks/SM, occupancy | why acceptable |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        pair = lambda v: f"{v[0]} / {v[1]}"
        for r in cuda:
            why = _reason(r["kernel"], r["occupancy"], max(x or 0 for x in r["local"]))
            lines.append(
                f"| {r['kernel']} | {r['dtype']} | {r['K']} | {pair(r['regs'])} | {pair(r['local'])} | "
                f"{pair(r['stack'])} | {r['threads']} | {r['static_shared']} + {r['dynamic_shared']} | "
                f"{r['blocks']}, {r['occupancy']:.0%} | {why} |")
    lines.append(END)
    return "\n".join(lines)


def write_section(text: str, path: str = RESULTS) -> None:
    """Replace the section between the markers in RESULTS.md (append it the first time)."""
    with open(path) as f:
        doc = f.read()
    if BEGIN in doc and END in doc:
        doc = doc[:doc.index(BEGIN)] + text + doc[doc.index(END) + len(END):]
    else:
        doc = doc.rstrip("\n") + "\n\n" + text + "\n"
    with open(path, "w") as f:
        f.write(doc)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--write", action="store_true", help=f"replace the section in {RESULTS}")
    ap.add_argument("--aot-report", help="reuse the JSON of `python -m flexrec.kernels.aot --report`")
    ap.add_argument("--cuda-dump", help="reuse a cuobjdump --dump-resource-usage file "
                                        "(FLEXREC_CUDA_RESOURCES of .ci/check-cuda-build)")
    ap.add_argument("--no-cuda", action="store_true", help="skip the CUDA build and its rows")
    args = ap.parse_args(argv)
    rows, seconds = triton_rows(report=args.aot_report)
    cuda, source = [], "not built"
    if not args.no_cuda:
        if args.cuda_dump:
            with open(args.cuda_dump) as f:
                dump = f.read()
        else:
            dump = build_cuda_dump()
        cuda = cuda_rows(dump)
        source = ("`.ci/check-cuda-build` with `FLEXREC_CUDA_RESOURCES`, torch 2.14.1+cu130, nvcc 13.0, "
                  "`TORCH_CUDA_ARCH_LIST=\"8.0;9.0\"`")
    command = " ".join(["python benchmarks/resources.py"] + list(sys.argv[1:] if argv is None else argv))
    text = section(group_triton(rows), seconds, cuda, source, command)
    print(text)
    if args.write:
        write_section(text)
        print(f"written to {RESULTS}", file=sys.stderr)
    failed = [r for r in rows if not r["ok"]]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
