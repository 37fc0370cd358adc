"""python -m flexrec.experiments NAME [--size quick|default|full] [--seeds N] [--confirm [--allow-dirty]] [--model ...]

Without --confirm: seeds 0..N-1, every method scored on the validation users (for choosing settings).
With --confirm: the reserved seeds 100..100+N-1 (runner.CONFIRM_SEEDS, never used for any choice), scored on
the test users; this is the final report, and it refuses runs of uncommitted code unless --allow-dirty.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
from typing import Optional

from flexrec.experiments import EXPERIMENTS
from flexrec.experiments.report import write_report
from flexrec.experiments.runner import CONFIRM_SEEDS, SIZES, DirtyTreeError, run_experiment


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m flexrec.experiments",
                                description="Run one of the paper-style experiments and write results/NAME.md.")
    p.add_argument("name", choices=sorted(EXPERIMENTS))
    p.add_argument("--size", default=None, choices=[s for s in SIZES if s != "smoke"] + ["smoke"],
                   help="quick (without --confirm, the default): all five experiments on a 2-core CPU within 30 minutes; "
                        "default: the budget of python -m flexrec.train (about 15 minutes per experiment on CPU); full: a "
                        "GPU run (smoke: tests only). --confirm needs it given: the size the settings were chosen at")
    p.add_argument("--seeds", type=int, default=None,
                   help="seeds 0..N-1 (each its own world, split and runs; default 3), or with --confirm the first N "
                        f"of the reserved seeds {CONFIRM_SEEDS[0]}-{CONFIRM_SEEDS[-1]} (default all {len(CONFIRM_SEEDS)})")
    p.add_argument("--confirm", action="store_true",
                   help="the final report: run the reserved confirmation seeds and score the test users (only once "
                        "the settings are frozen; without it every method is scored on validation users)")
    p.add_argument("--allow-dirty", action="store_true",
                   help="with --confirm: accept runs of a tree with uncommitted changes (the report says so at the top)")
    p.add_argument("--model", default="tiny", help="tiny | smollm2-135m | a local Hugging Face model directory")
    p.add_argument("--data", default="synthetic", help="synthetic | ml-100k")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default="results", help="where NAME.md, NAME.json and the plots go")
    p.add_argument("--runs", default="runs/experiments", help="where the training runs go (reused if identical)")
    p.add_argument("--setting", action="append", default=[], metavar="LABEL",
                   help="run only this setting of the experiment (repeatable), e.g. --setting maximize_interest")
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a TrainConfig field for every run, e.g. --set rl_steps=100 (repeatable)")
    return p


def parse_sets(items: list[str]) -> dict:
    """``--set FIELD=VALUE`` items as typed TrainConfig settings (flexrec.config.from_values checks them)."""
    from flexrec.config import ConfigError, from_values

    values = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item!r}: expected FIELD=VALUE, e.g. --set rl_steps=100")
        values[key.strip()] = value.strip()
    try:
        return from_values(values, "--set")
    except ConfigError as err:
        raise SystemExit("\n".join(err.problems)) from None


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    exp = EXPERIMENTS[args.name]
    if args.setting:
        labels = [s.label for s in exp.settings]
        unknown = [x for x in args.setting if x not in labels]
        if unknown:
            raise SystemExit(f"--setting {unknown[0]!r}: {args.name} has the settings {', '.join(map(repr, labels))}")
        exp = dataclasses.replace(exp, settings=[s for s in exp.settings if s.label in args.setting])
    if args.size is None and args.confirm:
        # a final report at an unintended size spends the test users on runs nobody chose (quick is the default
        # for exploring, not for confirming)
        raise SystemExit(f"python -m flexrec.experiments {args.name} --confirm: give --size, the size the settings "
                         "were chosen at (e.g. --size default, the budget of python -m flexrec.train)")
    args.size = args.size or "quick"
    seeds = args.seeds if args.seeds is not None else (len(CONFIRM_SEEDS) if args.confirm else 3)
    try:
        out = run_experiment(exp, args.size, seeds, args.model, args.data, args.device, args.runs,
                             extra=parse_sets(args.set), log=lambda s: print(s, flush=True), confirm=args.confirm,
                             allow_dirty=args.allow_dirty)
        command = "python -m flexrec.experiments " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
        md = write_report(exp, out, args.out, command, seeds, args.size, args.n_boot)
    except (ValueError, DirtyTreeError) as err:
        raise SystemExit(f"python -m flexrec.experiments {args.name}: {err}") from None
    print(md.read_text())
    print(f"wrote {md}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
