"""Ranking examples: one (user, need, instruction, K candidates, labels) each, ready for prompts.

What `build_examples` does with awkward users (never a silent drop; counts go to `logging`):
- a user with an empty history is skipped (nothing to personalise from), unless `keep_empty_history`;
- a user with fewer than K eligible items is skipped (a pool must have exactly K items; on the real-data
  protocol only items of known truth are eligible);
- a pool with no item above the need's threshold is kept (its rewards are all zero, FLEXREC.md
  section 3), and counted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from flexrec.config import USER_SPLITS

from .needs import NEEDS, get_need, pool_labels
from .pools import PoolTooSmallError, build_pool, pool_rng, split_users
from .world import InteractionData

log = logging.getLogger(__name__)


@dataclass
class RankingExample:
    """One need-conditioned ranking task.

    Shapes:
        items, true_labels, observed_labels, observed_mask: (K,), aligned with slots <c0>..<c{K-1}>;
        history_items, history_feedback: (T,), oldest first, all before the candidates.
    Labels are in [0, 1]; an item is relevant (Recall) when true_labels >= threshold.
    """

    user: int
    need: str
    instruction: str
    items: np.ndarray
    true_labels: np.ndarray
    observed_labels: np.ndarray
    observed_mask: np.ndarray
    history_items: np.ndarray
    history_feedback: np.ndarray
    threshold: float
    heldout_instruction: bool = False

    @property
    def K(self) -> int:
        return len(self.items)

    @property
    def relevant(self) -> np.ndarray:
        """Shapes: (K,) bool."""
        return self.true_labels >= self.threshold


def make_example(data: InteractionData, user: int, need: str, K: int = 30, seed: int = 0,
                 heldout_instructions: bool = False, **pool_options) -> RankingExample:
    """Build the example of one (user, need). Raises PoolTooSmallError if the user has < K eligible items."""
    need_ = get_need(need)
    items = build_pool(data, user, need_.name, K=K, seed=seed, **pool_options)
    true, _ = pool_labels(data, user, items, need_)
    observed, mask = pool_labels(data, user, items, need_, observed=True)
    choices = need_.heldout if heldout_instructions else need_.instructions
    if not choices:
        kind = "held-out" if heldout_instructions else "training"
        raise ValueError(f"need {need_.name!r} has no {kind} instructions")
    instruction = choices[int(pool_rng(seed + 1, user, need_.name).integers(len(choices)))]
    h_items, h_feedback, _ = data.history(user)
    return RankingExample(user, need_.name, instruction, items, true, observed, mask,
                          h_items.copy(), h_feedback.copy(), need_.threshold, heldout_instructions)


def build_examples(data: InteractionData, needs: list[str] | None = None, split: str = "train",
                   K: int = 30, seed: int = 0, heldout_instructions: bool = False,
                   split_fractions: tuple[float, float, float] = USER_SPLITS,
                   max_users: int | None = None, keep_empty_history: bool = False,
                   **pool_options) -> list[RankingExample]:
    """Examples for every user of `split` ("train" | "val" | "test" | "all") and every need.

    Ordered by user, then need. `needs` defaults to every registered need. `max_users` keeps the
    first users of the split (by id), for quick runs. Splits use `seed`, so train/val/test never
    share a user for a given seed. `pool_options` go to `build_pool` (min_relevant, known_share, mix).
    """
    needs = list(NEEDS) if needs is None else [get_need(n).name for n in needs]
    if split == "all":
        users = np.arange(data.n_users)
    else:
        splits = split_users(data, split_fractions, seed)
        if split not in splits:
            raise ValueError(f"unknown split {split!r}; use one of train, val, test, all")
        users = splits[split]
    users = users[:max_users] if max_users is not None else users

    examples, empty, too_small, no_relevant = [], 0, 0, {n: 0 for n in needs}
    for user in users:
        user = int(user)
        if data.history_ptr[user] == data.history_ptr[user + 1] and not keep_empty_history:
            empty += 1
            continue
        try:
            for need in needs:
                ex = make_example(data, user, need, K, seed, heldout_instructions, **pool_options)
                no_relevant[need] += not ex.relevant.any()
                examples.append(ex)
        except PoolTooSmallError:
            too_small += 1
            examples = [e for e in examples if e.user != user]
    if empty:
        log.warning("%s/%s: skipped %d users with an empty history", data.name, split, empty)
    if too_small:
        log.warning("%s/%s: skipped %d users with fewer than K=%d %s", data.name, split, too_small, K,
                    "items of known truth (the real-data protocol)" if data.pools_from_known else "eligible items")
    for need, count in no_relevant.items():
        if count:
            log.info("%s/%s: %d %s pools have no relevant item (their rewards are all zero)",
                     data.name, split, count, need)
    return examples
