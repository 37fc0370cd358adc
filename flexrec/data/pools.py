"""Candidate pools (K items per user and need) and user splits.

A pool is built from a documented mix, in this order, never from the user's history (no leakage), and
with ``InteractionData.pools_from_known`` (the real-data protocol, docs/real-data-protocol.md) only from
items whose true interest is known, so every candidate's label means the same to the critic and the truth:
1. up to `min_relevant` items whose true label for the need passes its threshold (labels computed
   over all eligible items), so that a pool has something to find where the data allows;
2. on data whose truth is sparse (MovieLens: held-out ratings), items with known interest, up to
   `known_share` of K, so that labels are informative rather than mostly "unrated";
3. the rest from retrievers, split by `mix` (default a third each):
   - popularity: drawn uniformly from the 3n most popular eligible items;
   - cooccurrence: items most often in the histories of users who share the user's recent items;
   - random: uniform over the eligible items.
   A retriever that cannot supply its share (no history, no co-occurring items) is topped up by random.
The pool is then shuffled, so a slot's position says nothing about the item.
Everything is drawn from `numpy.random.default_rng([seed, user, crc32(need)])`: deterministic.
"""

from __future__ import annotations

import zlib

import numpy as np

from flexrec.config import USER_SPLITS

from .needs import get_need, pool_labels
from .world import InteractionData

DEFAULT_MIX = {"popularity": 1 / 3, "cooccurrence": 1 / 3, "random": 1 / 3}


class PoolTooSmallError(ValueError):
    """The user has fewer eligible (non-history, allowed) items than the pool size K."""


def pool_rng(seed: int, user: int, need: str) -> np.random.Generator:
    """The generator of one (seed, user, need); crc32, not hash(), so it is stable across processes."""
    return np.random.default_rng([seed, user, zlib.crc32(need.encode())])


def cooccurrence_scores(data: InteractionData, user: int, recent: int = 10, max_users: int = 50,
                        before_day: int | None = None) -> np.ndarray:
    """How often each item appears with the user's `recent` last items in other users' histories.

    Each recent item contributes at most `max_users` co-users (the first by id), to bound the cost.
    ``before_day``: count only the co-users' interactions on earlier days (a feature at the user's cutoff).
    Shapes: (n_items,) float32.
    """
    ptr, owners = data.item_users
    co_users = [owners[ptr[i]:ptr[i + 1]] for i in data.history(user)[0][-recent:]]
    if before_day is not None:  # co-users who had the recent item before that day
        days = data.item_user_days
        co_users = [c[days[ptr[i]:ptr[i + 1]] < before_day] for c, i in zip(co_users, data.history(user)[0][-recent:])]
    co_users = np.concatenate([c[c != user][:max_users] for c in co_users] + [np.zeros(0, np.int64)])
    # Gather every co-user's history at once: the positions start..end-1 of each, concatenated.
    starts, lengths = data.history_ptr[co_users], np.diff(data.history_ptr)[co_users]
    offsets = np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(lengths.sum())
    if before_day is not None:
        offsets = offsets[data.history_days[offsets] < before_day]
    return np.bincount(data.history_items[offsets], minlength=data.n_items).astype(np.float32)


def _quotas(n: int, mix: dict[str, float]) -> dict[str, int]:
    """Split n slots by the mix weights (largest remainder, ties in dict order)."""
    total = sum(mix.values())
    raw = {k: n * w / total for k, w in mix.items()}
    quotas = {k: int(np.floor(v)) for k, v in raw.items()}
    for k in sorted(raw, key=lambda k: quotas[k] - raw[k])[: n - sum(quotas.values())]:
        quotas[k] += 1
    return quotas


def build_pool(data: InteractionData, user: int, need: str, K: int = 30, seed: int = 0,
               min_relevant: int = 3, known_share: float = 0.5,
               mix: dict[str, float] | None = None) -> np.ndarray:
    """The K candidate items of (user, need), in a seeded random order (see the module docstring).

    Shapes: returns (K,) int64 item ids, distinct, none in the user's history.
    Raises PoolTooSmallError when fewer than K items are eligible.
    """
    mix = DEFAULT_MIX if mix is None else mix
    unknown = set(mix) - set(DEFAULT_MIX)
    if unknown or not mix or min(mix.values()) < 0:
        raise ValueError(f"mix must weight retrievers among {sorted(DEFAULT_MIX)}, got {mix}")
    if K < 1:
        raise ValueError(f"K must be >= 1, got {K}")
    need_ = get_need(need)
    eligible = data.eligible_items(user)
    if data.pools_from_known:  # the real-data protocol: only items whose truth is known
        eligible = np.intersect1d(eligible, data.true_interest.user_items(user))
    if len(eligible) < K:
        what = "items of known truth" if data.pools_from_known else "eligible items"
        raise PoolTooSmallError(f"user {user} has {len(eligible)} {what}, fewer than K={K}")
    rng = pool_rng(seed, user, need_.name)
    free = np.zeros(data.n_items, bool)
    free[eligible] = True
    chosen: list[int] = []

    def take(candidates: np.ndarray, n: int, ranked: bool = False) -> None:
        candidates = candidates[free[candidates]]
        n = min(n, len(candidates))
        picked = candidates[:n] if ranked else rng.choice(candidates, n, replace=False)
        free[picked] = False
        chosen.extend(int(i) for i in picked)

    labels, _ = pool_labels(data, user, eligible, need_)
    take(eligible[labels >= need_.threshold], min(min_relevant, K))
    known = np.intersect1d(data.true_interest.user_items(user), eligible)
    if len(known) < 0.9 * len(eligible):  # sparse truth: make sure the labels say something
        take(known, int(round(known_share * K)) - len(chosen))

    quotas = _quotas(K - len(chosen), mix)
    by_popularity = eligible[np.argsort(-data.item_popularity[eligible], kind="stable")]
    take(by_popularity[: 3 * quotas.get("popularity", 0)], quotas.get("popularity", 0))
    if quotas.get("cooccurrence", 0):
        co = cooccurrence_scores(data, user)[eligible]
        order = np.argsort(-co, kind="stable")
        take(eligible[order][co[order] > 0], quotas["cooccurrence"], ranked=True)
    take(eligible, K - len(chosen))  # random, and the top-up of any retriever that fell short
    return rng.permutation(np.asarray(chosen, np.int64))


def split_users(data: InteractionData, fractions: tuple[float, float, float] = USER_SPLITS,
                seed: int = 0) -> dict[str, np.ndarray]:
    """Users into "train" / "val" / "test" by a seeded permutation. Shapes: each (n_split,) sorted."""
    if len(fractions) != 3 or min(fractions) < 0 or not np.isclose(sum(fractions), 1.0):
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {fractions}")
    order = np.random.default_rng([seed, 7]).permutation(data.n_users)
    n_train = int(round(fractions[0] * data.n_users))
    n_val = int(round(fractions[1] * data.n_users))
    parts = (order[:n_train], order[n_train:n_train + n_val], order[n_train + n_val:])
    return {name: np.sort(p) for name, p in zip(("train", "val", "test"), parts)}
