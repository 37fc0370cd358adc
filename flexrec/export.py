"""Hand a trained run to a serving stack: a standard Hugging Face model directory.

    python -m flexrec.export --run runs/flexrec --out models/flexrec

writes ``config.json`` + ``model.safetensors`` (LoRA adapters, if the run trained any, merged into the
weights), the tokenizer with the slot tokens ``<c0>..<c{K-1}>`` (and, for the tiny model, the need tags),
its chat template, and ``flexrec.json``: K, the slot token ids, and which prompt the model reads.
``AutoModelForCausalLM.from_pretrained(DIR)`` and ``AutoTokenizer.from_pretrained(DIR)`` load it without
flexrec; docs/your-data-and-serving.md has the lines that rank with plain transformers (a logits processor
that allows only the slot tokens of the candidates not ranked yet, greedy ``generate`` of n tokens for n
candidates), and tests/test_export.py checks they rank as ``load_run`` does.

The prompt text comes from flexrec (``python -m flexrec.rank --prompts-only``): a model that reads compact
prompts (the tiny model) needs flexrec's per-candidate feature lines; a real LLM reads the full chat prompt.

The directory is written whole or not at all: into a temporary directory beside ``--out``, renamed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Optional

FLEXREC_JSON = "flexrec.json"
PROMPTS = {
    "compact": "flexrec.data.prompts.compact_prompt: one line per candidate (its topics, trend tier, whether its "
               "topic is in the user's history and the user's mean rating there) ending in its slot token, then the "
               "need's instruction and its tag <need:NAME>; no chat template",
    "full": "flexrec.data.prompts.render_prompt: system and user turns (need, recent history, candidates named by "
            "slot tokens) through the tokenizer's chat template, with the generation prompt",
}


def export(run_dir: str | Path, out: str | Path, overwrite: bool = False, device: str = "cpu") -> Path:
    """Write the run's policy as a Hugging Face model directory at ``out`` (see the module docstring)."""
    import flexrec
    from flexrec.data import NEEDS, slot_token_ids
    from flexrec.runs import load_run
    from flexrec.train.build import use_compact_prompts

    out = Path(out)
    if out.exists() and not (out.is_dir() and (overwrite or not any(out.iterdir()))):
        raise ValueError(f"{out} exists; pass --overwrite to replace it")
    run = load_run(run_dir, device=device, flag="--run")
    model = run.policy.model
    if hasattr(model, "merge_and_unload"):  # a peft model: fold the LoRA adapters into the base weights
        model = model.merge_and_unload()
    model = model.to("cpu")
    K = run.config.num_candidates
    compact = use_compact_prompts(run.config)
    tok = run.tokenizer
    info = {
        "flexrec_version": flexrec.__version__,
        "K": K,
        "slot_tokens": [f"<c{i}>" for i in range(K)],
        "slot_token_ids": slot_token_ids(tok, K),
        "prompt": "compact" if compact else "full",
        "prompt_format": PROMPTS["compact" if compact else "full"],
        "decoding": "candidate i of the prompt is <ci>; emit n slot tokens for n candidates, each step greedy over "
                    "the slot tokens of the candidates not ranked yet (the probabilities are the softmax over them)",
        "needs": {name: {"instruction": need.instructions[0], "threshold": need.threshold}
                  for name, need in NEEDS.items()},
        "trained_needs": run.config.need,
        "need_tags": {name: tok.convert_tokens_to_ids(f"<need:{name}>") for name in NEEDS} if compact else {},
        "data": run.config.data,
        "source_run": str(Path(run_dir).resolve()),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; a model directory is read by the serving stack's user
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / FLEXREC_JSON).write_text(json.dumps(info, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flexrec.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="a run directory of python -m flexrec.train")
    parser.add_argument("--out", required=True, help="the model directory to write")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    args = parser.parse_args(argv)
    try:
        out = export(args.run, args.out, args.overwrite)
    except (ValueError, FileNotFoundError) as err:
        print(f"flexrec.export: error: {err}", file=sys.stderr)
        return 2
    info = json.loads((out / FLEXREC_JSON).read_text())
    files = ", ".join(sorted(p.name for p in out.iterdir()))
    print(f"flexrec.export: {out}: K={info['K']}, {info['prompt']} prompts; {files}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
