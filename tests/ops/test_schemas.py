"""Every schema in csrc/flexrec.cpp matches its Python op, argument for argument.

The compiled op ``flexrec_C::<name>`` is registered as the kernel of the Python op
``flexrec::<name>`` by name (``flexrec.ops.backend.register``), so the two must take the same
arguments in the same order with the same types and return the same things.
"""

import re
from pathlib import Path

import pytest
import torch

from flexrec.ops import backend

CPP = Path(__file__).resolve().parents[2] / "csrc" / "flexrec.cpp"


def cpp_schemas() -> dict[str, str]:
    """name -> schema text of every ``m.def("...")`` in csrc/flexrec.cpp."""
    defs = re.findall(r'm\.def\(\s*"([^"]+)"\s*\)', CPP.read_text())
    assert defs, f"no m.def(...) schema found in {CPP}"
    return {text.split("(", 1)[0].strip(): text for text in defs}


def signature(schema) -> tuple:
    """(name, [(arg name, type, default)], [return types]); SymInt is printed as int."""
    args = [(a.name, str(a.type), a.default_value) for a in schema.arguments]
    return schema.name.split("::", 1)[1], args, [str(r.type) for r in schema.returns]


SCHEMAS = cpp_schemas()


def test_every_compiled_op_has_a_python_op_and_back():
    python_ops = set(backend.REGISTRY)
    assert set(SCHEMAS) == python_ops, (
        f"only in csrc/flexrec.cpp: {sorted(set(SCHEMAS) - python_ops)}; "
        f"only in flexrec/ops: {sorted(python_ops - set(SCHEMAS))}"
    )


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_schema_matches_python_op(name):
    want = signature(torch._C.parse_schema(f"flexrec_C::{SCHEMAS[name]}"))
    assert signature(getattr(torch.ops.flexrec, name).default._schema) == want
    # and the compiled module in use was built from this schema
    assert signature(getattr(torch.ops.flexrec_C, name).default._schema) == want


def test_parser_sees_a_mismatch():
    # The comparison is not vacuous: a renamed argument or a changed type is a difference.
    base = torch._C.parse_schema("flexrec_C::f(Tensor gains, int k, str mode) -> Tensor")
    for other in ("f(Tensor gain, int k, str mode) -> Tensor", "f(Tensor gains, float k, str mode) -> Tensor",
                  "f(Tensor gains, str mode, int k) -> Tensor", "f(Tensor gains, int k, str mode) -> (Tensor, Tensor)"):
        assert signature(torch._C.parse_schema(f"flexrec_C::{other}")) != signature(base)
