"""Builds flexrec's compiled extension ``flexrec._C``.

The C++ CPU kernels are always built. CUDA kernels are added according to ``FLEXREC_CUDA``:
- ``auto`` (default): when torch has CUDA, ``CUDA_HOME`` is set and a GPU is visible;
- ``1``: always (fails loudly when nvcc or CUDA torch is missing; no GPU needed to compile);
- ``0``: never.
``TORCH_CUDA_ARCH_LIST`` picks the GPU architectures as usual (e.g. "8.0;9.0").
``MAX_JOBS`` limits parallel compile jobs.
"""

from __future__ import annotations

import glob
import os
import sys

from setuptools import find_packages, setup

import torch
from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension, CUDA_HOME

HERE = os.path.dirname(os.path.abspath(__file__))


def want_cuda() -> bool:
    mode = os.environ.get("FLEXREC_CUDA", "auto").strip().lower()
    if mode not in ("auto", "0", "1"):
        sys.exit(f"FLEXREC_CUDA={mode!r}: use auto, 0 or 1")
    if mode == "0":
        return False
    has_toolkit = torch.version.cuda is not None and CUDA_HOME is not None
    if mode == "1":
        if not has_toolkit:
            sys.exit(
                "FLEXREC_CUDA=1 but CUDA cannot be built here: torch "
                f"{torch.__version__} has CUDA {torch.version.cuda}, CUDA_HOME={CUDA_HOME}. "
                "Install a CUDA build of torch and set CUDA_HOME (e.g. /usr/local/cuda)."
            )
        return True
    return has_toolkit and os.environ.get("CUDA_HOME") is not None and torch.cuda.is_available()


def extensions():
    with_cuda = want_cuda()
    sources = sorted(glob.glob("csrc/*.cpp")) + sorted(glob.glob("csrc/cpu/*.cpp"))
    archs = os.environ.get("TORCH_CUDA_ARCH_LIST", "") if with_cuda else ""
    macros = [
        ("FLEXREC_WITH_CUDA", "1" if with_cuda else "0"),
        ("FLEXREC_CUDA_ARCHS", f'"{archs}"'),
        ("FLEXREC_TORCH_VERSION", f'"{torch.__version__}"'),
    ]
    cxx = ["-O3", "-fopenmp"] if sys.platform.startswith("linux") else ["-O3"]
    # Link OpenMP too, so that at::parallel_for in the CPU kernels really runs on several threads.
    link = ["-fopenmp"] if sys.platform.startswith("linux") else []
    print(f"flexrec: building C++ CPU kernels; CUDA kernels: {'yes' if with_cuda else 'no'}"
          + (f" (archs {archs or 'torch default'})" if with_cuda else ""))
    if with_cuda:
        sources += sorted(glob.glob("csrc/cuda/*.cu"))
        return [
            CUDAExtension(
                "flexrec._C",
                sources,
                define_macros=macros,
                extra_compile_args={"cxx": cxx, "nvcc": ["-O3"]},
                extra_link_args=link,
            )
        ]
    return [CppExtension("flexrec._C", sources, define_macros=macros, extra_compile_args=cxx,
                         extra_link_args=link)]


setup(
    packages=find_packages(include=["flexrec", "flexrec.*"]) + ["flexrec.kernels"],
    package_dir={"flexrec.kernels": "kernels"},
    ext_modules=extensions(),
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
