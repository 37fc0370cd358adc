"""``python -m flexrec.eval``: per-need ranking metrics of a baseline or a trained run.

    python -m flexrec.eval --baseline bpr --data synthetic
    python -m flexrec.eval --checkpoint runs/flexrec --json results/eval.json

For every need: NDCG@5, NDCG@10, NDCG@30, Recall@5 and MRR@5 on the test users (or ``--split val``),
each with a 95% bootstrap interval over users (FLEXREC.md section 7), on the TRUE labels only. A row
"mean" averages each user's metric over the needs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional

from flexrec.eval.evaluate import DataSpec, evaluate, format_table, load_examples, results_to_json, run_spec


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m flexrec.eval", description=__doc__.split("\n\n")[0].strip("`"))
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--baseline", help="random | popularity | item-knn | bpr | sasrec")
    which.add_argument("--checkpoint", help="a run directory of python -m flexrec.train")
    p.add_argument("--data", default=None, help="synthetic | ml-100k | a dataset path (default: the run's, or synthetic)")
    p.add_argument("--seed", type=int, default=None, help="world, split and pool seed (default: the run's, or 0)")
    p.add_argument("--num-candidates", type=int, default=None, help="K (default: the run's, or 10)")
    p.add_argument("--world-users", type=int, default=None)
    p.add_argument("--world-items", type=int, default=None)
    p.add_argument("--world-topics", type=int, default=None)
    p.add_argument("--needs", default="all", help="'all' or a comma-separated list")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--max-users", type=int, default=None, help="evaluate only the first N users of the split")
    p.add_argument("--heldout-instructions", action="store_true", help="use the held-out paraphrases")
    p.add_argument("--gain", default="linear", choices=("linear", "exp"))
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: TrainConfig.threads, 1)")
    p.add_argument("--json", default=None, help="also write the results here")
    return p


def resolve_spec(args, run_config: Optional[dict] = None) -> DataSpec:
    """Flags, else the run's saved config, else the trainer's defaults."""
    spec, cfg = DataSpec(), run_config or {}
    for name in ("data", "seed", "num_candidates", "world_users", "world_items", "world_topics", "observe_fraction"):
        flag = getattr(args, name, None)
        value = flag if flag is not None else cfg.get(name, getattr(spec, name))
        setattr(spec, name, value)
    spec.needs, spec.split, spec.max_users = args.needs, args.split, args.max_users
    spec.heldout_instructions = args.heldout_instructions
    return spec


def main(argv: Optional[list[str]] = None) -> dict:
    from flexrec.config import set_threads

    args = build_parser().parse_args(argv)
    set_threads(args.threads)
    if args.baseline:
        from flexrec.baselines import make_baseline

        spec = resolve_spec(args)
        data, examples, train_users = load_examples(spec)
        ranker, method = make_baseline(args.baseline, data, train_users, seed=spec.seed), args.baseline
    else:
        from flexrec.runs import load_run
        from flexrec.train.rundir import read_run_config, train_config

        run_config = read_run_config(args.checkpoint)
        spec = resolve_spec(args, run_config)
        spec.options = run_spec(train_config(run_config)).options
        data, examples, _ = load_examples(spec)
        ranker, method = load_run(args.checkpoint, device=args.device, flag="--checkpoint"), args.checkpoint
    results = evaluate(ranker, examples, gain=args.gain, n_boot=args.n_boot, seed=spec.seed)
    title = (f"{method} on {spec.data} ({spec.split} users, K={spec.num_candidates}, seed {spec.seed}, "
             f"{'held-out' if spec.heldout_instructions else 'training'} instructions); mean [95% bootstrap CI]")
    print(format_table(results, title))
    report = {"method": method, "spec": vars(spec), "gain": args.gain, "n_boot": args.n_boot,
              "results": results_to_json(results)}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2, default=str))
        print(f"wrote {args.json}", file=sys.stderr)
    return report


if __name__ == "__main__":
    try:
        main()
    except (ValueError, FileNotFoundError) as err:  # a bad run directory, checkpoint or data path: say it, no traceback
        print(f"python -m flexrec.eval: error: {err}", file=sys.stderr)
        sys.exit(2)
