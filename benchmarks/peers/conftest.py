"""Peer benchmarks run with one torch thread on CPU unless FLEXREC_BENCH_THREADS says otherwise.

One thread is the trainer's own default (flexrec.config: two OpenMP threads on the shared 2-core
box were up to 20x slower per small op); every provider gets the same setting.
"""

import os

import pytest
import torch


@pytest.fixture(autouse=True)
def _peer_threads():
    before = torch.get_num_threads()
    if not torch.cuda.is_available():
        torch.set_num_threads(int(os.environ.get("FLEXREC_BENCH_THREADS", "1")))
    yield
    torch.set_num_threads(before)
