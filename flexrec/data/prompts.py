"""Prompts: need instruction + recent history + candidates named by slot tokens.

Two renderings of one `RankingExample`:
- the full chat prompt (`render_prompt`), for pretrained LLMs;
- the compact prompt (`compact_prompt`), for the tiny randomly initialised model, which cannot learn to
  read the full prompt within a CPU budget (measured: docs/DESIGN.md, "Compact prompts").

Each candidate line ends with the item's short-term popularity tier at the user's cutoff ("- hot
lately", ``InteractionData.trend_tiers``), the signal the trend need depends on; ``trend=False``
leaves it out.

The rendered prompt ends where the answer starts (the chat template's generation prompt, or
"Ranking:" without one), so the model's next token should be the first slot token. A token budget is
met by dropping the oldest history lines; the candidates are never shortened (if they alone do not
fit, that is an error: raise the budget or lower K).
"""

from __future__ import annotations

import numpy as np

from flexrec.config import SIGNAL_SCALES

from .examples import RankingExample
from .needs import minmax
from .slots import slot_tokens
from .world import TREND_TIERS, InteractionData

SYSTEM_PROMPT = ("You are a recommender. Rank every candidate for the user's stated need, best first, "
                 "by writing the candidates' slot tokens, each exactly once.")


def item_text(data: InteractionData, item: int) -> str:
    """"Title [topic, topic]"; topics already in the title (synthetic "(jazz)") are not repeated."""
    title = data.item_titles[item]
    topics = [data.topic_names[t] for t in data.item_topics[item].nonzero()[0]]
    topics = [t for t in topics if f"({t})" not in title]
    return f"{title} [{', '.join(topics)}]" if topics else title


def user_message(example: RankingExample, data: InteractionData, n_history: int, trend: bool = True) -> str:
    """The user turn, with the `n_history` most recent history items (oldest first)."""
    lines = [f"Need: {example.instruction}", ""]
    if n_history > 0 and len(example.history_items):
        lines.append("Recent history, oldest first:")
        for item, fb in zip(example.history_items[-n_history:], example.history_feedback[-n_history:]):
            lines.append(f"- {item_text(data, int(item))}: {data.feedback_format.format(float(fb))}")
    else:
        lines.append("Recent history: none.")
    lines += ["", "Candidates:"]
    tiers = data.trend_tiers(example.user) if trend else None
    for slot, item in zip(slot_tokens(example.K), example.items):
        tier = f" - {TREND_TIERS[tiers[item]]} lately" if trend else ""
        lines.append(f"{slot} {item_text(data, int(item))}{tier}")
    lines += ["", f"Answer with all {example.K} candidate slots, best first."]
    return "\n".join(lines)


def format_prompt(example: RankingExample, data: InteractionData, tokenizer, n_history: int,
                  trend: bool = True) -> str:
    """The full prompt text with `n_history` history items, through the chat template if there is one."""
    messages = [{"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": user_message(example, data, n_history, trend)}]
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return f"{SYSTEM_PROMPT}\n\n{messages[1]['content']}\n\nRanking:"


def count_tokens(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def render_prompt(example: RankingExample, data: InteractionData, tokenizer, max_tokens: int = 1024,
                  max_history: int = 20, trend: bool = True) -> str:
    """The prompt with as much of the last `max_history` history items as fits in `max_tokens`.

    Binary search on the number of history items kept (the length grows with it).
    Raises ValueError if the prompt with no history at all exceeds `max_tokens`.
    """
    lo, hi = 0, min(max_history, len(example.history_items))
    shortest = format_prompt(example, data, tokenizer, 0, trend)
    if count_tokens(tokenizer, shortest) > max_tokens:
        raise ValueError(f"the prompt without history needs {count_tokens(tokenizer, shortest)} tokens, "
                         f"over max_tokens={max_tokens}: candidates are never cut; raise the budget or lower K")
    while lo < hi:  # invariant: lo items fit
        mid = (lo + hi + 1) // 2
        if count_tokens(tokenizer, format_prompt(example, data, tokenizer, mid, trend)) <= max_tokens:
            lo = mid
        else:
            hi = mid - 1
    return format_prompt(example, data, tokenizer, lo, trend)


SIGNAL_TIERS = 10  # the per-candidate history signals of compact prompts are tiers 0..9 within the pool
SIGNAL_NAMES = ("pop", "tr", "co", "aff", "q")  # the rows of ``history_signals``, in order


def history_signal_values(data: InteractionData, user: int, items: np.ndarray) -> np.ndarray:
    """The per-candidate signals of ``history_signals`` before they are made tiers, computed only from what
    happened before the user's cutoff day (never the user's future, nor other users' interactions on or after that
    day), in ``SIGNAL_NAMES`` order:
    - pop: overall popularity (all users' history interactions before the cutoff day), as log1p;
    - tr: short-term plays (``InteractionData.recent_popularity``, what trend_promotion's label uses), as log1p
      (as the label scales them);
    - co: how often it appears with the user's 10 most recent items in other users' histories before the
      cutoff day (``flexrec.data.pools.cooccurrence_scores``), as log1p;
    - aff: the user's affinity for its genres, the mean share of the history of the item's genres;
    - q: the item's mean rating in all users' histories before the cutoff day, shrunk to that period's mean
      rating by 10 pseudo-ratings.

    Shapes: items (K,) -> (5, K) float64.
    """
    from .pools import cooccurrence_scores

    items = np.asarray(items, np.int64)
    cutoff = int(data.cutoff_day[user])
    counts, sums = _history_totals_before(data, cutoff)
    prior = float(sums.sum() / counts.sum()) if counts.sum() else 0.5
    quality = (sums + 10.0 * prior) / (counts + 10.0)
    h_items = data.history(user)[0]
    share = data.item_topics[h_items].mean(0) if len(h_items) else np.zeros(data.n_topics)
    topics = data.item_topics[items]
    affinity = (topics * share[None, :]).sum(1) / np.maximum(topics.sum(1), 1)
    return np.stack([np.log1p(counts[items]), np.log1p(data.recent_popularity(user, items)),
                     np.log1p(cooccurrence_scores(data, user, before_day=cutoff)[items]), affinity,
                     quality[items]]).astype(np.float64)


def history_signals(data: InteractionData, user: int, items: np.ndarray, tiers: int = SIGNAL_TIERS,
                    scale: str = "rank") -> np.ndarray:
    """Per-candidate signals for compact prompts on real data (``InteractionData.compact_signals``): each of
    ``history_signal_values`` (pop, tr, co, aff, q) as a tier 0..tiers-1 within the pool (a pool of rated films is
    mostly in the catalogue's top quintiles, so catalogue tiers would barely tell its candidates apart).
    ``scale`` "rank": the tier is the candidate's rank within the pool in ``tiers`` groups; tied values share the
    lowest tier of their group, so equal values show equal tiers, and with ``tiers`` equal to the pool's size each
    candidate's tier is its rank. "value": the tier is the value min-max scaled within the pool and rounded to
    ``tiers`` levels, so the gap between two tiers says how far apart the values are, not only their order (a
    constant signal: tier 0).

    Shapes: items (K,) -> (5, K) int64, rows in ``SIGNAL_NAMES`` order.
    """
    if scale not in SIGNAL_SCALES:
        raise ValueError(f"unknown signal scale {scale!r}; use one of {', '.join(SIGNAL_SCALES)}")
    values = history_signal_values(data, user, items)
    if scale == "value":
        return np.stack([np.floor(minmax(x) * (tiers - 1) + 0.5) for x in values]).astype(np.int64)
    return np.stack([np.searchsorted(np.sort(x), x, side="left") * tiers // len(x) for x in values])


def _history_totals_before(data: InteractionData, day: int) -> tuple[np.ndarray, np.ndarray]:
    """(count, sum of feedback in [0, 1]) of every item's history interactions on days before ``day``,
    from per-day running totals built once per data set. Shapes: -> (n_items,) float64 each."""
    cache = data.__dict__.setdefault("_history_totals_by_day", {})
    if "counts" not in cache:
        n_days = max(int(data.history_days.max(initial=0)), int(data.cutoff_day.max(initial=0))) + 1
        counts = np.zeros((n_days + 1, data.n_items))
        sums = np.zeros((n_days + 1, data.n_items))
        np.add.at(counts, (data.history_days + 1, data.history_items), 1.0)
        np.add.at(sums, (data.history_days + 1, data.history_items), data.normalized_interest(data.history_feedback))
        cache["counts"], cache["sums"] = counts.cumsum(0), sums.cumsum(0)  # row d: days before d
    d = min(max(day, 0), len(cache["counts"]) - 1)
    return cache["counts"][d], cache["sums"][d]


def signal_tokens(tiers: int = SIGNAL_TIERS) -> list[str]:
    """The one-token words of a compact candidate line on real data (``compact_prompt``): each history
    signal's tier (0..tiers-1), the novelty flag and the user's rating of the genres ("-": none seen)."""
    return ([f"<{name}{t}>" for name in SIGNAL_NAMES for t in range(tiers)] + ["<new>", "<seen>"]
            + [f"<r{r}>" for r in ("-", 1, 2, 3, 4, 5)])


# A real-data compact candidate line is its signal tokens then its slot: the tiny model's local layer must see
# all of them from the slot token (flexrec.train.build passes this window to the tiny preset on real data).
SIGNAL_LINE_TOKENS = len(SIGNAL_NAMES) + 2 + 1  # five tiers, the novelty flag, the genre rating, the slot


# (ours) The compact prompt keeps everything a need depends on within each candidate's own line, and
# ends with the need as a tag token; the measurements behind this form: docs/DESIGN.md, "Compact prompts".
def compact_prompt(example, data: InteractionData, trend: bool = True, need_in_lines: bool = False,
                   signal_tiers: int = SIGNAL_TIERS, signal_scale: str = "rank") -> str:
    """Shapes: one RankingExample -> one string ending where the first slot token is due.

    The whole history is summarised per topic (so no ``max_history``). ``trend``: show each
    candidate's short-term popularity tier at the user's cutoff (``InteractionData.trend_tiers``).
    On real data (``InteractionData.compact_signals``) each line is one token per ``history_signals`` tier
    (tiers within the pool), the novelty flag of the need's rule (``InteractionData.novel_items``) and the
    user's rating of the film's genres, then the slot: "<pop3><tr7><co1><aff4><q8><seen><r4><c3>"
    (``signal_tokens``: the tokenizer must hold them as single tokens). ``need_in_lines`` (real data only): every
    such line starts with the need's tag, "<need:trend_promotion><pop3>...<c3>" (``SIGNAL_LINE_TOKENS`` + 1 tokens).
    ``signal_tiers``, ``signal_scale``: how many tiers each history signal has within the pool, and whether a tier
    is the candidate's rank or its scaled value there (``history_signals``).
    """
    tiers = data.trend_tiers(example.user) if trend and not data.compact_signals else None
    h_items, h_fb, _ = data.history(example.user)
    h_topics = data.item_topics[h_items].astype(np.float32)  # (h, T)
    count = h_topics.sum(0)
    mean = (h_topics * data.normalized_interest(h_fb)[:, None]).sum(0) / np.maximum(count, 1.0)

    signals = (history_signals(data, example.user, example.items, signal_tiers, signal_scale)
               if data.compact_signals else None)
    new = data.novel_items(example.user, example.items) if data.compact_signals else None

    def line(k: int, item: int) -> str:
        topics = np.flatnonzero(data.item_topics[item])
        seen = count[topics].sum() > 0
        rating = f"{float(mean[topics][count[topics] > 0].mean()) * 4 + 1:.0f}" if seen else "-"
        if signals is None:
            names = " ".join(data.topic_names[t] for t in topics)
            tier = f" {TREND_TIERS[tiers[item]]}" if trend else ""
            return f"{names}{tier} {'seen' if seen else 'new'} {rating}<c{k}>"
        # one token per signal, all within the local layer's window of the slot (SIGNAL_LINE_TOKENS); the
        # genre names are left out: aff, the rating and the novelty flag summarise them (docs/real-data-protocol.md)
        words = [f"<{name}{tier}>" for name, tier in zip(SIGNAL_NAMES, signals[:, k]) if trend or name != "tr"]
        lead = [f"<need:{example.need}>"] if need_in_lines else []
        return "".join(lead + words + [f"<{'new' if new[k] else 'seen'}>", f"<r{rating}>", f"<c{k}>"])

    # The instruction comes last, closed by the need's name as one tag token ("need: trend_promotion"),
    # so the answer position holds the need itself. Without the tag (the paraphrase alone, first or
    # last) the tiny model learned single needs within 200 steps but not to tell the three apart.
    return "\n".join([line(k, int(item)) for k, item in enumerate(example.items)]
                     + [f"{example.instruction} <need:{example.need}>"])
