"""What tests/train/test_distributed.py launches with torchrun: ``flexrec.train``'s CLI plus two hooks.

FLEXREC_TEST_STOP_AFTER=n   every rank stops cleanly after step n (with --save-every 1, once it is saved)
FLEXREC_TEST_FAIL=rank:step that rank raises after that step

The hooks live here, not in the package: they only wrap ``train``'s ``on_step`` callback.
"""

import os
import sys

from flexrec.train import __main__ as trainer


def on_step(step: int) -> None:
    if step == int(os.environ.get("FLEXREC_TEST_STOP_AFTER", "-1")):
        sys.exit(0)
    if os.environ.get("FLEXREC_TEST_FAIL"):
        rank, at = map(int, os.environ["FLEXREC_TEST_FAIL"].split(":"))
        if int(os.environ["RANK"]) == rank and step == at:
            raise RuntimeError(f"injected failure on rank {rank} after step {step}")


if __name__ == "__main__":
    run = trainer.train
    trainer.train = lambda cfg: run(cfg, on_step=on_step)
    sys.exit(trainer.main(sys.argv[1:]))
