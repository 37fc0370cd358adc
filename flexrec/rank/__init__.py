"""Rankings out: rank your users' candidates for a stated need with a trained run.

    python -m flexrec.rank --run runs/flexrec --input requests.jsonl --output rankings.jsonl

or in Python ``flexrec.load_run("runs/flexrec").rank_requests([request, ...])``. A request (one JSON object
per line of the input):

    {"id": "alice",                                   # optional; default: the request's 1-based line
     "history": ["i12", {"item": "Film 3", "rating": 4}, ["i7", 5]],  # oldest first: item ids or titles,
                                                      # each optionally with a rating on the data's scale
     "candidates": ["i1", "i5", "i9"],                # 1..K item ids or titles
     "need": "maximize_interest"}                     # a registered need, or free text (a model that reads it)

``"user": "u17"`` instead of ``"history"`` takes that user's history from the run's data. A history item
without a rating counts as the top of the data's rating scale (an interaction as a sign of interest). Items
are the run's catalogue (its data's item ids or exact titles); trend tiers are those of the data's last
``trend_window`` days.

Each answer, in request order: ``{"id", "ranking": [item ids, best first], "probs": [the probability of each
pick at its step, under the model's masked softmax over the items still unranked], "error": null}``, or
``{"id", "ranking": null, "probs": null, "error": "what is wrong"}`` for a request that cannot be ranked (an
unknown item, no candidates, more candidates than the model's K slots, a repeated candidate, free text for a
model that keys on need tags, ...). The other requests are ranked all the same.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from flexrec.data import NEEDS, RankingExample
from flexrec.data.world import InteractionData, SparseLabels


class RequestError(ValueError):
    """What is wrong with one request (its answer's ``error``)."""


@dataclasses.dataclass
class Prepared:
    """A request checked and resolved against the run's catalogue (item indices, the need's instruction)."""

    position: int
    id: Any
    need: str
    instruction: str
    threshold: float
    history_items: np.ndarray
    history_feedback: np.ndarray
    candidates: np.ndarray


class Catalogue:
    """Item ids and titles of a dataset -> item indices."""

    def __init__(self, data: InteractionData):
        self.data = data
        self.keys = list(data.item_keys) or [str(i) for i in range(data.n_items)]
        self.by_key = {k: i for i, k in enumerate(self.keys)}
        self.by_title: dict[str, list[int]] = {}
        for i, title in enumerate(data.item_titles):
            self.by_title.setdefault(title.strip(), []).append(i)

    def index(self, value: Any, where: str) -> int:
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise RequestError(f"{where}: expected an item id or title, got {json.dumps(value)}")
        text = str(value).strip()
        if text in self.by_key:
            return self.by_key[text]
        hits = self.by_title.get(text, [])
        if len(hits) == 1:
            return hits[0]
        if hits:
            ids = ", ".join(self.keys[i] for i in hits[:5])
            raise RequestError(f"{where}: the title {text!r} names {len(hits)} items ({ids}); give the item id")
        raise RequestError(f"{where}: unknown item {text!r}: neither an item id nor a title in the run's data "
                           f"{self.data.name!r} ({self.data.n_items} items, ids like {self.keys[0]!r})")


def parse_need(value: Any, compact: bool) -> tuple[str, str, float]:
    """(need name, instruction, relevance threshold) of a request's "need"."""
    if not isinstance(value, str) or not value.strip():
        raise RequestError(f"need: expected a registered need ({', '.join(NEEDS)}) or free text, got "
                           f"{json.dumps(value)}")
    text = value.strip()
    if text in NEEDS:
        need = NEEDS[text]
        return need.name, need.instructions[0], need.threshold
    if compact:
        raise RequestError(f"need {text!r}: this run's model reads compact prompts keyed on a need tag and cannot "
                           f"follow free text; give a registered need: {', '.join(NEEDS)}")
    return "free_text", text, 0.5


def parse_history(request: dict, data: InteractionData, catalogue: Catalogue) -> tuple[np.ndarray, np.ndarray]:
    """The request's history as (items, feedback). Shapes: (T,), (T,)."""
    if "user" in request and "history" not in request:
        keys = {str(k): u for u, k in enumerate(data.user_keys)}
        user = keys.get(str(request["user"]).strip())
        if user is None:
            raise RequestError(f"user: unknown user {request['user']!r} in the run's data {data.name!r}; "
                               "give a history instead")
        items, feedback, _ = data.history(user)
        return items.copy(), feedback.copy()
    history = request.get("history", [])
    if not isinstance(history, list):
        raise RequestError(f"history: expected a list of items, got {json.dumps(history)[:60]}")
    top = float(data.interest_range[1])
    items, feedback = [], []
    for n, entry in enumerate(history):
        where = f"history[{n}]"
        rating: Any = None
        if isinstance(entry, dict):
            if "item" not in entry:
                raise RequestError(f"{where}: expected {{\"item\": ID_OR_TITLE, \"rating\": NUMBER}}, got "
                                   f"{json.dumps(entry)}")
            entry, rating = entry["item"], entry.get("rating")
        elif isinstance(entry, list):
            if len(entry) != 2:
                raise RequestError(f"{where}: expected [ID_OR_TITLE, RATING], got {json.dumps(entry)}")
            entry, rating = entry
        items.append(catalogue.index(entry, where))
        if rating is None:
            feedback.append(top)
        elif isinstance(rating, (int, float)) and not isinstance(rating, bool) and math.isfinite(rating):
            feedback.append(float(rating))
        else:
            raise RequestError(f"{where}: the rating {json.dumps(rating)} is not a number")
    return np.array(items, np.int64), np.array(feedback, np.float32)


def prepare(position: int, request: Any, data: InteractionData, catalogue: Catalogue, K: int,
            compact: bool) -> Prepared:
    """Check one request; raises RequestError with what is wrong."""
    if not isinstance(request, dict):
        raise RequestError("expected a JSON object with candidates and need, got "
                           f"{json.dumps(request, default=str)[:60]}")
    candidates = request.get("candidates")
    if not isinstance(candidates, list) or not candidates:
        raise RequestError("candidates: expected a non-empty list of item ids or titles, got "
                           f"{json.dumps(candidates)}")
    if len(candidates) > K:
        raise RequestError(f"candidates: {len(candidates)} items, more than this model's K={K} slots "
                           f"(<c0>..<c{K - 1}>); split the list, or train with --num-candidates {len(candidates)}")
    cands = np.array([catalogue.index(c, f"candidates[{n}]") for n, c in enumerate(candidates)], np.int64)
    repeated = [catalogue.keys[i] for i in np.unique(cands) if (cands == i).sum() > 1]
    if repeated:
        raise RequestError(f"candidates: {repeated[0]!r} appears more than once")
    need, instruction, threshold = parse_need(request.get("need"), compact)
    h_items, h_feedback = parse_history(request, data, catalogue)
    return Prepared(position, request.get("id", position + 1), need, instruction, threshold, h_items, h_feedback,
                    cands)


def request_view(data: InteractionData, prepared: list[Prepared]) -> InteractionData:
    """``data`` with the requests as its users: user j's history is request j's, its cutoff the day after the
    data's last (trend tiers from the latest days); no labels. What prompts are rendered from."""
    lengths = [len(p.history_items) for p in prepared]
    now = int(data.daily_popularity.shape[0])
    empty = SparseLabels(data.n_items, np.zeros(0, np.int64), np.zeros(0, np.float32))
    items = np.concatenate([p.history_items for p in prepared]) if prepared else np.zeros(0, np.int64)
    feedback = np.concatenate([p.history_feedback for p in prepared]) if prepared else np.zeros(0, np.float32)
    return dataclasses.replace(
        data, history_ptr=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        history_items=items.astype(np.int64), history_feedback=feedback.astype(np.float32),
        history_days=np.full(len(items), max(now - 1, 0), np.int64), cutoff_day=np.full(len(prepared), now, np.int64),
        true_interest=empty, observed=empty, user_keys=[str(p.id) for p in prepared])


def example_of(j: int, p: Prepared) -> RankingExample:
    n = len(p.candidates)
    zeros = np.zeros(n, np.float32)
    return RankingExample(j, p.need, p.instruction, p.candidates, zeros, zeros, np.zeros(n, bool), p.history_items,
                          p.history_feedback, p.threshold)


def rank_requests(run, requests: Iterable[Any], batch_size: int = 64, progress: bool = False,
                  with_prompts: bool = False, prompts_only: bool = False) -> list[dict]:
    """Rank each request with a TrainedRun (see the module docstring); one answer per request, in order.

    ``with_prompts`` adds each ranked request's prompt text ("prompt"). ``prompts_only`` ranks nothing: each
    answer is ``{"id", "prompt", "candidates": [item ids, slot order], "error"}``, what a model exported with
    ``flexrec.export`` is given to rank elsewhere.
    """
    from flexrec.train.build import use_compact_prompts

    requests = list(requests)
    data, K = run.data, run.config.num_candidates
    catalogue, compact = Catalogue(data), use_compact_prompts(run.config)
    answers: list[dict] = [{} for _ in requests]
    prepared: list[Prepared] = []
    for n, request in enumerate(requests):
        default_id = request.get("id", n + 1) if isinstance(request, dict) else n + 1
        try:
            if isinstance(request, RequestError):  # a line of the input that was not JSON
                raise request
            prepared.append(prepare(n, request, data, catalogue, K, compact))
        except RequestError as err:
            answers[n] = {"id": default_id, "ranking": None, "probs": None, "error": str(err)}
    view = request_view(data, prepared)
    examples = [example_of(j, p) for j, p in enumerate(prepared)]
    # Batches of one candidate count (a batch decodes one K); order kept within each.
    groups: dict[int, list[int]] = {}
    for j, ex in enumerate(examples):
        groups.setdefault(ex.K, []).append(j)
    batches = [members[s:s + batch_size] for members in groups.values() for s in range(0, len(members), batch_size)]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(requests), desc="flexrec.rank", dynamic_ncols=True, file=sys.stderr)
        bar.update(len(requests) - len(prepared))
    run.policy.eval()
    for batch in batches:
        for j, answer in zip(batch, rank_batch(run, view, [examples[j] for j in batch], with_prompts, prompts_only)):
            p = prepared[j]
            if prompts_only and "error" not in answer:
                answer = {"prompt": answer["prompt"], "candidates": [catalogue.keys[i] for i in p.candidates],
                          "error": None}
            answers[p.position] = {"id": p.id, **answer} if "error" in answer else {
                "id": p.id, "ranking": [catalogue.keys[i] for i in answer["ranking"]], "probs": answer["probs"],
                "error": None, **({"prompt": answer["prompt"]} if with_prompts else {})}
        if bar is not None:
            bar.update(len(batch))
    if bar is not None:
        bar.close()
    return answers


@torch.no_grad()
def rank_batch(run, view: InteractionData, examples: list[RankingExample], with_prompts: bool,
               prompts_only: bool = False) -> list[dict]:
    """Greedy rankings of examples that share K; a batch that fails is retried one request at a time, so
    one bad request (a prompt over the token budget, ...) fails alone."""
    try:
        batch = run.collate(examples, run.tokenizer, view)
        if prompts_only:
            return [{"prompt": prompt} for prompt in batch.prompts]
        out = run.policy.rank(batch.input_ids.to(run.device), batch.attention_mask.to(run.device), examples[0].K,
                              greedy=True)
    except ValueError as err:
        if len(examples) > 1:
            return [a for ex in examples for a in rank_batch(run, view, [ex], with_prompts, prompts_only)]
        return [{"ranking": None, "probs": None, "error": str(err)}]
    perm, probs = out.perm[:, 0].cpu(), out.logprob[:, 0].float().exp().cpu()
    return [{"ranking": ex.items[perm[b].numpy()].tolist(), "probs": [round(float(x), 6) for x in probs[b]],
             **({"prompt": batch.prompts[b]} if with_prompts else {})} for b, ex in enumerate(examples)]


def read_requests(path: str) -> list[Any]:
    """A JSON Lines file (one request per line; blank lines skipped), or a JSON list; "-" reads stdin.
    A line that is not JSON becomes a RequestError in its place, answered as an error."""
    text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        return json.loads(text)
    out: list[Any] = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as err:
            out.append(RequestError(f"{path}, line {n}: not JSON ({err.msg})"))
    return out
