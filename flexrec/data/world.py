"""The one structure every dataset loads into: `InteractionData`.

A dataset, whatever its source, is items (titles, topics), a popularity signal per item and per day,
users with time-ordered histories of (item, feedback, day), the true interest where the data knows it,
and a sparse observed subset of it (the feedback a trainer may use, FLEXREC.md section 4).

Interest is kept on the dataset's own scale (a 1-5 rating, a watch ratio, a synthetic 1-5 affinity);
`interest_range` maps it to [0, 1] for the need labels (see `flexrec.data.needs`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np


@dataclass
class SparseLabels:
    """(user, item) -> value for the pairs a dataset knows, looked up in O(log N).

    Shapes:
        keys: (N,) int64, sorted, key = user * n_items + item;  values: (N,) float32.
    """

    n_items: int
    keys: np.ndarray
    values: np.ndarray

    @classmethod
    def from_triples(cls, users, items, values, n_items: int) -> "SparseLabels":
        """Build from parallel arrays; a repeated (user, item) keeps its last value."""
        keys = np.asarray(users, np.int64) * n_items + np.asarray(items, np.int64)
        values = np.asarray(values, np.float32)
        # np.unique keeps the first occurrence; reverse so the last one (the latest) wins.
        uniq, first = np.unique(keys[::-1], return_index=True)
        return cls(n_items, uniq, values[::-1][first])

    def __len__(self) -> int:
        return len(self.keys)

    def lookup(self, user: int, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Values and whether each is known (unknown -> 0).

        Shapes: items (K,) -> values (K,) float32, known (K,) bool.
        """
        keys = user * self.n_items + np.asarray(items, np.int64)
        pos = np.searchsorted(self.keys, keys).clip(max=max(len(self.keys) - 1, 0))
        known = (self.keys[pos] == keys) if len(self.keys) else np.zeros(len(keys), bool)
        return np.where(known, self.values[pos] if len(self.keys) else 0.0, 0.0).astype(np.float32), known

    def user_items(self, user: int) -> np.ndarray:
        """The items whose value is known for `user`. Shapes: (M,) int64."""
        lo, hi = np.searchsorted(self.keys, [user * self.n_items, (user + 1) * self.n_items])
        return self.keys[lo:hi] - user * self.n_items


# Words for the quintiles of short-term popularity (InteractionData.trend_tiers), coldest first.
TREND_TIERS = ("cold", "cool", "warm", "hot", "viral")


@dataclass
class InteractionData:
    """A recommendation dataset in flexrec's common form.

    Users and items are re-indexed 0..n-1; `user_keys`/`item_keys` keep the source ids.
    Histories are stored CSR-style: user u's history is positions history_ptr[u]:history_ptr[u+1],
    ordered by time, and it ends strictly before the user's candidates (cutoff_day).

    Shapes:
        item_topics (n_items, n_topics) bool multi-hot; item_popularity (n_items,) interactions seen
        in histories; daily_popularity (n_days, n_items) plays per day (or per window);
        history_ptr (n_users + 1,); history_items/history_feedback/history_days (N,);
        cutoff_day (n_users,) the first day that is "the future" for that user.
    """

    name: str
    topic_names: list[str]
    item_titles: list[str]
    item_topics: np.ndarray
    item_popularity: np.ndarray
    daily_popularity: np.ndarray
    history_ptr: np.ndarray
    history_items: np.ndarray
    history_feedback: np.ndarray
    history_days: np.ndarray
    cutoff_day: np.ndarray
    true_interest: SparseLabels  # the ground truth: dense for synthetic/KuaiRec small, held-out ratings for MovieLens
    observed: SparseLabels  # the sparse, possibly noisy, feedback a trainer may use
    interest_range: tuple[float, float] = (1.0, 5.0)  # maps interest to [0, 1] for the labels
    feedback_format: str = "rated {:.0f}/5"  # how a feedback value reads in a prompt
    trend_window: int = 1  # days of daily_popularity that count as "short-term" for the trend need
    candidate_items: np.ndarray | None = None  # items allowed in pools (None: all), e.g. KuaiRec small matrix
    user_keys: list[str] = field(default_factory=list)
    item_keys: list[str] = field(default_factory=list)
    observe_fraction: float = 0.1
    # The real-data protocol (docs/real-data-protocol.md); the defaults are the synthetic world's behaviour.
    pools_from_known: bool = False  # pools hold only items whose true interest is known (the user's rated future)
    novelty_share: float = 0.0  # an item is new to a user when each of its topics is at most this share of the
    # history (0: none of its topics appears at all)
    trend_half_life: float = 0.0  # > 0: short-term popularity is every earlier day's plays decayed by half per
    # this many days (few ties); 0: the plain sum of the trend_window days
    trend_random_ties: bool = False  # trend tiers break ties at random per user, not by item index
    compact_signals: bool = False  # compact prompts add popularity, co-occurrence and genre-affinity tiers
    history_negatives: SparseLabels | None = None  # implicit protocol: items not watched, for the critic

    @property
    def n_users(self) -> int:
        return len(self.history_ptr) - 1

    @property
    def n_items(self) -> int:
        return len(self.item_titles)

    @property
    def n_topics(self) -> int:
        return len(self.topic_names)

    def history(self, user: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(items, feedback, days) of `user`, oldest first. Shapes: each (T,)."""
        lo, hi = self.history_ptr[user], self.history_ptr[user + 1]
        return self.history_items[lo:hi], self.history_feedback[lo:hi], self.history_days[lo:hi]

    def history_topics(self, user: int) -> np.ndarray:
        """Which topics appear anywhere in the user's history. Shapes: (n_topics,) bool."""
        items = self.history(user)[0]
        return self.item_topics[items].any(axis=0) if len(items) else np.zeros(self.n_topics, bool)

    def novel_items(self, user: int, items: np.ndarray) -> np.ndarray:
        """Whether each item is new to the user: every topic of it is at most ``novelty_share`` of the
        user's history (with share 0: none of its topics appears in the history).

        Shapes: items (K,) -> (K,) bool.
        """
        items = np.asarray(items, np.int64)
        if self.novelty_share <= 0:
            return ~(self.item_topics[items] & self.history_topics(user)[None, :]).any(axis=1)
        h_items = self.history(user)[0]
        share = self.item_topics[h_items].mean(axis=0) if len(h_items) else np.zeros(self.n_topics)
        return ~(self.item_topics[items] & (share > self.novelty_share)[None, :]).any(axis=1)

    def trend_scores(self, user: int) -> np.ndarray:
        """Short-term plays of every item before the user's cutoff: the ``trend_window`` days' sum, or with
        ``trend_half_life`` > 0 every earlier day weighted 0.5 ** (days before the cutoff / half-life).

        Shapes: -> (n_items,), the dtype of ``daily_popularity``.
        """
        end = int(self.cutoff_day[user])
        if self.trend_half_life <= 0:
            return self.daily_popularity[max(0, end - self.trend_window):end].sum(axis=0)
        weights = 0.5 ** ((end - 1 - np.arange(end)) / self.trend_half_life)
        return (weights @ self.daily_popularity[:end]).astype(self.daily_popularity.dtype)

    def popularity_before(self, user: int) -> np.ndarray:
        """Every item's plays on the days before the user's cutoff (all users' interactions the system had
        seen by then): the popularity a recommender could know when it ranks the user's pool. With one
        cutoff for everyone (the synthetic world) this is ``item_popularity``'s plays; with per-user cutoffs
        (MovieLens) it leaves out what other users rated after this user's cutoff. Running totals are built
        once per data set.

        Shapes: -> (n_items,) float64.
        """
        cache = self.__dict__.setdefault("_plays_before_day", {})
        if "totals" not in cache:
            daily = np.asarray(self.daily_popularity, np.float64)
            cache["totals"] = np.concatenate([np.zeros((1, self.n_items)), daily.cumsum(0)])  # row d: days < d
        totals = cache["totals"]
        return totals[min(max(int(self.cutoff_day[user]), 0), len(totals) - 1)]

    def recent_popularity(self, user: int, items: np.ndarray) -> np.ndarray:
        """Short-term plays of `items` before the user's cutoff (``trend_scores``).

        Shapes: items (K,) -> (K,) float32.
        """
        if self.trend_half_life > 0:
            return self.trend_scores(user)[np.asarray(items, np.int64)]
        end = int(self.cutoff_day[user])
        start = max(0, end - self.trend_window)
        return self.daily_popularity[start:end, items].sum(axis=0).astype(np.float32)

    def trend_tiers(self, user: int) -> np.ndarray:
        """Each item's tier of short-term popularity as the user sees it: the quintile (0..4, see
        ``TREND_TIERS``) of log1p(``trend_scores``) over the catalogue, ties broken by item index, or with
        ``trend_random_ties`` at random per user (seeded by the user and cutoff, so deterministic).
        Computed at the user's own cutoff, so it never shows plays from the user's future (per-user
        cutoffs, as in MovieLens, are fine); cached per cutoff (per user with random ties).

        Shapes: -> (n_items,) int64.
        """
        end = int(self.cutoff_day[user])
        key = (end, user) if self.trend_random_ties else end
        cache = self.__dict__.setdefault("_trend_tier_cache", {})
        if key not in cache:
            recent = np.log1p(self.trend_scores(user))
            if self.trend_random_ties:
                order = np.lexsort((np.random.default_rng([user, end]).random(len(recent)), recent))
            else:
                order = np.argsort(recent, kind="stable")
            rank = np.argsort(order, kind="stable")
            cache[key] = (rank * len(TREND_TIERS) // len(recent)).astype(np.int64)
        return cache[key]

    def normalized_interest(self, values: np.ndarray) -> np.ndarray:
        """Map interest from the dataset's scale to [0, 1]. Shapes: any -> same."""
        lo, hi = self.interest_range
        return np.clip((np.asarray(values, np.float32) - lo) / (hi - lo), 0.0, 1.0)

    def eligible_items(self, user: int) -> np.ndarray:
        """Items that may be ranked for `user`: allowed candidates not in the history. Shapes: (M,)."""
        allowed = np.ones(self.n_items, bool) if self.candidate_items is None else np.isin(
            np.arange(self.n_items), self.candidate_items)
        allowed[self.history(user)[0]] = False
        return np.flatnonzero(allowed)

    @cached_property
    def item_users(self) -> tuple[np.ndarray, np.ndarray]:
        """Inverted histories, CSR-style: the users of item i are users[ptr[i]:ptr[i+1]], by user id.

        Shapes: ptr (n_items + 1,), users (N,). Used by the co-occurrence retriever.
        """
        owners = np.repeat(np.arange(self.n_users), np.diff(self.history_ptr))
        order = np.lexsort((owners, self.history_items))
        ptr = np.concatenate([[0], np.cumsum(np.bincount(self.history_items, minlength=self.n_items))])
        return ptr.astype(np.int64), owners[order]

    @cached_property
    def item_user_days(self) -> np.ndarray:
        """The day of each (item, user) interaction of ``item_users``, in its order. Shapes: (N,)."""
        owners = np.repeat(np.arange(self.n_users), np.diff(self.history_ptr))
        return self.history_days[np.lexsort((owners, self.history_items))]

    def summary(self) -> dict:
        """Plain statistics, for logs and `python -m flexrec.data`."""
        lengths = np.diff(self.history_ptr)
        return {
            "name": self.name, "users": self.n_users, "items": self.n_items, "topics": self.n_topics,
            "days": int(self.daily_popularity.shape[0]),
            "history_interactions": int(len(self.history_items)),
            "history_len_min/mean/max": (int(lengths.min()), round(float(lengths.mean()), 1), int(lengths.max())),
            "users_with_empty_history": int((lengths == 0).sum()),
            "true_interest_known": len(self.true_interest),
            "observed_feedback": len(self.observed),
            "observe_fraction": self.observe_fraction,
            "interest_range": self.interest_range,
            "trend_window_days": self.trend_window,
            "pools_from_known": self.pools_from_known,
            "novelty_share": self.novelty_share,
            "trend_half_life_days": self.trend_half_life,
        }


def histories_to_csr(users: np.ndarray, items: np.ndarray, feedback: np.ndarray, days: np.ndarray,
                     n_users: int, times: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
    """Sort interactions by (user, time) (stable) into CSR arrays (ptr, items, feedback, days).

    `times` (e.g. Unix timestamps) orders events within a day; without it, days do.
    """
    order = np.lexsort((days if times is None else times, users))
    counts = np.bincount(users, minlength=n_users)
    ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return (ptr, np.asarray(items, np.int64)[order], np.asarray(feedback, np.float32)[order],
            np.asarray(days, np.int64)[order])


def observe_subset(true: SparseLabels, fraction: float, rng: np.random.Generator,
                   noise_std: float = 0.0, clip: tuple[float, float] | None = None) -> SparseLabels:
    """Keep a random `fraction` of the known labels, optionally with Gaussian noise (the sparse feedback)."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"observe_fraction must be in [0, 1], got {fraction}")
    keep = rng.random(len(true.keys)) < fraction
    values = true.values[keep] + (rng.normal(0.0, noise_std, keep.sum()) if noise_std > 0 else 0.0)
    if clip is not None:
        values = np.clip(values, *clip)
    return SparseLabels(true.n_items, true.keys[keep], values.astype(np.float32))


def evidence_counts(data: InteractionData) -> tuple[np.ndarray, np.ndarray]:
    """How much feedback a trainer can see for each user and each item: history interactions plus observed
    labels. Shapes: -> users (n_users,) int64, items (n_items,) int64."""
    observed_users, observed_items = np.divmod(data.observed.keys, data.n_items)
    users = np.diff(data.history_ptr) + np.bincount(observed_users, minlength=data.n_users)
    items = np.bincount(data.history_items, minlength=data.n_items) + np.bincount(observed_items,
                                                                                 minlength=data.n_items)
    return users.astype(np.int64), items.astype(np.int64)
