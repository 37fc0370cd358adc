"""flexrec's fused ops, registered with torch.library under the ``flexrec::`` namespace.

Each public function validates its inputs, then calls the op; ``check=False`` skips the checks that
read values (a host sync on a GPU) for loops that checked their inputs once (``check_decode_inputs``).
The op's implementation on each device was chosen once, at import (``flexrec.ops.backend``);
``backend_summary()`` and ``python -m flexrec.info`` say which. See docs/ops.md.
"""

from flexrec.ops import extension  # noqa: F401  (loads flexrec._C before the ops register)
from flexrec.ops.backend import summary as backend_summary
from flexrec.ops.candidate_logits import candidate_logits
from flexrec.ops.checks import check_decode_inputs, check_finite, check_no_nan
from flexrec.ops.decode_step import decode_step
from flexrec.ops.permutation_logprob import permutation_logprob
from flexrec.ops.pool_sample import pool_sample
from flexrec.ops.swap_reward import swap_reward
from flexrec.ops.swap_reward_var import swap_reward_var

__all__ = [
    "backend_summary",
    "candidate_logits",
    "check_decode_inputs",
    "check_finite",
    "check_no_nan",
    "decode_step",
    "permutation_logprob",
    "pool_sample",
    "swap_reward",
    "swap_reward_var",
]
