"""benchmarks/resources.py, the kernel resource table of benchmarks/RESULTS.md: its copy of the
CUDA launch shapes matches csrc/cuda/*.cu, and it reads cuobjdump's resource dump."""

import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import resources

sys.path.pop(0)


def _const(name: str, cu: str) -> int:
    with open(os.path.join(ROOT, "csrc", "cuda", cu)) as f:
        text = f.read()
    return int(re.search(rf"constexpr int {name} = (\d+);", text).group(1))


def test_cuda_launch_shapes_match_the_sources():
    L = resources.CUDA_LAUNCH
    assert L["candidate_logits_kernel"][0](30) == _const("kPairsPerBlock", "candidate_logits.cu") * 32
    assert L["candidate_logits_backward_kernel"][0](30) == _const("kBackwardThreads", "candidate_logits.cu")
    assert L["decode_step_kernel"][0](30) == _const("kDecodeThreads", "decode_step.cu")
    assert L["pool_sample_kernel"][0](30) == _const("kRowsPerBlock", "pool_sample.cu") * 32
    steps = _const("kStepsPerBlock", "permutation_logprob.cu")
    assert L["permutation_logprob_kernel"][0](30) == steps * 32
    assert L["permutation_logprob_kernel"][1](30, 4) == steps * 30  # kStepsPerBlock * K bools
    # row_threads (common.cuh): whole warps, about one thread per candidate, at most 256.
    assert [resources._row_threads(K) for K in (1, 30, 33, 100, 1000)] == [32, 32, 64, 128, 256]
    for cu, n in (("swap_reward.cu", 2), ("swap_reward_var.cu", 3)):
        with open(os.path.join(ROOT, "csrc", "cuda", cu)) as f:
            text = f.read()
        assert f"const size_t smem = {n} * K * sizeof(acc_t);" in text


SAMPLE = """
Fatbin elf code:
================
arch = sm_90
code version = [1,7]
host = linux
compile_size = 64bit

Resource usage:
 Common:
  GLOBAL:0
 Function _ZN7flexrec4cuda12_GLOBAL__N_118swap_reward_kernelIfEEvPKT_PS3_llNS0_4ModeE:
  REG:40 STACK:0 SHARED:128 LOCAL:0 CONSTANT[0]:560 TEXTURE:0 SURFACE:0 SAMPLER:0
"""


def test_reads_cuobjdump_resource_usage():
    (row,) = resources.parse_cuobjdump(SAMPLE)
    assert (row["arch"], row["regs"], row["shared"], row["local"]) == ("sm_90", 40, 128, 0)
    rows = resources.cuda_rows(SAMPLE)
    assert [(r["kernel"], r["dtype"], r["K"], r["threads"]) for r in rows] == [
        ("swap_reward_kernel", "fp32", 30, 32), ("swap_reward_kernel", "fp32", 100, 128)]
    # 40 regs -> 1280 per warp -> 51 warps; shared 128 + 2 * 30 * 4 = 368 B; one warp per block:
    # 32 blocks (the block limit) = 50%.
    assert (rows[0]["blocks"], rows[0]["occupancy"]) == (32, 0.5)
    assert rows[0]["regs"] == (None, 40)  # no sm_80 cubin in the sample
    # An sm_90 cubin's static shared memory counts the 1 KB reserved per block: taken out.
    assert resources.cuda_rows(SAMPLE.replace("SHARED:128", "SHARED:1152"))[0]["static_shared"] == 128
