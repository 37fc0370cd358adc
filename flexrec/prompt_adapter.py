"""(Adapter, ours) Compact prompts for the tiny from-scratch model (the full prompts are flexrec.data's)."""

from __future__ import annotations

import numpy as np

from flexrec.data.world import TREND_TIERS, InteractionData


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


def compact_prompt(example, data: InteractionData, trend: bool = True) -> str:
    """Shapes: one RankingExample -> one string ending where the first slot token is due.

    The whole history is summarised per topic (so no ``max_history``). ``trend``: show each
    candidate's short-term popularity tier at the user's cutoff (``InteractionData.trend_tiers``).
    """
    tiers = data.trend_tiers(example.user) if trend else None
    h_items, h_fb, _ = data.history(example.user)
    h_topics = data.item_topics[h_items].astype(np.float32)  # (h, T)
    count = h_topics.sum(0)
    mean = (h_topics * data.normalized_interest(h_fb)[:, None]).sum(0) / np.maximum(count, 1.0)

    def line(k: int, item: int) -> str:
        topics = np.flatnonzero(data.item_topics[item])
        seen = count[topics].sum() > 0
        rating = f"{float(mean[topics][count[topics] > 0].mean()) * 4 + 1:.0f}" if seen else "-"
        names = " ".join(data.topic_names[t] for t in topics)
        tier = f" {TREND_TIERS[tiers[item]]}" if trend else ""
        return f"{names}{tier} {'seen' if seen else 'new'} {rating}<c{k}>"

    # The instruction comes last, closed by the need's name as one tag token ("need: trend_promotion"),
    # so the answer position holds the need itself. Without the tag (the paraphrase alone, first or
    # last) the tiny model learned single needs within 200 steps but not to tell the three apart.
    return "\n".join([line(k, int(item)) for k, item in enumerate(example.items)]
                     + [f"{example.instruction} <need:{example.need}>"])


def compact_collate(examples, tokenizer, data: InteractionData, trend: bool = True):
    """flexrec.data.collate with compact prompts: the same RankingBatch, left-padded."""
    from flexrec.data import collate

    return collate(examples, tokenizer, data, render=lambda e: compact_prompt(e, data, trend))
