"""flexrec: post-train LLM recommenders with RL to rank a candidate set for any stated need."""

import torch  # noqa: F401  (must be imported before the compiled extension)

__version__ = "0.1.0"
