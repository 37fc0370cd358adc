"""(Adapter, ours) Show the trend signal in prompts: each item's title gets its recent-plays tier.

``trend_promotion`` mixes interest with *short-term* popularity (plays in the last days before the
user's cutoff), but ``flexrec.data``'s prompts show only titles and topics, so a policy could learn
that half of the label only by memorising item names. Until the prompts carry it (requested from
the data package, issue 4), this adapter appends a tier word to every title, from the quintile of
log1p(recent plays) over the catalogue: "Quiet Harbor (jazz) - hot lately".

It is exact only when every user shares one cutoff day (the synthetic world); with per-user cutoffs
(MovieLens) one global tier would leak plays after some users' cutoffs, so it is not applied there.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from flexrec.data.world import InteractionData

TIERS = ("cold", "cool", "warm", "hot", "viral")


def trend_tiers(data: InteractionData) -> np.ndarray:
    """Quintile (0..4) of each item's recent plays. Shapes: (n_items,) int64."""
    end = int(data.cutoff_day.max())
    recent = np.log1p(data.daily_popularity[max(0, end - data.trend_window) : end].sum(0))
    rank = np.argsort(np.argsort(recent, kind="stable"), kind="stable")
    return (rank * len(TIERS) // len(recent)).astype(np.int64)


def with_trend_tags(data: InteractionData) -> InteractionData:
    """A view of ``data`` whose titles end in the item's trend tier; ``data`` itself is unchanged."""
    if len(np.unique(data.cutoff_day)) != 1:
        return data
    tiers = trend_tiers(data)
    titles = [f"{title} - {TIERS[t]} lately" for title, t in zip(data.item_titles, tiers)]
    return dataclasses.replace(data, item_titles=titles)
