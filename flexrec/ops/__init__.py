"""flexrec's fused ops, registered with torch.library under the ``flexrec::`` namespace.

Each public function validates its inputs, then calls the op; the op's implementation on each
device was chosen once, at import (see ``flexrec.backend`` and ``python -m flexrec.info``).
"""

from flexrec import _ext  # noqa: F401  (loads flexrec._C before the ops register)
from flexrec.ops.swap_reward import swap_reward

__all__ = ["swap_reward"]
