"""flexrec's fused ops, registered with torch.library under the ``flexrec::`` namespace.

Each public function validates its inputs, then calls the op; the op's implementation on each
device was chosen once, at import (see ``flexrec.backend`` and ``python -m flexrec.info``).
"""

from flexrec import _ext  # noqa: F401  (loads flexrec._C before the ops register)
from flexrec.ops.candidate_logits import candidate_logits
from flexrec.ops.decode_step import decode_step
from flexrec.ops.permutation_logprob import permutation_logprob
from flexrec.ops.pool_sample import pool_sample
from flexrec.ops.swap_reward import swap_reward
from flexrec.ops.swap_reward_var import swap_reward_var

__all__ = [
    "candidate_logits",
    "decode_step",
    "permutation_logprob",
    "pool_sample",
    "swap_reward",
    "swap_reward_var",
]
