"""``python -m flexrec.rank --run DIR --input requests.jsonl --output rankings.jsonl``: see ``flexrec.rank``."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Optional

from flexrec.rank import __doc__ as _DOC, read_requests


def write_atomic(path: str, lines: list[str]) -> None:
    """Write the whole file or nothing: a temporary file beside it, renamed into place."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(dir=target.parent if str(target.parent) else ".", prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.writelines(line + "\n" for line in lines)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flexrec.rank", description=_DOC.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="a run directory of python -m flexrec.train")
    parser.add_argument("--input", required=True, help="requests, JSON Lines (or a JSON list); - for stdin")
    parser.add_argument("--output", default="-", help="answers, JSON Lines; - for stdout (the default)")
    parser.add_argument("--batch-size", type=int, default=64, help="requests decoded together")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 or auto")
    parser.add_argument("--with-prompts", action="store_true", help="add each request's prompt text to its answer")
    parser.add_argument("--prompts-only", action="store_true",
                        help="rank nothing: write each request's prompt and candidates (for flexrec.export's model)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    from flexrec.runs import load_run

    try:
        requests = read_requests(args.input)
        run = load_run(args.run, device=args.device, flag="--run")
    except (ValueError, FileNotFoundError) as err:
        print(f"flexrec.rank: error: {err}", file=sys.stderr)
        return 2
    answers = run.rank_requests(requests, batch_size=args.batch_size, progress=not args.no_progress,
                                with_prompts=args.with_prompts, prompts_only=args.prompts_only)
    lines = [json.dumps(a, ensure_ascii=False) for a in answers]
    if args.output == "-":
        sys.stdout.write("".join(line + "\n" for line in lines))
    else:
        write_atomic(args.output, lines)
    failed = [a for a in answers if a["error"]]
    print(f"flexrec.rank: {'rendered' if args.prompts_only else 'ranked'} {len(answers) - len(failed)} of "
          f"{len(answers)} requests"
          + ("" if args.output == "-" else f" -> {args.output}")
          + (f"; {len(failed)} with an error:" if failed else ""), file=sys.stderr)
    for a in failed[:10]:
        print(f"  {a['id']}: {a['error']}", file=sys.stderr)
    if len(failed) > 10:
        print(f"  ... and {len(failed) - 10} more (see the output)", file=sys.stderr)
    return 0 if len(failed) < len(answers) or not answers else 1


if __name__ == "__main__":
    sys.exit(main())
