"""Which implementation each op uses on each device, chosen once, at import.

Backends:
- ``ref``:    the pure-torch reference (the custom op's own body, ``flexrec.ops.reference``).
- ``c``:      the compiled C++ CPU kernels (``flexrec._C``, ops ``torch.ops.flexrec_C.*``).
- ``cuda``:   the compiled CUDA kernels (the same ``flexrec_C`` ops, CUDA dispatch key).
- ``triton``: the Triton kernels in ``flexrec.kernels``; on CPU only with ``TRITON_INTERPRET=1``.

``register(op, name)`` finds the fast paths by convention: the compiled op
``torch.ops.flexrec_C.<name>`` (for ``c`` on CPU and ``cuda`` on CUDA; its schema is in
``csrc/flexrec.cpp``) and the Triton launcher ``flexrec.kernels.<module>:<name>``, where the module
is the op's name without ``_backward`` (a backward kernel lives beside its forward).

``FLEXREC_BACKEND=auto`` (default) takes, per device, the first available of
cpu: c, ref;  cuda: cuda, triton, ref.  Naming a backend (``FLEXREC_BACKEND=triton``) uses it
wherever it exists for that op and device, and otherwise falls back to the auto order with one
warning saying so. ``summary()`` (``flexrec.ops.backend_summary``) and ``python -m flexrec.info``
report the choice.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import warnings
from typing import Callable, Optional, Union

import torch

from flexrec.ops import extension

BACKEND_NAMES = ("auto", "ref", "c", "cuda", "triton")
DEVICE_TYPES = ("cpu", "cuda")
AUTO_ORDER = {"cpu": ("c", "ref"), "cuda": ("cuda", "triton", "ref")}

# An implementation is a callable or a lazy "module:attr" path (so that triton is imported only
# when a Triton kernel is actually chosen, and torch.ops.flexrec_C only when the extension loaded).
Impl = Union[Callable, str]
# impls[backend][device_type] = implementation; "ref" is never listed (it is the op's body).
Impls = dict[str, dict[str, Impl]]

# (op name, device type) -> backend chosen; filled by ``register``.
CHOICES: dict[tuple[str, str], str] = {}
# op name -> (the custom op, its fast paths); filled by ``register``.
REGISTRY: dict[str, tuple[object, Impls]] = {}


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
        return device_type == "cpu" and extension.has_cpu_kernels()
    if backend == "cuda":
        return device_type == "cuda" and extension.has_cuda_kernels() and torch.cuda.is_available()
    if backend == "triton":
        return triton_usable(device_type)
    return False


def conventional_impls(op_name: str) -> Impls:
    """The fast paths an op has by convention: ``torch.ops.flexrec_C.<op_name>`` (C++ on CPU,
    CUDA on CUDA) and ``flexrec.kernels.<module>:<op_name>`` (Triton on both)."""
    compiled = f"torch.ops.flexrec_C:{op_name}"
    triton_module = op_name.removesuffix("_backward")
    triton = f"flexrec.kernels.{triton_module}:{op_name}"
    return {"c": {"cpu": compiled}, "cuda": {"cuda": compiled}, "triton": {"cpu": triton, "cuda": triton}}


def resolve(impl: Impl) -> Callable:
    if callable(impl):
        return impl
    module, _, attr = impl.partition(":")
    if module == "torch.ops.flexrec_C":
        return getattr(torch.ops.flexrec_C, attr).default
    return getattr(importlib.import_module(module), attr)


def choose(op_name: str, device_type: str, impls: Impls) -> str:
    """The backend ``op_name`` uses on ``device_type``."""
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


def register(op, op_name: str, overrides: Optional[Impls] = None) -> None:
    """Register the chosen fast path of the ``torch.library.custom_op`` ``flexrec::<op_name>``
    for each device, found by convention (``conventional_impls``); ``overrides[backend]`` replaces
    the convention for a backend whose kernel is named or shaped differently ({} for none).

    The op's own body (the reference) serves every device where ``ref`` is chosen.
    """
    impls = conventional_impls(op_name)
    impls.update(overrides or {})
    REGISTRY[op_name] = (op, impls)
    for device_type in DEVICE_TYPES:
        backend = choose(op_name, device_type, impls)
        CHOICES[(op_name, device_type)] = backend
        if backend != "ref":
            op.register_kernel(device_type)(resolve(impls[backend][device_type]))


def implementation(op_name: str, backend: str, device_type: str) -> Optional[Callable]:
    """The kernel ``backend`` provides for a registered op on ``device_type`` (None for ``ref``,
    whose kernel is the op's body, or where that backend has none): what tests call directly."""
    _, impls = REGISTRY[op_name]
    if backend == "ref" or device_type not in impls.get(backend, {}):
        return None
    return resolve(impls[backend][device_type])


def table() -> list[tuple[str, str, str]]:
    """(op, device, backend) rows, for ``python -m flexrec.info``."""
    return [(op, dev, b) for (op, dev), b in sorted(CHOICES.items())]


def summary() -> dict:
    """What the run's ops use, to print and save with a run's config and report::

        {"extension": "loaded" | "missing: <why>", "requested": FLEXREC_BACKEND,
         "cpu": {op: backend}, "cuda": {op: backend}}

    A ``ref`` entry is the pure-torch fallback; "extension" says why it was taken, if it was.
    """
    out: dict = {
        "extension": "loaded" if extension.has_cpu_kernels() else f"missing: {extension.LOAD_ERROR}",
        "requested": requested(),
    }
    for device_type in DEVICE_TYPES:
        out[device_type] = {op: b for (op, dev), b in sorted(CHOICES.items()) if dev == device_type}
    return out
