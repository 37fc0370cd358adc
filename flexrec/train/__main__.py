"""``python -m flexrec.train``: post-train a recommender policy for flexible needs (SFT, then FlexRec RL).

With no arguments: the synthetic world, the tiny model, all three needs jointly; ``--help`` lists every
setting (``flexrec.config.TrainConfig``). Under torchrun, one process per device (README "Multi-GPU").
"""

from __future__ import annotations

import sys
import time
from typing import Optional

from torch.distributed.elastic.multiprocessing.errors import record

from flexrec.config import ConfigError, parse_args
from flexrec.train import distributed
from flexrec.train.loop import train


@record  # under torchrun: a rank's uncaught error, with its traceback, heads torchrun's failure summary
def main(argv: Optional[list[str]] = None) -> int:
    try:
        cfg = parse_args(argv)
        start = time.time()
        train(cfg)
    except KeyboardInterrupt:
        return 130
    except ConfigError as err:  # like argparse: every problem on its own line, exit 2, before any work
        for line in err.problems:
            print(f"python -m flexrec.train: error: {line}", file=sys.stderr, flush=True)
        return 2
    except (ValueError, FileNotFoundError) as err:  # a failing rank exits; torchrun then stops the others
        print(f"flexrec.train: error{distributed.where()}: {err}", file=sys.stderr, flush=True)
        return 2
    if distributed.is_main():
        print(f"wall time {time.time() - start:.0f}s", flush=True)
    distributed.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
