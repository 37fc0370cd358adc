"""flexrec.export: the exported directory loads in a process that cannot import flexrec and ranks as load_run
does, through the lines docs/your-data-and-serving.md gives; the doc's commands work as written."""

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from flexrec.export import FLEXREC_JSON, export, main
from flexrec.runs import load_run

from test_rank import requests_of, same_instruction, tiny_run  # tests/ is on sys.path (pytest's rootdir import)

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]  # the checkout under test
DOC = ROOT / "docs" / "your-data-and-serving.md"
# Runs a script with flexrec unimportable: `import flexrec` (by it, or by anything it loads) raises ImportError.
NO_FLEXREC = "import sys; sys.modules['flexrec'] = None; sys.argv = sys.argv[1:]; exec(open(sys.argv[0]).read())"


def doc_blocks() -> list[tuple[str, str]]:
    """(language, code) of every fenced block of the doc, in order."""
    return re.findall(r"```(\w+)\n(.*?)```", DOC.read_text(), re.S)


def serve_script() -> str:
    (code,) = [code for lang, code in doc_blocks() if lang == "python" and "LogitsProcessor" in code]
    return code


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("export")
    return {"full": tiny_run(base / "full"), "lora": tiny_run(base / "lora", lora_rank=2)}


def serve(model_dir: Path, prompts: list[dict], tmp_path: Path) -> list[dict]:
    """The doc's serve.py, run in a fresh process that cannot import flexrec."""
    (tmp_path / "serve.py").write_text(serve_script())
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps(p) + "\n" for p in prompts))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-c", NO_FLEXREC, "serve.py", str(model_dir), "prompts.jsonl"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return [json.loads(line) for line in result.stdout.splitlines()]


@pytest.mark.parametrize("kind", ["full", "lora"])
def test_exported_model_ranks_as_load_run_without_flexrec(runs, kind, tmp_path):
    run = load_run(runs[kind])
    out = export(runs[kind], tmp_path / "model")
    info = json.loads((out / FLEXREC_JSON).read_text())
    assert info["K"] == 5 and info["prompt"] == "compact"
    assert info["slot_token_ids"] == run.tokenizer.convert_tokens_to_ids([f"<c{i}>" for i in range(5)])
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    if kind == "lora":  # merged: plain weights, no adapter files or LoRA tensors
        from safetensors import safe_open

        assert not (out / "adapter_config.json").exists()
        with safe_open(out / "model.safetensors", "pt") as f:
            assert not [k for k in f.keys() if "lora" in k]
    examples = same_instruction(run)
    requests = requests_of(run, examples)
    requests[0]["candidates"] = requests[0]["candidates"][:3]  # fewer candidates than K: the first n slots
    prompts = run.rank_requests(requests, prompts_only=True) + [{"id": "bad", "error": "skipped by serve.py"}]
    served = serve(out, prompts, tmp_path)
    answers = run.rank_requests(requests)
    keys = run.data.item_keys
    assert served[1]["ranking"] == [keys[i] for i in examples[1].items[run.rank(examples[1:2])[0].numpy()]]
    assert [s["ranking"] for s in served] == [a["ranking"] for a in answers]
    for s, a in zip(served, answers):
        assert s["probs"] == pytest.approx(a["probs"], abs=1e-4)


def test_export_refuses_to_overwrite_and_leaves_nothing_half_built(runs, tmp_path, monkeypatch, capsys):
    out = tmp_path / "model"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["--run", str(runs["full"]), "--out", str(out)]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err and (out / "keep.txt").exists()

    import transformers

    def fail(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(transformers.PreTrainedTokenizerBase, "save_pretrained", fail)
    with pytest.raises(OSError, match="disk full"):
        export(runs["full"], tmp_path / "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no new dir, no temporary one
    monkeypatch.undo()
    assert main(["--run", str(runs["full"]), "--out", str(out), "--overwrite"]) == 0
    assert not (out / "keep.txt").exists() and (out / "config.json").is_file()
    assert f"flexrec.export: {out}: K=5, compact prompts;" in capsys.readouterr().out


@pytest.mark.slow
def test_the_docs_commands_work_as_written(tmp_path):
    """Every block of docs/your-data-and-serving.md in order, in a fresh directory: bash blocks run, the
    serve.py block is saved, other Python blocks run (two tiny ML-100K trainings: 5 minutes on 2 busy cores)."""
    if importlib.util.find_spec("recbole") is None:
        pytest.skip("the doc trains on the ML-100K copy that the recbole wheel bundles")
    env = dict(os.environ)  # the installed flexrec, as a user runs the doc (a checkout may have no compiled module)
    outputs = []
    for lang, code in doc_blocks():
        if lang == "python" and "LogitsProcessor" in code:
            (tmp_path / "serve.py").write_text(code)
        elif lang in ("bash", "python"):
            command = ["bash", "-e", "-c", code] if lang == "bash" else [sys.executable, "-c", code]
            result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
            assert result.returncode == 0, f"{code}\n{result.stderr[-3000:]}"
            outputs.append(result)
    ranked = [json.loads(line) for line in (tmp_path / "rankings.jsonl").read_text().splitlines()]
    served = [json.loads(line) for line in outputs[-1].stdout.splitlines() if line.startswith("{")]  # after export's line
    assert [a["id"] for a in ranked] == ["ann", "user-196", "cosy", "typo"]
    assert [bool(a["error"]) for a in ranked] == [False, False, True, True]
    assert [s["ranking"] for s in served] == [a["ranking"] for a in ranked[:2]]
