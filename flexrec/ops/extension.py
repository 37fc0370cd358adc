"""Loads the compiled extension ``flexrec._C`` once, and says exactly why when it cannot.

torch must be imported before the compiled module: it links against libtorch.
A missing or broken extension is one warning (every op then runs on its pure-torch reference,
which ``flexrec.ops.backend_summary()`` and ``python -m flexrec.info`` show); with
``FLEXREC_REQUIRE_C=1`` it is an error, which CI sets.

The common way to lose the extension is to run ``python -m flexrec.<cmd>`` from the repository
root of a regular install: Python puts the current directory first on ``sys.path``, so the
checkout's ``flexrec/`` (which has no compiled module) shadows the installed package (which has
one). ``diagnose`` recognises that case and names both directories and the two ways out.
"""

from __future__ import annotations

import importlib.machinery
import os
import sys
import warnings
from pathlib import Path
from types import ModuleType
from typing import Optional

import torch  # (must precede the compiled module, which links against libtorch)

PACKAGE_DIR = Path(__file__).resolve().parent.parent  # the flexrec/ this module was imported from


def compiled_modules(package_dir: Path) -> list[Path]:
    """The compiled ``_C`` modules (``_C.cpython-311-x86_64-linux-gnu.so`` ...) in a flexrec/ dir."""
    found: list[Path] = []
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        found += sorted(package_dir.glob(f"_C{suffix}"))
    return found


def is_source_checkout(package_dir: Path) -> bool:
    """``package_dir`` is the flexrec/ of a git checkout (its parent has the C++ sources)."""
    root = package_dir.parent
    return (root / "csrc").is_dir() and ((root / "setup.py").is_file() or (root / "pyproject.toml").is_file())


def _flexrec_dirs_on_path() -> list[Path]:
    """Every flexrec/ package directory Python could import: one per ``sys.path`` entry, and what
    the other import finders (an editable install's finder) would return."""
    dirs = [Path(entry or os.getcwd()) / "flexrec" for entry in sys.path]
    for finder in sys.meta_path:
        if finder is importlib.machinery.PathFinder:
            continue  # covered by the sys.path entries above
        find_spec = getattr(finder, "find_spec", None)
        if find_spec is None:
            continue
        try:
            spec = find_spec("flexrec", None)
        except Exception:  # a third-party finder that cannot answer for this name
            continue
        if spec is not None and spec.submodule_search_locations:
            dirs += [Path(p) for p in spec.submodule_search_locations]
    return [d for d in dirs if d.is_dir()]


def shadowed_build(package_dir: Path) -> Optional[Path]:
    """Another flexrec/ directory on the import path that has a compiled module, if any."""
    here = package_dir.resolve()
    for d in _flexrec_dirs_on_path():
        if d.resolve() != here and compiled_modules(d):
            return d.resolve()
    return None


def diagnose(package_dir: Path, error: str) -> str:
    """What went wrong loading ``flexrec._C`` from ``package_dir`` and what to do about it."""
    if not compiled_modules(package_dir) and is_source_checkout(package_dir):
        other = shadowed_build(package_dir)
        if other is not None:
            return (
                f"Python imported flexrec from the source checkout {package_dir}, which has no "
                f"compiled module, instead of the installed flexrec at {other}, which has one "
                f"(running from the repository root puts the checkout first on sys.path). Either "
                f"run from another directory (cd out of {package_dir.parent}), or, to develop in "
                f"this checkout, build the module in place with `pip install --no-build-isolation -e .`"
            )
        return (
            f"the source checkout {package_dir} has no compiled module; build it in place with "
            f"`pip install --no-build-isolation -e .` ({error})"
        )
    return (
        f"{error}; rebuild it against the installed torch {torch.__version__} with "
        f"`pip install --no-build-isolation -e .`"
    )


def load() -> tuple[Optional[ModuleType], Optional[str]]:
    """Import ``flexrec._C``: (module, None), or (None, why) after one warning; an ImportError
    instead of the warning when ``FLEXREC_REQUIRE_C=1``."""
    try:
        from flexrec import _C as module  # type: ignore[attr-defined]
    except Exception as exc:  # ImportError, or an undefined symbol from a torch mismatch
        why = diagnose(PACKAGE_DIR, f"{type(exc).__name__}: {exc}")
        if os.environ.get("FLEXREC_REQUIRE_C", "0") == "1":
            raise ImportError(f"FLEXREC_REQUIRE_C=1 but flexrec._C did not load: {why}") from exc
        warnings.warn(
            f"flexrec: the compiled extension flexrec._C did not load: {why}. Every op runs on its "
            "pure-torch reference; `python -m flexrec.info` shows the backend of each op.",
            RuntimeWarning,
            stacklevel=3,
        )
        return None, why
    return module, None


_C, LOAD_ERROR = load()


def build_info() -> dict:
    """What the compiled extension was built with (empty when it did not load)."""
    if _C is None:
        return {}
    return dict(_C.build_info())


def has_cpu_kernels() -> bool:
    return _C is not None


def has_cuda_kernels() -> bool:
    return _C is not None and bool(build_info().get("cuda", False))
