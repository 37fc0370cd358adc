"""flexrec: post-train LLM recommenders with RL to rank a candidate set for any stated need."""

import torch  # noqa: F401  (must be imported before the compiled extension)

__version__ = "0.1.0"

from flexrec.runs import TrainedRun, load_run  # noqa: E402  (a finished run of python -m flexrec.train, to rank with)

__all__ = ["TrainedRun", "load_run", "__version__"]
