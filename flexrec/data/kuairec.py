"""KuaiRec 2.0 loader (the official `data/` folder; not downloadable here, tests use fixtures).

Files (official names and columns; only the columns listed are read):
- small_matrix.csv (required): user_id, video_id, time/date, timestamp, watch_ratio. The fully
  observed 1411 x 3327 matrix: the true interest (watch ratio) of its users for its videos.
- item_categories.csv (required): video_id, feat (a list like "[8, 27]") -> topics.
- item_daily_features.csv (required): video_id, date (YYYYMMDD), play_cnt -> the daily plays.
- big_matrix.csv (optional): user_id, video_id, timestamp, date, watch_ratio -> the histories.
- kuairec_caption_category.csv (optional): video_id, caption, first_level_category_name -> titles.

Choices (ours): users are the small-matrix users; candidates are the small-matrix videos.
With big_matrix.csv, a user's history is their big-matrix rows (the last `max_history`, by time);
without it, their first `n_history` small-matrix rows by time become the history. The true interest is
their small-matrix rows outside the history; `observe_fraction` of it is the observed feedback.
A watch ratio maps to labels by `interest_range = (0, 2)` (a ratio of 2 or more is full interest).
The trend signal is the plays in the `trend_window` days before the day after the user's last history row.
"""

from __future__ import annotations

import csv
import logging
from datetime import date
from pathlib import Path

import numpy as np

from .world import InteractionData, SparseLabels, histories_to_csr, observe_subset

log = logging.getLogger(__name__)

COLUMNS = {
    "small_matrix.csv": ["user_id", "video_id", "timestamp", "watch_ratio"],
    "big_matrix.csv": ["user_id", "video_id", "timestamp", "watch_ratio"],
    "item_categories.csv": ["video_id", "feat"],
    "item_daily_features.csv": ["video_id", "date", "play_cnt"],
    "kuairec_caption_category.csv": ["video_id", "caption", "first_level_category_name"],
}


def read_csv(path: Path, required: bool = True):
    """Rows of a KuaiRec CSV as dicts of the needed columns; None if an optional file is absent."""
    if not path.exists():
        if required:
            raise FileNotFoundError(f"{path} not found; expected the KuaiRec 2.0 data/ layout, this file "
                                    f"with columns {', '.join(COLUMNS[path.name])}")
        log.info("kuairec: optional %s not found", path.name)
        return None
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in COLUMNS[path.name] if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing}; expected {', '.join(COLUMNS[path.name])}")
        return [{c: row[c] for c in COLUMNS[path.name]} for row in reader]


def day_of(yyyymmdd: str) -> int:
    """YYYYMMDD (possibly "20200705.0") -> a day ordinal."""
    s = str(int(float(yyyymmdd)))
    return date(int(s[:4]), int(s[4:6]), int(s[6:8])).toordinal()


def _numeric(rows, name: str, columns: list[str]) -> list[list[float]]:
    """The given columns as floats; rows with an empty/NaN value are dropped with a count."""
    out = []
    for row in rows:
        try:
            values = [float(row[c]) for c in columns]
        except ValueError:
            continue
        if not any(np.isnan(values)):
            out.append(values)
    if len(out) < len(rows):
        log.warning("kuairec: dropped %d rows of %s with a missing value", len(rows) - len(out), name)
    return out


def load_kuairec(path: str | Path | None = None, n_history: int = 20, max_history: int = 500,
                 observe_fraction: float = 0.1, seed: int = 0, trend_window: int = 1) -> InteractionData:
    """Load KuaiRec 2.0 from its `data/` folder (see the module docstring)."""
    if path is None:
        raise FileNotFoundError("KuaiRec cannot be downloaded here: pass path= to the KuaiRec 2.0 data/ folder")
    folder = Path(path)
    small = _numeric(read_csv(folder / "small_matrix.csv"), "small_matrix.csv", COLUMNS["small_matrix.csv"])
    categories = read_csv(folder / "item_categories.csv")
    daily_rows = read_csv(folder / "item_daily_features.csv")
    big_rows = read_csv(folder / "big_matrix.csv", required=False)
    captions = read_csv(folder / "kuairec_caption_category.csv", required=False) or []

    item_keys = sorted({str(int(float(r["video_id"]))) for r in categories} | {str(int(r[1])) for r in small}, key=int)
    item_index = {k: i for i, k in enumerate(item_keys)}
    feats = {str(int(float(r["video_id"]))): [int(x) for x in r["feat"].strip("[] ").split(",") if x.strip()]
             for r in categories}
    topic_ids = sorted({t for ts in feats.values() for t in ts})
    item_topics = np.zeros((len(item_keys), len(topic_ids)), bool)
    for k, ts in feats.items():
        item_topics[item_index[k], [topic_ids.index(t) for t in ts]] = True
    names = {str(int(float(r["video_id"]))): (r["caption"] or "").strip()[:40] or r["first_level_category_name"]
             for r in captions}
    titles = [names.get(k) or f"video {k}" for k in item_keys]

    user_keys = sorted({str(int(r[0])) for r in small}, key=int)
    user_index = {k: i for i, k in enumerate(user_keys)}
    s = np.array(small, np.float64)
    s_users = np.array([user_index[str(int(u))] for u in s[:, 0]], np.int64)
    s_items = np.array([item_index[str(int(i))] for i in s[:, 1]], np.int64)
    first_day = min(day_of(r["date"]) for r in daily_rows)

    def to_day(stamps: np.ndarray) -> np.ndarray:  # UTC, so the same on every machine
        return (np.floor(stamps / 86400).astype(np.int64) + date(1970, 1, 1).toordinal() - first_day)

    if big_rows is not None:
        b = np.array([r for r in _numeric(big_rows, "big_matrix.csv", COLUMNS["big_matrix.csv"])
                      if str(int(r[0])) in user_index and str(int(r[1])) in item_index], np.float64).reshape(-1, 4)
        h_users = np.array([user_index[str(int(u))] for u in b[:, 0]], np.int64)
        h_items = np.array([item_index[str(int(i))] for i in b[:, 1]], np.int64)
        h_stamps, h_values = b[:, 2], b[:, 3]
        order = np.lexsort((h_stamps, h_users))  # keep the last max_history rows of each user
        end = np.searchsorted(h_users[order], h_users[order], side="right")
        keep = np.zeros(len(order), bool)
        keep[order] = end - np.arange(len(order)) <= max_history
        h_users, h_items, h_stamps, h_values = h_users[keep], h_items[keep], h_stamps[keep], h_values[keep]
        truth = np.ones(len(s_users), bool)
    else:
        order = np.lexsort((s[:, 2], s_users))
        rank = np.arange(len(order)) - np.searchsorted(s_users[order], s_users[order])
        in_history = np.zeros(len(order), bool)
        in_history[order] = rank < n_history
        h_users, h_items, h_stamps, h_values = s_users[in_history], s_items[in_history], s[in_history, 2], s[in_history, 3]
        truth = ~in_history
    # An item in the user's history is never a candidate, so its small-matrix row is not a label.
    hist_keys = set((h_users * len(item_keys) + h_items).tolist())
    truth &= ~np.isin(s_users * len(item_keys) + s_items, list(hist_keys))
    h_days = to_day(h_stamps)

    d = np.array([[day_of(r["date"]) - first_day, item_index.get(str(int(float(r["video_id"]))), -1),
                   float(r["play_cnt"] or 0)] for r in daily_rows], np.float64)
    d = d[d[:, 1] >= 0]
    n_days = int(max(d[:, 0].max(), h_days.max(initial=0))) + 1
    daily = np.zeros((n_days, len(item_keys)), np.float32)
    np.add.at(daily, (d[:, 0].astype(np.int64), d[:, 1].astype(np.int64)), d[:, 2])
    cutoff = np.zeros(len(user_keys), np.int64)
    np.maximum.at(cutoff, h_users, h_days + 1)
    cutoff = cutoff.clip(max=n_days)

    ptr, hi, hf, hd = histories_to_csr(h_users, h_items, h_values, h_days, len(user_keys), h_stamps)
    true = SparseLabels.from_triples(s_users[truth], s_items[truth], s[truth, 3], len(item_keys))
    return InteractionData(
        name="kuairec", topic_names=[f"category {t}" for t in topic_ids], item_titles=titles,
        item_topics=item_topics, item_popularity=daily.sum(0), daily_popularity=daily, history_ptr=ptr,
        history_items=hi, history_feedback=hf, history_days=hd, cutoff_day=cutoff, true_interest=true,
        observed=observe_subset(true, observe_fraction, np.random.default_rng(seed)), interest_range=(0.0, 2.0),
        feedback_format="watched {:.1f}x", trend_window=trend_window, candidate_items=np.unique(s_items),
        user_keys=user_keys, item_keys=item_keys, observe_fraction=observe_fraction)
