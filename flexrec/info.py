"""``python -m flexrec.info``: what was built and which backend each op uses here.

Shows the flexrec, torch and triton versions, whether the compiled extension loaded (and why not),
what it was compiled with (C++, CUDA, archs), the visible GPUs, and the backend chosen per op and
device (``FLEXREC_BACKEND`` overrides the automatic choice).
"""

from __future__ import annotations

import importlib.util
import os
import platform

import torch

import flexrec
import flexrec.ops  # registers every op, which fills backend.CHOICES
from flexrec.ops import backend, extension


def _triton_version() -> str:
    if importlib.util.find_spec("triton") is None:
        return "not installed"
    from importlib.metadata import version

    return version("triton")


def collect() -> dict:
    """Everything ``main`` prints, as a dict (also handy in bug reports)."""
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return {
        "flexrec": flexrec.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "triton": _triton_version(),
        "flash_attn": importlib.util.find_spec("flash_attn") is not None,
        "gpus": gpus,
        "compiled": extension.build_info(),
        "compiled_error": extension.LOAD_ERROR,
        "backend_requested": backend.requested(),
        "triton_interpret": os.environ.get("TRITON_INTERPRET", "0") == "1",
        "backends": backend.table(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }


def main() -> None:
    info = collect()
    print(f"flexrec      {info['flexrec']}")
    print(f"python       {info['python']}")
    print(f"torch        {info['torch']} (CUDA {info['torch_cuda'] or 'none'})")
    print(f"triton       {info['triton']}" + (" (interpreter)" if info["triton_interpret"] else ""))
    print(f"flash-attn   {'yes' if info['flash_attn'] else 'no (sdpa attention is used)'}")
    print(f"GPUs         {', '.join(info['gpus']) or 'none visible'}")
    print(f"CPU kernels  {info['cpu_capability']} (torch's; results repeat bit for bit on the same one)")
    built = info["compiled"]
    if built:
        cuda = f"yes, archs {built['cuda_archs'] or 'torch default'}" if built["cuda"] else "no"
        print(f"flexrec._C   loaded: C++ CPU kernels yes (OpenMP {'yes' if built['openmp'] else 'no'}),"
              f" CUDA kernels {cuda}; built against torch {built['torch_version']}")
    else:
        print(f"flexrec._C   NOT loaded: {info['compiled_error']}")
    print(f"FLEXREC_BACKEND={info['backend_requested']}")
    print()
    ops = sorted({op for op, _, _ in info["backends"]})
    chosen = {(op, dev): b for op, dev, b in info["backends"]}
    width = max(len(op) for op in ops) if ops else 10
    print(f"{'op':<{width}}  {'cpu':<7} cuda")
    for op in ops:
        print(f"{op:<{width}}  {chosen.get((op, 'cpu'), '-'):<7} {chosen.get((op, 'cuda'), '-')}")


if __name__ == "__main__":
    main()
