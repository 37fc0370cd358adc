"""The package's layout holds: no import cycles, no private names across packages, one definition per setting."""

import ast
import inspect
from pathlib import Path

import pytest

import flexrec

ROOT = Path(flexrec.__file__).parent
# The compiled extension is private to flexrec and loaded in exactly one place (the ops' extension loader).
PRIVATE_ALLOWED = {"flexrec._C"}


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        if "kernels" in path.relative_to(ROOT).parts[:1]:
            continue  # flexrec.kernels: the Triton kernels (they import no other flexrec module)
        parts = ("flexrec",) + path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> list[tuple[str, str]]:
    """(imported module, imported name or "") of every flexrec import in a module, at any depth."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(a.name, "") for a in node.names if a.name.startswith("flexrec")]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(up + ([base] if base else []))
            if not base.startswith("flexrec"):
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.append((sub, "") if sub in MODULES or sub == "flexrec._C" else (base, alias.name))
    return found


def _graph() -> dict[str, set[str]]:
    graph = {}
    for name, path in MODULES.items():
        graph[name] = {m for m, _ in _imports(name, path) if m in MODULES and m != name}
    return graph


def test_no_import_cycles():
    """Tarjan's strongly connected components of the module import graph (every import, also inside functions)."""
    graph, index, low, stack, on, cycles, counter = _graph(), {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def _package(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 2 or (len(parts) == 2 and MODULES.get(module, Path()).name == "__init__.py") \
        else "flexrec"


def test_no_private_names_across_packages():
    bad = []
    for name, path in MODULES.items():
        for module, item in _imports(name, path):
            private = item.startswith("_") or any(p.startswith("_") and p != "__main__" for p in module.split(".")[1:])
            if private and module not in PRIVATE_ALLOWED and _package(module) != _package(name):
                bad.append(f"{name} imports {module}{'.' + item if item else ''}")
    assert not bad, bad


def test_user_splits_have_one_definition():
    from flexrec.config import USER_SPLITS
    from flexrec.data import build_examples, split_users
    from flexrec.eval import DataSpec

    assert inspect.signature(split_users).parameters["fractions"].default == USER_SPLITS
    assert inspect.signature(build_examples).parameters["split_fractions"].default == USER_SPLITS
    assert tuple(DataSpec().split_fractions) == USER_SPLITS


def test_evaluation_defaults_are_the_trainers():
    from flexrec.config import TrainConfig
    from flexrec.eval import DataSpec

    cfg, spec = TrainConfig(), DataSpec()
    for name in ("data", "seed", "num_candidates", "world_users", "world_items", "world_topics", "observe_fraction"):
        assert getattr(spec, name) == getattr(cfg, name), name


def test_tiny_model_size_has_one_definition():
    from flexrec.config import TrainConfig
    from flexrec.models.presets import TINY_CONFIG
    from flexrec.train.build import tiny_overrides

    cfg = TrainConfig()
    assert TINY_CONFIG["num_hidden_layers"] == cfg.tiny_layers == tiny_overrides(cfg)["num_hidden_layers"]
    assert TINY_CONFIG["hidden_size"] == cfg.tiny_hidden == tiny_overrides(cfg)["hidden_size"]
    assert TINY_CONFIG["intermediate_size"] == tiny_overrides(cfg)["intermediate_size"]


def test_reward_modes_have_one_definition():
    from flexrec.config import REWARD_MODES, ConfigError, TrainConfig, validate
    from flexrec.data import NEEDS
    from flexrec.ops.reference import REWARD_MODES as OP_MODES

    for mode in REWARD_MODES:
        validate(TrainConfig(reward_mode=mode), NEEDS)
        assert REWARD_MODES[mode][0] in OP_MODES
    with pytest.raises(ConfigError, match="--reward-mode"):
        validate(TrainConfig(reward_mode="ppo"), NEEDS)


def test_evaluation_batch_has_one_definition():
    from flexrec.config import EVAL_BATCH
    from flexrec.eval import mean_metrics, rank_all
    from flexrec.runs import TrainedRun

    for fn in (rank_all, mean_metrics, TrainedRun.rank):
        assert inspect.signature(fn).parameters["batch_size"].default == EVAL_BATCH, fn
