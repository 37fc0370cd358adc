"""The ops' plumbing: registration by convention, backend_summary, the extension loader's
diagnosis of a shadowing source checkout, ``python -m flexrec.info``, and the package layout."""

import importlib.machinery
import re
import sys
from pathlib import Path

import pytest
import torch

import flexrec.ops
from flexrec import info
from flexrec.ops import backend, extension

ROOT = Path(__file__).resolve().parents[2]


def test_convention_names_every_fast_path():
    impls = backend.conventional_impls("swap_reward")
    assert impls == {
        "c": {"cpu": "torch.ops.flexrec_C:swap_reward"},
        "cuda": {"cuda": "torch.ops.flexrec_C:swap_reward"},
        "triton": {"cpu": "flexrec.kernels.swap_reward:swap_reward",
                   "cuda": "flexrec.kernels.swap_reward:swap_reward"},
    }
    # a backward op's Triton launcher lives beside its forward
    tri = backend.conventional_impls("candidate_logits_backward")["triton"]["cpu"]
    assert tri == "flexrec.kernels.candidate_logits:candidate_logits_backward"


@pytest.mark.parametrize("op_name", sorted(backend.REGISTRY))
def test_every_conventional_impl_exists(op_name):
    # Each registered op finds its compiled op and its Triton launcher under the conventional name.
    assert backend.implementation(op_name, "ref", "cpu") is None
    compiled = backend.implementation(op_name, "c", "cpu")
    assert compiled == getattr(torch.ops.flexrec_C, op_name).default
    assert backend.implementation(op_name, "cuda", "cuda") == compiled
    assert callable(backend.implementation(op_name, "triton", "cpu"))


def test_overrides_replace_the_convention():
    @torch.library.custom_op("flexrec_test_backend::twice", mutates_args=())
    def twice(x: torch.Tensor) -> torch.Tensor:
        return x * 2

    calls = []

    def fast(x):
        calls.append(x)
        return x + x

    # no compiled or Triton kernel of this name exists: only the override can serve the CPU
    backend.register(twice, "twice_test", {"c": {"cpu": fast}, "triton": {}})
    try:
        assert backend.CHOICES[("twice_test", "cpu")] == "c"
        assert torch.equal(twice(torch.ones(2)), torch.full((2,), 2.0))
        assert len(calls) == 1
    finally:
        backend.REGISTRY.pop("twice_test")
        backend.CHOICES.pop(("twice_test", "cpu"))
        backend.CHOICES.pop(("twice_test", "cuda"))


def test_backend_summary_lists_every_op():
    summary = flexrec.ops.backend_summary()
    assert summary["extension"] == "loaded"
    assert summary["requested"] == backend.requested()
    ops = set(backend.REGISTRY)
    assert len(ops) == 8
    for device in ("cpu", "cuda"):
        assert set(summary[device]) == ops
        assert set(summary[device].values()) <= {"ref", "c", "cuda", "triton"}
    assert summary["cpu"] == {op: backend.CHOICES[(op, "cpu")] for op in ops}


def test_backend_summary_says_why_the_extension_is_missing(monkeypatch):
    monkeypatch.setattr(extension, "_C", None)
    monkeypatch.setattr(extension, "LOAD_ERROR", "ImportError: no module named flexrec._C")
    assert flexrec.ops.backend_summary()["extension"] == "missing: ImportError: no module named flexrec._C"


def _fake_extension(package_dir: Path) -> None:
    package_dir.mkdir(parents=True)
    (package_dir / "__init__.py").write_text("")
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    (package_dir / f"_C{suffix}").write_bytes(b"")


@pytest.fixture
def import_path(monkeypatch):
    """Sets sys.path to the given directories, with only the standard import finders (no editable
    install's finder pointing at this machine's own flexrec)."""
    std = [importlib.machinery.BuiltinImporter, importlib.machinery.FrozenImporter, importlib.machinery.PathFinder]
    monkeypatch.setattr(sys, "meta_path", std)

    def set_path(*dirs):
        monkeypatch.setattr(sys, "path", [str(d) for d in dirs])

    return set_path


def _checkout(root: Path) -> Path:
    (root / "csrc").mkdir(parents=True)
    (root / "setup.py").write_text("")
    (root / "flexrec").mkdir()
    (root / "flexrec" / "__init__.py").write_text("")
    return root / "flexrec"


def test_diagnose_names_the_shadowed_install_and_both_ways_out(tmp_path, import_path):
    checkout = _checkout(tmp_path / "repo")
    _fake_extension(tmp_path / "site-packages" / "flexrec")
    import_path(tmp_path / "repo", tmp_path / "site-packages")
    msg = extension.diagnose(checkout, "ImportError: cannot import name '_C'")
    assert f"source checkout {checkout}" in msg
    assert f"installed flexrec at {(tmp_path / 'site-packages' / 'flexrec').resolve()}" in msg
    assert "run from another directory" in msg
    assert "pip install --no-build-isolation -e ." in msg


def test_diagnose_finds_an_editable_install_through_its_finder(tmp_path, monkeypatch, import_path):
    # setuptools' editable installs map the package with a meta-path finder, not a sys.path entry
    checkout = _checkout(tmp_path / "repo")
    _fake_extension(tmp_path / "dev" / "flexrec")

    class Finder:
        @staticmethod
        def find_spec(name, path=None, target=None):
            if name != "flexrec":
                return None
            from importlib.machinery import ModuleSpec

            spec = ModuleSpec("flexrec", None, is_package=True)
            spec.submodule_search_locations = [str(tmp_path / "dev" / "flexrec")]
            return spec

    import_path(tmp_path / "repo")
    monkeypatch.setattr(sys, "meta_path", [Finder(), *sys.meta_path])
    msg = extension.diagnose(checkout, "ImportError: x")
    assert f"installed flexrec at {(tmp_path / 'dev' / 'flexrec').resolve()}" in msg


def test_diagnose_other_cases(tmp_path, import_path):
    checkout = _checkout(tmp_path / "repo")
    import_path(tmp_path / "repo")
    # a checkout and nothing installed elsewhere: build it in place
    msg = extension.diagnose(checkout, "ImportError: x")
    assert "has no compiled module" in msg and "pip install --no-build-isolation -e ." in msg
    assert "another directory" not in msg
    # a compiled module that fails to load (a torch mismatch): rebuild against this torch
    _fake_extension(tmp_path / "installed" / "flexrec")
    msg = extension.diagnose(tmp_path / "installed" / "flexrec", "ImportError: undefined symbol: _ZN3c10")
    assert "undefined symbol" in msg and f"torch {torch.__version__}" in msg


def test_load_warns_once_or_raises_when_required(monkeypatch):
    monkeypatch.setitem(sys.modules, "flexrec._C", None)  # makes `from flexrec import _C` fail
    monkeypatch.delattr(sys.modules["flexrec"], "_C", raising=False)
    monkeypatch.delenv("FLEXREC_REQUIRE_C", raising=False)
    with pytest.warns(RuntimeWarning, match="flexrec._C did not load") as record:
        module, why = extension.load()
    assert module is None and why and len(record) == 1
    monkeypatch.setenv("FLEXREC_REQUIRE_C", "1")
    with pytest.raises(ImportError, match="FLEXREC_REQUIRE_C=1 but flexrec._C did not load"):
        extension.load()


def test_info_prints_every_op(capsys):
    info.main()
    out = capsys.readouterr().out
    assert "flexrec._C   loaded" in out
    for op in backend.REGISTRY:
        assert re.search(rf"^{op}\s+\S+\s+\S+$", out, re.M), op


def test_no_module_outside_ops_imports_a_private_ops_name():
    pattern = re.compile(r"flexrec\.ops\._|from flexrec\.ops import[^\n]*\b_\w+|flexrec\.(backend|_ext)\b")
    offenders = []
    for path in (ROOT / "flexrec").rglob("*.py"):
        if path.is_relative_to(ROOT / "flexrec" / "ops") or path.is_relative_to(ROOT / "flexrec" / "kernels"):
            continue
        for line in path.read_text().splitlines():
            if pattern.search(line):
                offenders.append(f"{path.relative_to(ROOT)}: {line.strip()}")
    assert not offenders, offenders
