"""The needs registry: what a stated need means as graded relevance labels (FLEXREC.md section 2).

A `Need` is a label function over one (user, candidate pool), a relevance threshold (an item counts
for Recall@k when its label >= threshold), training instructions and held-out paraphrases.
Every label is in [0, 1]: interest is first mapped from the dataset's scale by `interest_range`
(ours: one scale for every dataset and need, so rewards and thresholds mean the same thing).

Labels come in two forms (see `pool_labels`):
- true labels, from the dataset's ground truth (evaluation). Where the truth is sparse and pools may hold
  items the user never rated (``pools_from_known`` off), such an item counts as interest 0; the real-data
  protocol puts only items of known truth in pools (docs/real-data-protocol.md);
- observed labels and a mask, from the sparse observed feedback (training; the critic fills the rest).
  The mask is where the user's interest was observed, for every need (even where a need's label would
  not depend on it, e.g. an explore item from a seen topic), so the critic has one mask to learn from.

Films carry several genres and histories are long, so "no genre of it in the history" almost never holds;
on MovieLens an item is new when each of its genres is under ``novelty_share`` of the history instead
(``InteractionData.novel_items``; the share and the pools it leaves: docs/real-data-protocol.md).

Adding a need is a few lines::

    from flexrec.data import register_need
    register_need(
        "hidden_gems",
        label_fn=lambda ctx: ctx.interest * (ctx.popularity <= np.median(ctx.popularity)),
        threshold=0.75,
        instructions=["Find me something great that few people know about.", ...],
        heldout=["Surprise me with an under-the-radar pick."],
    )
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .world import InteractionData


@dataclass
class LabelContext:
    """Everything a label function may use about one user and K candidates.

    Shapes:
        items, interest, known, novel, popularity, recent_popularity: (K,).
        interest is in [0, 1] (0 where unknown); known says where interest is known;
        novel: the item is new to the user (``InteractionData.novel_items``: no topic of it in the history,
        or on real data every topic of it under a small share of the history).
    """

    data: InteractionData
    user: int
    items: np.ndarray
    interest: np.ndarray
    known: np.ndarray
    novel: np.ndarray
    popularity: np.ndarray
    recent_popularity: np.ndarray


@dataclass
class Need:
    """A need: `label_fn(LabelContext) -> labels (K,) in [0, 1]`, Recall threshold, instructions."""

    name: str
    label_fn: Callable[[LabelContext], np.ndarray]
    threshold: float
    instructions: list[str]  # used for training examples
    heldout: list[str]  # never used for training; for the generalisation evaluation


def minmax(x: np.ndarray, where: np.ndarray | None = None) -> np.ndarray:
    """Min-max normalise to [0, 1] over the entries in `where` (all if None); constant -> 0."""
    x = np.asarray(x, np.float32)
    ref = x if where is None else x[where]
    if ref.size == 0:
        return np.zeros_like(x)
    lo, hi = ref.min(), ref.max()
    return np.clip((x - lo) / (hi - lo), 0.0, 1.0) if hi > lo else np.zeros_like(x)


def maximize_interest(ctx: LabelContext) -> np.ndarray:
    """The user's own interest (rating, watch ratio, latent affinity), in [0, 1]."""
    return ctx.interest


def explore_new_topics(ctx: LabelContext) -> np.ndarray:
    """Interest, but only for items new to the user (``InteractionData.novel_items``); 0 otherwise."""
    return np.where(ctx.novel, ctx.interest, 0.0).astype(np.float32)


def trend_promotion(ctx: LabelContext) -> np.ndarray:
    """0.5 * minmax(interest) + 0.5 * minmax(log1p(recent plays)), both min-max within the pool.

    log1p (ours) because plays are heavy-tailed: raw min-max would make one hit 1 and the rest ~0.
    Interest is normalised over the entries whose interest is known (for the observed form).
    """
    return (0.5 * minmax(ctx.interest, ctx.known) * ctx.known
            + 0.5 * minmax(np.log1p(ctx.recent_popularity))).astype(np.float32)


NEEDS: dict[str, Need] = {}


def register_need(name: str, label_fn: Callable[[LabelContext], np.ndarray], threshold: float,
                  instructions: list[str], heldout: list[str] = (), overwrite: bool = False) -> Need:
    """Add a need to `NEEDS` (see the module docstring for an example) and return it."""
    if name in NEEDS and not overwrite:
        raise ValueError(f"need {name!r} is already registered; pass overwrite=True to replace it")
    if not callable(label_fn):
        raise TypeError(f"label_fn of need {name!r} must be callable, got {type(label_fn).__name__}")
    if not instructions or not all(isinstance(s, str) and s.strip() for s in instructions):
        raise ValueError(f"need {name!r} needs at least one non-empty training instruction")
    if set(instructions) & set(heldout):
        raise ValueError(f"need {name!r}: a held-out instruction is also a training instruction")
    NEEDS[name] = Need(name, label_fn, float(threshold), list(instructions), list(heldout))
    return NEEDS[name]


def get_need(name: str | Need) -> Need:
    """The registered need called `name`; an unknown name lists the known ones."""
    if isinstance(name, Need):
        return name
    if name not in NEEDS:
        raise ValueError(f"unknown need {name!r}; known needs: {', '.join(sorted(NEEDS))} "
                         "(add one with flexrec.data.register_need)")
    return NEEDS[name]


def label_context(data: InteractionData, user: int, items: np.ndarray, observed: bool = False) -> LabelContext:
    """Build the context for `items` of `user` from the true interest or the observed feedback."""
    items = np.asarray(items, np.int64)
    source = data.observed if observed else data.true_interest
    raw, known = source.lookup(user, items)
    interest = np.where(known, data.normalized_interest(raw), 0.0).astype(np.float32)
    if not observed:
        # Ground truth: an item the user never rated (MovieLens) counts as interest 0, and is known.
        known = np.ones_like(known)
    novel = data.novel_items(user, items)
    return LabelContext(data, user, items, interest, known, novel,
                        data.item_popularity[items].astype(np.float32),
                        data.recent_popularity(user, items))


def pool_labels(data: InteractionData, user: int, items: np.ndarray, need: str | Need,
                observed: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Labels of one pool for one need, and where they are known.

    Shapes: items (K,) -> labels (K,) float32 in [0, 1], known (K,) bool (all True for true labels;
    for observed labels, True where the user's feedback on that item was observed).
    """
    ctx = label_context(data, user, items, observed)
    labels = np.asarray(get_need(need).label_fn(ctx), np.float32)
    if labels.shape != ctx.items.shape:
        raise ValueError(f"label_fn of need {get_need(need).name!r} returned shape {labels.shape}, "
                         f"expected {ctx.items.shape}")
    return np.where(ctx.known, labels, 0.0).astype(np.float32), ctx.known


register_need(
    "maximize_interest", maximize_interest, threshold=0.75,
    instructions=[
        "Rank these items by how much I will enjoy them.",
        "Put the ones I'd love most at the top.",
        "Which of these suits my taste best? Order them from best to worst for me.",
        "Recommend what I'm most likely to really like.",
        "Sort the candidates by how well they match what I enjoy.",
        "Show me my favourites first.",
    ],
    heldout=[
        "Give me the picks I would rate the highest.",
        "Order these so the best fit for me comes first.",
    ])

register_need(
    "explore_new_topics", explore_new_topics, threshold=0.75,
    instructions=[
        "I want to try something new: rank items from topics I haven't explored yet, that I'd still like.",
        "Help me branch out beyond my usual topics.",
        "Recommend things outside my comfort zone that I'd probably enjoy.",
        "Show me good picks from genres I've never tried.",
        "I'm bored of the same topics; find me something different I'd like.",
        "Prioritise new kinds of items for me, not more of the same.",
    ],
    heldout=[
        "Surprise me with a topic I haven't seen before, but make it one I'd enjoy.",
        "Broaden my horizons with something unfamiliar yet appealing.",
    ])

register_need(
    "trend_promotion", trend_promotion, threshold=0.7,
    instructions=[
        "What's trending right now that I would like?",
        "Rank by what's hot at the moment, but still to my taste.",
        "Show me popular new picks that fit me.",
        "I want to keep up with what everyone is watching lately, if it suits me.",
        "Balance what's buzzing today with what I enjoy.",
        "Recommend the current hits that match my interests.",
    ],
    heldout=[
        "What are people into this week that I'd also like?",
        "Give me the trending items that fit my taste first.",
    ])
