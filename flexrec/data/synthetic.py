"""SyntheticWorld: a small, fully known world where the three needs genuinely disagree.

How it is generated (all from one `numpy.random.Generator(seed)`, so a seed is a world on any machine):
- Items have one topic, a quality, and a readable title, e.g. "Quiet Harbor (jazz)".
- Users have a latent taste per topic, z ~ N(0, 1). True interest on a 1-5 scale is
  1 + 4 * sigmoid(taste_scale * z[u, topic] + quality + noise): it is known for every (user, item),
  like KuaiRec's dense small matrix.
- Histories are sampled from a *sharpened* taste (softmax with temperature `history_sharpness`), so a
  user's history covers only their top few topics. Absent topics can still hold items the user would
  like (their 3rd-4th best topics): that is what explore_new_topics rewards.
- Daily plays: each item has a base popularity (log-normal, plus quality) and a shape over the days
  (flat, rising, fading, or a recent burst), so the last days' plays (the trend signal) are NOT just
  global popularity.
- Observed feedback: `observe_fraction` of the non-history (user, item) pairs, with Gaussian noise
  (`feedback_noise`), like the paper's 10% KuaiRec.
- Evidence (`evidence`, see `WorldEvidence`): "uniform" is the world above, where every user has 8-30
  history items and every pair is observed alike. "sparse" and "dense" spread the feedback as real logs
  do: long-tailed history lengths and observation (a few users and items hold most of it), cold users
  and items, and users whose feedback is noisier. They change only who gives how much feedback and how
  noisily: items, tastes, true interest and plays are those of the uniform world of the same seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .world import InteractionData, SparseLabels, histories_to_csr, observe_subset

TOPICS = ["jazz", "sci-fi", "cooking", "history", "comedy", "sports", "travel", "horror",
          "poetry", "gardening", "chess", "anime"]
ADJECTIVES = ["Quiet", "Golden", "Broken", "Silent", "Electric", "Hidden", "Crimson", "Last",
              "Wandering", "Midnight", "Paper", "Iron", "Velvet", "Northern", "Little", "Wild",
              "Hollow", "Bright", "Frozen", "Secret"]
NOUNS = ["Harbor", "Garden", "Engine", "River", "Kingdom", "Lantern", "Orbit", "Kitchen", "Summit",
         "Carnival", "Archive", "Forest", "Signal", "Voyage", "Castle", "Market", "Comet", "Island",
         "Bridge", "Circus"]


@dataclass(frozen=True)
class WorldEvidence:
    """How unevenly a synthetic world's feedback is spread. The defaults are the uniform world."""

    history_median: float = 0.0  # > 0: history lengths log-normal with this median (0: uniform in history_len)
    history_sigma: float = 1.0  # log-normal sigma of the history lengths
    history_max: int = 60  # longest history (log-normal lengths are clipped to [1, history_max])
    observe_scale: float = 1.0  # the mean share of non-history pairs observed is observe_fraction * observe_scale
    observe_skew: float = 0.0  # > 0: pair (u, i) observed with probability ~ a_u * b_i, log-normal propensities of
    # this sigma, heavy users (long histories) and popular items the most observed; 0: every pair alike
    cold_users: float = 0.0  # share of users with 1-2 history items and no observed feedback
    cold_items: float = 0.0  # share of items in no history and never observed
    noisy_users: float = 0.0  # share of users whose feedback noise has std noisy_noise instead of feedback_noise
    noisy_noise: float = 1.0

    @property
    def uniform(self) -> bool:
        return self == WorldEvidence()


# The named settings (--world-evidence). sparse: half the observations of uniform, spread long-tailed, a quarter
# of the users and 15% of the items cold; dense: four times the observations, long histories, nobody cold.
# Both have the same share of noisy users, so that what differs between them is how much evidence there is.
EVIDENCE = {
    "uniform": WorldEvidence(),
    "sparse": WorldEvidence(history_median=6.0, history_sigma=1.0, observe_scale=0.5, observe_skew=1.5,
                            cold_users=0.25, cold_items=0.15, noisy_users=0.2, noisy_noise=1.0),
    "dense": WorldEvidence(history_median=24.0, history_sigma=0.3, observe_scale=4.0, observe_skew=0.3,
                           noisy_users=0.2, noisy_noise=1.0),
}


def SyntheticWorld(seed: int = 0, n_users: int = 300, n_items: int = 400, n_topics: int = 8,
                   n_days: int = 30, history_len: tuple[int, int] = (8, 30), taste_scale: float = 1.2,
                   history_sharpness: float = 5.0, trend_window: int = 3, observe_fraction: float = 0.1,
                   feedback_noise: float = 0.3, evidence: str | WorldEvidence = "uniform") -> InteractionData:
    """Generate a synthetic world (see the module docstring for the model).

    ``evidence``: a name of ``EVIDENCE`` ("uniform", "sparse", "dense") or a ``WorldEvidence``.

    Shapes of the result: n_users users, n_items items, n_topics topics, n_days days of plays.
    """
    if not 1 <= n_topics <= len(TOPICS):
        raise ValueError(f"n_topics must be in 1..{len(TOPICS)}, got {n_topics}")
    if n_items < 1 or n_users < 1 or n_days < trend_window or history_len[0] > history_len[1]:
        raise ValueError("need n_items >= 1, n_users >= 1, n_days >= trend_window, history_len lo <= hi")
    if isinstance(evidence, str):
        if evidence not in EVIDENCE:
            raise ValueError(f"evidence must be one of {', '.join(EVIDENCE)} or a WorldEvidence, got {evidence!r}")
        evidence = EVIDENCE[evidence]
    rng = np.random.default_rng(seed)
    # The uneven-evidence draws come from their own stream, so that the uniform world's draws stay as they are.
    erng = np.random.default_rng([seed, 11]) if not evidence.uniform else None

    # Items: topic, quality, title.
    topic = rng.integers(0, n_topics, n_items)
    quality = rng.normal(0.0, 0.5, n_items)
    names = [f"{a} {n}" for a in ADJECTIVES for n in NOUNS]
    picks = rng.permutation(len(names))
    titles = [f"{names[picks[i % len(names)]]}{'' if i < len(names) else f' {i // len(names) + 1}'}"
              f" ({TOPICS[topic[i]]})" for i in range(n_items)]
    item_topics = np.zeros((n_items, n_topics), bool)
    item_topics[np.arange(n_items), topic] = True

    # Users: latent taste per topic; true interest for every (user, item).
    taste = rng.normal(0.0, 1.0, (n_users, n_topics))
    logits = taste_scale * taste[:, topic] + quality[None, :] + rng.normal(0.0, 0.6, (n_users, n_items))
    interest = 1.0 + 4.0 / (1.0 + np.exp(-(logits - 0.5)))

    # Daily plays: base popularity times a shape over days.
    base = np.exp(rng.normal(0.0, 1.0, n_items) + 0.5 * quality)
    t = np.linspace(0.0, 1.0, n_days)
    kind = rng.choice(4, n_items, p=[0.4, 0.2, 0.2, 0.2])  # flat, rising, fading, recent burst
    shape = np.stack([np.ones_like(t), 0.2 + 1.6 * t, 1.8 - 1.6 * t, np.ones_like(t)])[kind]
    burst = kind == 3
    shape[burst, -trend_window:] *= rng.uniform(3.0, 8.0, (burst.sum(), 1))
    daily = rng.poisson(2.0 * base[None, :] * shape.T).astype(np.float32)  # (n_days, n_items)

    # Histories: sampled from the sharpened taste and popularity, without repeats.
    if evidence.uniform:
        lengths = rng.integers(history_len[0], history_len[1] + 1, n_users).clip(max=n_items)
        noise, cold_user, cold_item = np.full(n_users, feedback_noise), np.zeros(n_users, bool), np.zeros(n_items, bool)
    else:
        lengths, noise, cold_user, cold_item = _uneven_evidence(erng, evidence, history_len, n_users, n_items,
                                                                feedback_noise)
    users, items, feedback, days = [], [], [], []
    for u in range(n_users):
        score = history_sharpness * taste[u, topic] + 0.5 * np.log(base)
        p = np.exp(score - score.max()) * ~cold_item
        chosen = rng.choice(n_items, lengths[u], replace=False, p=p / p.sum())
        fb = np.clip(interest[u, chosen] + rng.normal(0.0, noise[u], len(chosen)), 1.0, 5.0)
        users.append(np.full(len(chosen), u))
        items.append(chosen)
        feedback.append(np.round(fb * 2) / 2)  # half stars, like a rating UI
        days.append(np.sort(rng.integers(0, n_days, len(chosen))))
    users, items = np.concatenate(users), np.concatenate(items)
    ptr, h_items, h_fb, h_days = histories_to_csr(users, items, np.concatenate(feedback),
                                                  np.concatenate(days), n_users)

    grid_u, grid_i = np.divmod(np.arange(n_users * n_items), n_items)
    true = SparseLabels.from_triples(grid_u, grid_i, interest.ravel(), n_items)
    in_history = np.zeros((n_users, n_items), bool)
    in_history[users, items] = True
    # Observed feedback is drawn from the pairs a pool may contain (history pairs are in the history).
    outside = SparseLabels(n_items, true.keys[~in_history.ravel()], true.values[~in_history.ravel()])
    if evidence.uniform:
        observed = observe_subset(outside, observe_fraction, rng, feedback_noise, clip=(1.0, 5.0))
    else:
        observed = _observe_uneven(erng, evidence, outside, observe_fraction, lengths, base, noise, cold_user,
                                   cold_item)
        observe_fraction = round(len(observed) / max(len(outside), 1), 4)

    return InteractionData(
        name="synthetic", topic_names=TOPICS[:n_topics], item_titles=titles, item_topics=item_topics,
        item_popularity=daily.sum(0),
        daily_popularity=daily, history_ptr=ptr, history_items=h_items, history_feedback=h_fb,
        history_days=h_days, cutoff_day=np.full(n_users, n_days, np.int64), true_interest=true,
        observed=observed, interest_range=(1.0, 5.0), feedback_format="liked it {:.1f}/5",
        trend_window=trend_window, user_keys=[f"u{u}" for u in range(n_users)],
        item_keys=[f"i{i}" for i in range(n_items)], observe_fraction=observe_fraction)


def _uneven_evidence(rng: np.random.Generator, ev: WorldEvidence, history_len: tuple[int, int], n_users: int,
                     n_items: int, feedback_noise: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """History lengths, per-user feedback noise std, cold users and cold items of an uneven world.

    Shapes: -> lengths (n_users,) int, noise (n_users,) float, cold_user (n_users,) bool, cold_item (n_items,) bool.
    """
    cold_item = np.zeros(n_items, bool)
    cold_item[rng.permutation(n_items)[: int(round(ev.cold_items * n_items))]] = True
    most = min(ev.history_max, int((~cold_item).sum()))
    if ev.history_median > 0:
        lengths = np.round(ev.history_median * np.exp(ev.history_sigma * rng.standard_normal(n_users)))
    else:
        lengths = rng.integers(history_len[0], history_len[1] + 1, n_users)
    lengths = lengths.clip(1, most).astype(np.int64)
    cold_user = np.zeros(n_users, bool)
    cold_user[rng.permutation(n_users)[: int(round(ev.cold_users * n_users))]] = True
    lengths[cold_user] = rng.integers(1, 3, cold_user.sum()).clip(max=most)
    noise = np.full(n_users, feedback_noise)
    noise[rng.permutation(n_users)[: int(round(ev.noisy_users * n_users))]] = ev.noisy_noise
    return lengths, noise, cold_user, cold_item


def _observe_uneven(rng: np.random.Generator, ev: WorldEvidence, outside: SparseLabels, observe_fraction: float,
                    lengths: np.ndarray, base: np.ndarray, noise: np.ndarray, cold_user: np.ndarray,
                    cold_item: np.ndarray) -> SparseLabels:
    """Observe the non-history pairs ``outside`` with probability c * a_u * b_i (mean observe_fraction *
    observe_scale), a_u and b_i log-normal propensities tied to history length and popularity; cold users
    and items never observed; each user's noise std ``noise[u]``, values clipped to the 1-5 scale."""
    def propensity(x: np.ndarray) -> np.ndarray:  # log-normal with sigma observe_skew, ordered like x
        z = (np.log(x) - np.log(x).mean()) / (np.log(x).std() + 1e-9)
        return np.exp(ev.observe_skew * z)

    a = propensity(lengths.astype(np.float64)) * ~cold_user
    b = propensity(base) * ~cold_item
    users, items = np.divmod(outside.keys, outside.n_items)
    raw = a[users] * b[items]
    target = min(1.0, observe_fraction * ev.observe_scale)
    p = np.zeros_like(raw)
    if raw.sum() > 0:
        c = target / raw.mean()
        for _ in range(20):  # rescale so that the mean stays on target after the clip at 1
            p = np.minimum(1.0, c * raw)
            if p.mean() >= target * 0.999 or p.min() >= 1.0:
                break
            c *= target / p.mean()
    keep = rng.random(len(raw)) < p
    values = outside.values[keep] + rng.normal(0.0, 1.0, keep.sum()) * noise[users[keep]]
    return SparseLabels(outside.n_items, outside.keys[keep], np.clip(values, 1.0, 5.0).astype(np.float32))
