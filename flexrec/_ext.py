"""Loads the compiled extension ``flexrec._C`` once, and says clearly when it cannot.

torch must be imported before the compiled module: it links against libtorch.
A missing or broken extension is one warning (flexrec still works on the pure-torch reference);
with ``FLEXREC_REQUIRE_C=1`` it is an error, which CI sets.
"""

from __future__ import annotations

import os
import warnings
from types import ModuleType
from typing import Optional

import torch  # noqa: F401  (must precede the compiled module)

_C: Optional[ModuleType] = None
LOAD_ERROR: Optional[str] = None

try:
    from flexrec import _C  # type: ignore[attr-defined,no-redef]
except Exception as exc:  # ImportError, or an undefined symbol from a torch mismatch
    LOAD_ERROR = f"{type(exc).__name__}: {exc}"
    if os.environ.get("FLEXREC_REQUIRE_C", "0") == "1":
        raise ImportError(
            "FLEXREC_REQUIRE_C=1 but flexrec's compiled extension did not load "
            f"({LOAD_ERROR}). Rebuild it against the installed torch: "
            "`pip install --no-build-isolation -e .`"
        ) from exc
    warnings.warn(
        "flexrec: the compiled extension flexrec._C did not load "
        f"({LOAD_ERROR}); every op runs on its pure-torch reference. Rebuild against the installed "
        "torch with `pip install --no-build-isolation -e .`, and see `python -m flexrec.info`.",
        RuntimeWarning,
        stacklevel=2,
    )


def build_info() -> dict:
    """What the compiled extension was built with (empty when it did not load)."""
    if _C is None:
        return {}
    return dict(_C.build_info())


def has_cpu_kernels() -> bool:
    return _C is not None


def has_cuda_kernels() -> bool:
    return _C is not None and bool(build_info().get("cuda", False))
