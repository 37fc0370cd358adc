"""Training: ``python -m flexrec.train`` (SFT warm start, then FlexRec RL) and its parts.

- ``loop``: the run, top to bottom (``train(cfg)``: setup -> steps -> finish);
- ``steps``: one SFT step, one RL step, how a batch is drawn;
- ``build``: everything built from a config (device, prompts, tokenizer, policy);
- ``rundir``: the run directory (config, metrics, checkpoints, code version);
- ``report``: the run's report.md and its plots;
- ``distributed``: torchrun's process group and the collectives the trainer needs;
- ``data_parallel``: DDP / FSDP2 wrapping of the policy, and its checkpoints.
"""

from flexrec.train.loop import train

__all__ = ["train"]
