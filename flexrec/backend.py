"""Which implementation each op uses on each device, chosen once, at import.

Backends:
- ``ref``:    the pure-torch reference (``flexrec.ops.reference``); works everywhere.
- ``c``:      the compiled C++ CPU kernels (``flexrec._C``, ops ``torch.ops.flexrec_C.*``).
- ``cuda``:   the compiled CUDA kernels (the same ``flexrec_C`` ops, CUDA dispatch key).
- ``triton``: the Triton kernels in ``flexrec.kernels``; on CPU only with ``TRITON_INTERPRET=1``.

``FLEXREC_BACKEND=auto`` (default) takes, per device, the first available of
cpu: c, ref;  cuda: cuda, triton, ref.  Naming a backend (``FLEXREC_BACKEND=triton``) uses it
wherever it exists for that op and device, and otherwise falls back to the auto order with one
warning saying so. ``python -m flexrec.info`` prints the table.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import warnings
from typing import Callable, Union

import torch

from flexrec import _ext

BACKEND_NAMES = ("auto", "ref", "c", "cuda", "triton")
DEVICE_TYPES = ("cpu", "cuda")
AUTO_ORDER = {"cpu": ("c", "ref"), "cuda": ("cuda", "triton", "ref")}

# An implementation is a callable or a lazy "module:attr" path (so that triton is imported only
# when a Triton kernel is actually chosen).
Impl = Union[Callable, str]

# (op name, device type) -> backend chosen; filled by ``register``.
CHOICES: dict[tuple[str, str], str] = {}


def requested() -> str:
    name = os.environ.get("FLEXREC_BACKEND", "auto").strip().lower() or "auto"
    if name not in BACKEND_NAMES:
        raise ValueError(
            f"FLEXREC_BACKEND={name!r} is not a backend; use one of {', '.join(BACKEND_NAMES)}"
        )
    return name


def triton_usable(device_type: str) -> bool:
    """Triton kernels can launch on this device type in this process."""
    if importlib.util.find_spec("triton") is None:
        return False
    if device_type == "cuda":
        return torch.cuda.is_available()
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def available(backend: str, device_type: str) -> bool:
    """Whether ``backend`` can run on ``device_type`` at all (before asking about a given op)."""
    if backend == "ref":
        return True
    if backend == "c":
        return device_type == "cpu" and _ext.has_cpu_kernels()
    if backend == "cuda":
        return device_type == "cuda" and _ext.has_cuda_kernels() and torch.cuda.is_available()
    if backend == "triton":
        return triton_usable(device_type)
    return False


def resolve(impl: Impl) -> Callable:
    if callable(impl):
        return impl
    module, _, attr = impl.partition(":")
    return getattr(importlib.import_module(module), attr)


def choose(op_name: str, device_type: str, impls: dict[str, dict[str, Impl]]) -> str:
    """The backend ``op_name`` uses on ``device_type``. ``impls[backend][device_type]`` = impl."""
    want = requested()

    def runs(b: str) -> bool:
        return (b == "ref" or device_type in impls.get(b, {})) and available(b, device_type)

    # A named backend is used wherever it runs; auto picks from AUTO_ORDER, which leaves out
    # Triton on CPU (the interpreter is for testing: naming it with TRITON_INTERPRET=1 uses it).
    if want != "auto" and runs(want):
        return want
    usable = [b for b in AUTO_ORDER[device_type] if runs(b)]
    if want == "auto":
        return usable[0]
    # Asking for c/cuda where only the other device has it is not worth a warning.
    if not (want in ("c", "cuda") and device_type != {"c": "cpu", "cuda": "cuda"}[want]):
        if device_type == "cpu" or torch.cuda.is_available():
            warnings.warn(
                f"flexrec: FLEXREC_BACKEND={want} has no {device_type} kernel for {op_name} here; "
                f"using {usable[0]}. See `python -m flexrec.info`.",
                RuntimeWarning,
                stacklevel=3,
            )
    return usable[0]


def register(op, op_name: str, impls: dict[str, dict[str, Impl]]) -> None:
    """Register the chosen fast path of a ``torch.library.custom_op`` for each device.

    The op's own body (the reference) serves every device where ``ref`` is chosen.
    """
    for device_type in DEVICE_TYPES:
        backend = choose(op_name, device_type, impls)
        CHOICES[(op_name, device_type)] = backend
        if backend != "ref":
            op.register_kernel(device_type)(resolve(impls[backend][device_type]))


def table() -> list[tuple[str, str, str]]:
    """(op, device, backend) rows, for ``python -m flexrec.info``."""
    return [(op, dev, b) for (op, dev), b in sorted(CHOICES.items())]
