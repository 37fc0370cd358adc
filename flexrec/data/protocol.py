"""The real-data protocol's pieces that need a built dataset: the implicit protocol's negatives, and the
measurements that choose the MovieLens settings (docs/real-data-protocol.md).

- ``add_implicit_negatives``: LLMRank-style pools, the user's future items against items retrieved for them
  that they did not watch, labelled "not watched" (the bottom of the interest scale) in the truth; and, for
  the critic, other retrieved items the user did not watch in the history period, with the same label, so
  the critic learns the same watched-and-liked target that the truth scores.
- ``default_pool_size``: the K the protocol implies (20 on MovieLens);
- ``explore_coverage``: the share of pools holding a relevant explore item, for a novelty share;
- ``trend_tie_share``: the share of a pool's candidates whose short-term popularity ties another's.
"""

from __future__ import annotations

import numpy as np

from .needs import get_need, pool_labels
from .pools import (
    DEFAULT_MIX,
    PoolTooSmallError,
    _quotas,
    build_pool,
    cooccurrence_scores,
)
from .world import InteractionData, SparseLabels, observe_subset


def retrieve(data: InteractionData, user: int, n: int, free: np.ndarray, rng: np.random.Generator,
             mix: dict[str, float] | None = None) -> np.ndarray:
    """``n`` items among ``free`` (a boolean mask over items; taken ones are cleared) by the retriever mix of
    ``flexrec.data.pools``: popularity (uniform over the 3n most popular), co-occurrence with the user's
    recent items (best first), random (also the top-up of a retriever that falls short).

    Shapes: free (n_items,) bool -> (n,) int64 (fewer if fewer are free).
    """
    quotas = _quotas(n, mix or DEFAULT_MIX)
    chosen: list[int] = []

    def take(candidates: np.ndarray, k: int, ranked: bool = False) -> None:
        candidates = candidates[free[candidates]]
        k = min(k, len(candidates))
        picked = candidates[:k] if ranked else rng.choice(candidates, k, replace=False)
        free[picked] = False
        chosen.extend(int(i) for i in picked)

    candidates = np.flatnonzero(free)
    by_popularity = candidates[np.argsort(-data.item_popularity[candidates], kind="stable")]
    take(by_popularity[: 3 * quotas.get("popularity", 0)], quotas.get("popularity", 0))
    if quotas.get("cooccurrence", 0):
        co = cooccurrence_scores(data, user)[candidates]
        order = np.argsort(-co, kind="stable")
        take(candidates[order][co[order] > 0], quotas["cooccurrence"], ranked=True)
    take(np.flatnonzero(free), n - len(chosen))
    return np.asarray(chosen, np.int64)


def add_implicit_negatives(data: InteractionData, negatives: int, seed: int = 0,
                           history_ratio: float = 1.0) -> InteractionData:
    """Turn a dataset split by the "known" protocol into the implicit one, in place, and return it.

    Per user: ``negatives`` items retrieved from those the user never rated (neither history nor future) join
    the truth with the scale's lowest value ("not watched", interest 0), so a pool of the future items and
    these negatives has a known label everywhere; the observed feedback is redrawn from this truth. For the
    critic (``history_negatives``): ``history_ratio`` x the history's length other never-rated items,
    retrieved the same way, with the same label, so what it learns from the history period is the truth's
    watched-and-liked target. Deterministic in ``seed``.
    """
    lo = float(data.interest_range[0])
    rng = np.random.default_rng([seed, 11])
    t_users, t_items, t_values, h_users, h_items = [], [], [], [], []
    for user in range(data.n_users):
        future = data.true_interest.user_items(user)
        free = np.ones(data.n_items, bool)
        free[data.history(user)[0]] = False
        free[future] = False
        if data.candidate_items is not None:
            free &= np.isin(np.arange(data.n_items), data.candidate_items)
        pool_negatives = retrieve(data, user, negatives, free, rng)
        n_hist = round(history_ratio * int(data.history_ptr[user + 1] - data.history_ptr[user]))
        history_negatives = retrieve(data, user, n_hist, free, rng)
        t_users += [np.full(len(future) + len(pool_negatives), user)]
        t_items += [future, pool_negatives]
        t_values += [data.true_interest.lookup(user, future)[0], np.full(len(pool_negatives), lo, np.float32)]
        h_users.append(np.full(len(history_negatives), user))
        h_items.append(history_negatives)
    data.true_interest = SparseLabels.from_triples(np.concatenate(t_users), np.concatenate(t_items),
                                                   np.concatenate(t_values), data.n_items)
    data.observed = observe_subset(data.true_interest, data.observe_fraction, np.random.default_rng(seed))
    h_items_ = np.concatenate(h_items)
    data.history_negatives = SparseLabels.from_triples(np.concatenate(h_users), h_items_,
                                                       np.full(len(h_items_), lo, np.float32), data.n_items)
    data.pools_from_known = True
    return data


def default_pool_size(data: InteractionData, default: int) -> int:
    """The K a dataset's protocol implies: with pools of known truth, the most items of known truth any user
    has (20 on MovieLens: the future of ``movielens.PROTOCOL_DEFAULTS``); otherwise ``default``."""
    if not data.pools_from_known or not len(data.true_interest):
        return default
    return int(np.bincount(data.true_interest.keys // data.n_items).max())


def explore_coverage(data: InteractionData, users: np.ndarray, K: int, seed: int = 0) -> float:
    """The share of ``users``' explore_new_topics pools (of K) that hold an item above the need's threshold.

    Choose ``novelty_share`` with training users only (docs/real-data-protocol.md).
    """
    need = get_need("explore_new_topics")
    hits, total = 0, 0
    for user in users:
        try:
            items = build_pool(data, int(user), need.name, K=K, seed=seed)
        except PoolTooSmallError:
            continue
        labels, _ = pool_labels(data, int(user), items, need)
        hits += bool((labels >= need.threshold).any())
        total += 1
    return hits / max(total, 1)


def trend_tie_share(data: InteractionData, users: np.ndarray, K: int, seed: int = 0) -> float:
    """The mean share of a trend_promotion pool's candidates whose short-term popularity equals another's."""
    shares = []
    for user in users:
        try:
            items = build_pool(data, int(user), "trend_promotion", K=K, seed=seed)
        except PoolTooSmallError:
            continue
        recent = data.recent_popularity(int(user), items)
        _, inverse, counts = np.unique(recent, return_inverse=True, return_counts=True)
        shares.append(float((counts[inverse] > 1).mean()))
    return float(np.mean(shares)) if shares else 0.0
