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


# ------------------------------------------------------------------------------------------------
# Compact prompts for the tiny from-scratch model
# ------------------------------------------------------------------------------------------------
#
# (ours) A randomly initialised tiny model cannot learn to read flexrec.data's full chat prompts
# (~240 tokens at K=10: system prompt, titles, "liked it 4.5/5") within a 5-minute CPU budget: SFT
# loss stayed at the uniform level for 300+ steps, and it stayed there too on compact prompts that
# listed the history separately (matching a candidate's topic against the history is a second
# attention hop that did not form in 800 steps). The compact prompt therefore summarises the history
# *per candidate*, which keeps everything a need depends on within the candidate's own line:
#     "comedy hot seen 4<c3>"   = topic, trend tier, whether the topic is in the history, and the
#                                 user's mean rating of that topic there (1-5, "-" when unseen),
# followed by its slot token (the slot last, so the slot's position sees its whole line). The need
# instruction is the same paraphrase as in flexrec.data, placed last and closed by a need tag token
# (limitation: the tiny model keys on the tag, so held-out paraphrases test nothing for it). Real LLMs (smollm2-135m, local paths) keep
# flexrec.data's prompts.


def compact_prompt(example, data: InteractionData, max_history: int = 0) -> str:
    """Shapes: one RankingExample -> one string ending where the first slot token is due.

    (``max_history`` is unused: the whole history is summarised per topic.)
    """
    tiers = _tiers_of(data)
    h_items, h_fb, _ = data.history(example.user)
    h_topics = data.item_topics[h_items].astype(np.float32)  # (h, T)
    count = h_topics.sum(0)
    mean = (h_topics * data.normalized_interest(h_fb)[:, None]).sum(0) / np.maximum(count, 1.0)

    def line(k: int, item: int) -> str:
        topics = np.flatnonzero(data.item_topics[item])
        seen = count[topics].sum() > 0
        rating = f"{float(mean[topics][count[topics] > 0].mean()) * 4 + 1:.0f}" if seen else "-"
        names = " ".join(data.topic_names[t] for t in topics)
        return f"{names} {TIERS[tiers[item]]} {'seen' if seen else 'new'} {rating}<c{k}>"

    # The instruction comes last, closed by the need's name as one tag token ("need: trend_promotion"),
    # so the answer position holds the need itself. Without the tag (the paraphrase alone, first or
    # last) the tiny model learned single needs within 200 steps but not to tell the three apart.
    return "\n".join([line(k, int(item)) for k, item in enumerate(example.items)]
                     + [f"{example.instruction} <need:{example.need}>"])


def _tiers_of(data: InteractionData) -> np.ndarray:
    cached = getattr(data, "_flexrec_tiers", None)
    if cached is None:
        cached = trend_tiers(data)
        object.__setattr__(data, "_flexrec_tiers", cached)
    return cached


def compact_collate(examples, tokenizer, data: InteractionData, max_history: int = 0):
    """flexrec.data.collate with compact prompts: the same RankingBatch, left-padded."""
    from flexrec.data import collate

    return collate(examples, tokenizer, data, render=lambda e: compact_prompt(e, data, max_history))
