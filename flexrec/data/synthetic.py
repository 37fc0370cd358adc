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
"""

from __future__ import annotations

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


def SyntheticWorld(seed: int = 0, n_users: int = 300, n_items: int = 400, n_topics: int = 8,
                   n_days: int = 30, history_len: tuple[int, int] = (8, 30), taste_scale: float = 1.2,
                   history_sharpness: float = 5.0, trend_window: int = 3, observe_fraction: float = 0.1,
                   feedback_noise: float = 0.3) -> InteractionData:
    """Generate a synthetic world (see the module docstring for the model).

    Shapes of the result: n_users users, n_items items, n_topics topics, n_days days of plays.
    """
    if not 1 <= n_topics <= len(TOPICS):
        raise ValueError(f"n_topics must be in 1..{len(TOPICS)}, got {n_topics}")
    if n_items < 1 or n_users < 1 or n_days < trend_window or history_len[0] > history_len[1]:
        raise ValueError("need n_items >= 1, n_users >= 1, n_days >= trend_window, history_len lo <= hi")
    rng = np.random.default_rng(seed)

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
    lengths = rng.integers(history_len[0], history_len[1] + 1, n_users).clip(max=n_items)
    users, items, feedback, days = [], [], [], []
    for u in range(n_users):
        score = history_sharpness * taste[u, topic] + 0.5 * np.log(base)
        p = np.exp(score - score.max())
        chosen = rng.choice(n_items, lengths[u], replace=False, p=p / p.sum())
        fb = np.clip(interest[u, chosen] + rng.normal(0.0, feedback_noise, len(chosen)), 1.0, 5.0)
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
    observed = observe_subset(outside, observe_fraction, rng, feedback_noise, clip=(1.0, 5.0))

    return InteractionData(
        name="synthetic", topic_names=TOPICS[:n_topics], item_titles=titles, item_topics=item_topics,
        item_popularity=daily.sum(0),
        daily_popularity=daily, history_ptr=ptr, history_items=h_items, history_feedback=h_fb,
        history_days=h_days, cutoff_day=np.full(n_users, n_days, np.int64), true_interest=true,
        observed=observed, interest_range=(1.0, 5.0), feedback_format="liked it {:.1f}/5",
        trend_window=trend_window, user_keys=[f"u{u}" for u in range(n_users)],
        item_keys=[f"i{i}" for i in range(n_items)], observe_fraction=observe_fraction)
