"""Ahead-of-time compilation of the Triton kernels for sm_80 and sm_90, without a GPU
(flexrec.kernels.aot): the interpreter that the other kernel tests use accepts code that the
compiler rejects, so every kernel must also compile. The full sweep (every benchmark shape) runs
in CI as its own step (.ci/run) and here under the slow mark."""

import os

import pytest
import torch

from flexrec.kernels import aot

TARGETS = (80, 90)


def _broken_spec(block: int) -> aot.Spec:
    return aot.Spec("_broken_kernel", "small_dot_kernel",
                    {"a_ptr": "*fp32", "out_ptr": "*fp32", "BLOCK": "constexpr"}, {"BLOCK": block},
                    [], 4, shapes=[f"K={block} fp32"])


@pytest.fixture(scope="module")
def compiled():
    """One compile_all (one compiler subprocess under the interpreter) for the module: every
    kernel at its representative shape for sm_80 and sm_90, and the broken kernel at an illegal
    and a legal size for sm_90."""
    specs = aot.representative_specs()
    rows = aot.compile_all(specs + [_broken_spec(4), _broken_spec(16)], TARGETS)
    kernels = [r for r in rows if r["kernel"] != "small_dot_kernel"]
    broken = {(r["config"], r["target"]): r for r in rows if r["kernel"] == "small_dot_kernel"}
    return specs, kernels, broken


def test_every_kernel_compiles_for_sm80_and_sm90(compiled):
    specs, rows, _ = compiled
    # One per Triton kernel of flexrec (kernels/*.py): a new kernel must be added to aot.py.
    assert {s.kernel for s in specs} == {
        "candidate_logits_kernel", "candidate_logits_backward_kernel", "decode_step_kernel",
        "pool_sample_kernel", "permutation_logprob_kernel", "permutation_logprob_backward_kernel",
        "swap_reward_kernel", "swap_reward_var_kernel"}
    assert aot.failures(rows) == []
    assert len(rows) == 2 * len(specs)
    assert {r["target"] for r in rows} == {"sm_80", "sm_90"}
    for r in rows:
        assert 0 < r["regs"] <= 255, r
        assert r["spill_stores"] == 0, r  # no kernel spills at the benchmark shapes
        assert 0 < r["occupancy_sm90"] <= 1, r


def test_specs_follow_the_launchers_config():
    from flexrec.kernels.candidate_logits import launch_config

    specs = [s for s in aot.kernel_specs(ks=(30,), hs=(2048,), dtypes=("bf16",))
             if s.kernel == "decode_step_kernel"]
    cfg = launch_config(30, 2048)
    for s in specs:
        assert s.constexprs["BLOCK_K"] == cfg["BLOCK_K"] == 32
        assert s.constexprs["BLOCK_H"] == cfg["BLOCK_H"] == 128  # 4096 // 32
        assert s.num_warps == cfg["num_warps"] == 8  # a 4096-element tile
        assert s.signature["hidden_ptr"] == "*bf16"
    # K = 20 and K = 30 both launch BLOCK_K = 32: one specialisation serves both shapes.
    swap = [s for s in aot.kernel_specs(ks=(20, 30), hs=(64,), dtypes=("fp32",))
            if s.kernel == "swap_reward_kernel"]
    assert len(swap) == aot.N_MODES
    assert swap[0].shapes == ["K=20 fp32 mode=0", "K=30 fp32 mode=0"]


def test_occupancy_formula():
    # 128 regs x 32 threads = 4096 per warp -> 65536 / 4096 = 16 warps; 1 warp per block:
    # 16 blocks, 16 / 64 warps = 25%.
    assert aot.occupancy_sm90(128, 128, 1) == (16, 0.25)
    # 16 regs: the 32-blocks-per-SM limit binds: 32 one-warp blocks = 50%.
    assert aot.occupancy_sm90(16, 0, 1) == (32, 0.5)
    # 56 regs -> 1792 per warp -> 36 warps -> 9 four-warp blocks = 36 / 64 = 56%.
    assert aot.occupancy_sm90(56, 512, 4) == (9, 36 / 64)
    # 100 KB of shared memory: floor(228 KB / 101 KB) = 2 blocks.
    assert aot.occupancy_sm90(32, 100 * 1024, 4)[0] == 2


def test_a_kernel_that_does_not_compile_fails_with_its_name_shape_and_target(compiled):
    _, _, broken = compiled
    # Runs correctly in the interpreter...
    import _broken_kernel

    if os.environ.get("TRITON_INTERPRET") == "1":
        a = torch.randn(4, 4)
        out = torch.empty(4, 4)
        _broken_kernel.small_dot_kernel[(1,)](a, out, BLOCK=4)
        torch.testing.assert_close(out, a @ a)
    # ...but the compiler rejects it, for every target, and the AOT report names it.
    for target in ("sm_80", "sm_90"):
        row = broken[("BLOCK=4 w4", target)]
        assert not row["ok"]
        (line,) = aot.failures([row])
        assert line.startswith(f"FAILED small_dot_kernel [BLOCK=4 w4] for {target} (shapes: K=4 fp32)")
        assert "K >= 8" in line  # the compiler's own reason
        # The same kernel at a legal size compiles.
        assert broken[("BLOCK=16 w4", target)]["ok"]


def test_cli_exits_nonzero_naming_the_failure(compiled, monkeypatch, capsys):
    _, _, broken = compiled
    monkeypatch.setattr(aot, "representative_specs", lambda: [_broken_spec(4)])
    monkeypatch.setattr(aot, "compile_all", lambda *args: [broken[("BLOCK=4 w4", "sm_80")]])
    assert aot.main(["--quick", "--targets", "80"]) == 1
    out, err = capsys.readouterr()
    assert "FAILED small_dot_kernel [BLOCK=4 w4] for sm_80 (shapes: K=4 fp32)" in err
    assert "compiled 0/1" in out


@pytest.mark.slow
def test_full_sweep_compiles(tmp_path):
    """Every kernel at every benchmark shape (K 10/20/30/100, H 64/576/2048, fp32 and bf16)."""
    rows = aot.compile_all(aot.kernel_specs(), TARGETS)
    assert aot.failures(rows) == []
