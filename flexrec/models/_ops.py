"""The ops the policy and the trainer call, from ``flexrec.ops`` where they have landed.

(Transitional.) ``flexrec.ops`` grows one op at a time; an op not yet registered there is taken
from ``flexrec.ops.reference``, which has the same signature and the same math. This shim goes
away once every op below is exported by ``flexrec.ops``.
"""

from __future__ import annotations

import flexrec.ops as _public
from flexrec.ops import reference as _reference

_NAMES = ("swap_reward", "swap_reward_var", "pool_sample", "candidate_logits", "permutation_logprob")

SOURCE: dict[str, str] = {}
for _name in _NAMES:
    _fn = getattr(_public, _name, None)
    SOURCE[_name] = "flexrec.ops" if _fn is not None else "flexrec.ops.reference"
    globals()[_name] = _fn if _fn is not None else getattr(_reference, _name)

__all__ = list(_NAMES) + ["SOURCE"]
