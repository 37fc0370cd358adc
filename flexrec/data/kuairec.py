"""KuaiRec 2.0 loader (the official `data/` folder; not downloadable here, tests use fixtures).

Files (official names and columns; only the columns listed in COLUMNS are read):
- small_matrix.csv (required): user_id, video_id, timestamp, watch_ratio. The fully observed
  1411 x 3327 matrix: the true interest (watch ratio) of its users for its videos.
- item_categories.csv (required): video_id, feat (a list like "[8, 27]") -> topics.
- item_daily_features.csv (required): video_id, date (YYYYMMDD), play_cnt -> the daily plays.
- big_matrix.csv (optional): user_id, video_id, timestamp, watch_ratio -> the histories.
- kuairec_caption_category.csv (optional): video_id, caption, first_level_category_name -> titles.

Choices (ours): users are the small-matrix users; candidates are the small-matrix videos.
With big_matrix.csv, a user's history is their big-matrix rows (the last `max_history`, by time);
without it, their first `n_history` small-matrix rows by time become the history. The true interest is
their small-matrix rows outside the history; `observe_fraction` of it is the observed feedback.
A watch ratio maps to labels by `interest_range = (0, 2)` (a ratio of 2 or more is full interest).
Days are UTC days from the first date of item_daily_features.csv; the trend signal is the plays in the
`trend_window` days before the day after the user's last history row.
Numeric files are streamed (big_matrix.csv has 12.5M rows): rows of other users are not kept, and
rows with an empty or NaN value are dropped with a count in the log (the official files have such rows).
A missing column is a `flexrec.data.frames.DataFileError`, as for every loader. The split is KuaiRec's own,
not `flexrec.data.frames`' per-user time split: the truth is the fully observed small matrix.
"""

from __future__ import annotations

import csv
import logging
from datetime import date
from pathlib import Path

import numpy as np

from .frames import DataFileError
from .world import InteractionData, SparseLabels, histories_to_csr, observe_subset

log = logging.getLogger(__name__)

COLUMNS = {
    "small_matrix.csv": ["user_id", "video_id", "timestamp", "watch_ratio"],
    "big_matrix.csv": ["user_id", "video_id", "timestamp", "watch_ratio"],
    "item_categories.csv": ["video_id", "feat"],
    "item_daily_features.csv": ["video_id", "date", "play_cnt"],
    "kuairec_caption_category.csv": ["video_id", "caption", "first_level_category_name"],
}
EPOCH = date(1970, 1, 1).toordinal()


def open_columns(path: Path):
    """(rows iterator, indices of COLUMNS[path.name]); a missing file or column says what is expected."""
    if not path.exists():
        raise FileNotFoundError(f"{path} not found; expected the KuaiRec 2.0 data/ layout, this file "
                                f"with columns {', '.join(COLUMNS[path.name])}")
    f = open(path, encoding="utf-8", errors="replace", newline="")
    reader = csv.reader(f)
    header = next(reader, [])
    missing = [c for c in COLUMNS[path.name] if c not in header]
    if missing:
        f.close()
        raise DataFileError(str(path), 1, missing[0], f"missing column; expected {', '.join(COLUMNS[path.name])}")
    return f, reader, [header.index(c) for c in COLUMNS[path.name]]


def read_numeric(path: Path, keep_users: set[int] | None = None) -> np.ndarray:
    """The COLUMNS of a numeric file as floats, streamed. Shapes: (N, n_columns) float64."""
    f, reader, idx = open_columns(path)
    out, dropped = [], 0
    with f:
        for row in reader:
            try:
                values = [float(row[i]) for i in idx]
            except (ValueError, IndexError):
                dropped += 1
                continue
            if any(v != v for v in values):  # NaN
                dropped += 1
            elif keep_users is None or int(values[0]) in keep_users:
                out.append(values)
    if dropped:
        log.warning("kuairec: dropped %d rows of %s with a missing value", dropped, path.name)
    return np.array(out, np.float64).reshape(-1, len(idx))


def read_text(path: Path) -> list[list[str]]:
    """The COLUMNS of a small text file, as strings."""
    f, reader, idx = open_columns(path)
    with f:
        return [[row[i] for i in idx] for row in reader if len(row) > max(idx)]


def ordinal_days(yyyymmdd: np.ndarray) -> np.ndarray:
    """YYYYMMDD numbers -> day ordinals."""
    return np.array([date(int(d) // 10000, int(d) // 100 % 100, int(d) % 100).toordinal() for d in yyyymmdd])


def load_kuairec(path: str | Path | None = None, n_history: int = 20, max_history: int = 500,
                 observe_fraction: float = 0.1, seed: int = 0, trend_window: int = 1) -> InteractionData:
    """Load KuaiRec 2.0 from its `data/` folder (see the module docstring)."""
    if path is None:
        raise FileNotFoundError("KuaiRec cannot be downloaded here: give --data-path DIR (path= in Python), the KuaiRec 2.0 "
                                "data/ folder")
    folder = Path(path)
    small = read_numeric(folder / "small_matrix.csv")
    categories = read_text(folder / "item_categories.csv")
    daily = read_numeric(folder / "item_daily_features.csv")
    big = read_numeric(folder / "big_matrix.csv", keep_users=set(small[:, 0].astype(int).tolist())) \
        if (folder / "big_matrix.csv").exists() else None
    captions = read_text(folder / "kuairec_caption_category.csv") \
        if (folder / "kuairec_caption_category.csv").exists() else []
    log.info("kuairec: big_matrix.csv %s, captions %s", "used" if big is not None else "absent (histories "
             "from the small matrix)", "used" if captions else "absent (titles 'video <id>')")

    # Items: every video with a category row or a small-matrix row, indexed in id order.
    feats = {int(float(v)): [int(x) for x in feat.strip("[] ").split(",") if x.strip()] for v, feat in categories}
    item_ids = np.union1d(list(feats), small[:, 1].astype(np.int64))
    if big is not None:  # big-matrix rows of unknown videos cannot be shown; count them
        unknown = ~np.isin(big[:, 1].astype(np.int64), item_ids)
        if unknown.any():
            log.warning("kuairec: dropped %d big_matrix.csv rows of videos without a category", unknown.sum())
            big = big[~unknown]
    topic_ids = sorted({t for ts in feats.values() for t in ts})
    item_topics = np.zeros((len(item_ids), len(topic_ids)), bool)
    for v, ts in feats.items():
        item_topics[np.searchsorted(item_ids, v), [topic_ids.index(t) for t in ts]] = True
    names = {int(float(v)): caption.strip()[:40] or category for v, caption, category in captions}
    titles = [names.get(int(v)) or f"video {v}" for v in item_ids]

    user_ids = np.unique(small[:, 0].astype(np.int64))
    s_users = np.searchsorted(user_ids, small[:, 0].astype(np.int64))
    s_items = np.searchsorted(item_ids, small[:, 1].astype(np.int64))
    dates = np.unique(daily[:, 1])
    ordinals = ordinal_days(dates)
    first_day = int(ordinals.min())

    if big is not None:
        h_users = np.searchsorted(user_ids, big[:, 0].astype(np.int64))
        h_items = np.searchsorted(item_ids, big[:, 1].astype(np.int64))
        h_stamps, h_values = big[:, 2], big[:, 3]
        order = np.lexsort((h_stamps, h_users))  # keep the last max_history rows of each user
        end = np.searchsorted(h_users[order], h_users[order], side="right")
        keep = np.zeros(len(order), bool)
        keep[order] = end - np.arange(len(order)) <= max_history
        h_users, h_items, h_stamps, h_values = h_users[keep], h_items[keep], h_stamps[keep], h_values[keep]
        truth = np.ones(len(s_users), bool)
    else:
        order = np.lexsort((small[:, 2], s_users))  # the first n_history rows of each user
        rank = np.arange(len(order)) - np.searchsorted(s_users[order], s_users[order])
        in_history = np.zeros(len(order), bool)
        in_history[order] = rank < n_history
        h_users, h_items, h_stamps, h_values = (s_users[in_history], s_items[in_history], small[in_history, 2],
                                                small[in_history, 3])
        truth = ~in_history
    # An item in the user's history is never a candidate, so its small-matrix row is not a label.
    truth &= ~np.isin(s_users * len(item_ids) + s_items, h_users * len(item_ids) + h_items)
    h_days = np.floor(h_stamps / 86400).astype(np.int64) + EPOCH - first_day  # UTC days

    d_days = ordinals[np.searchsorted(dates, daily[:, 1])] - first_day
    d_items = np.searchsorted(item_ids, daily[:, 0].astype(np.int64)).clip(max=len(item_ids) - 1)
    known = item_ids[d_items] == daily[:, 0].astype(np.int64)
    if not known.all():
        log.warning("kuairec: ignored %d item_daily_features.csv rows of unknown videos", (~known).sum())
    n_days = int(max(d_days.max(initial=0), h_days.max(initial=0))) + 1
    plays = np.zeros((n_days, len(item_ids)), np.float32)
    np.add.at(plays, (d_days[known], d_items[known]), daily[known, 2])
    cutoff = np.zeros(len(user_ids), np.int64)
    np.maximum.at(cutoff, h_users, h_days + 1)

    ptr, hi, hf, hd = histories_to_csr(h_users, h_items, h_values, h_days, len(user_ids), h_stamps)
    true = SparseLabels.from_triples(s_users[truth], s_items[truth], small[truth, 3], len(item_ids))
    return InteractionData(
        name="kuairec", topic_names=[f"category {t}" for t in topic_ids], item_titles=titles,
        item_topics=item_topics, item_popularity=plays.sum(0), daily_popularity=plays, history_ptr=ptr,
        history_items=hi, history_feedback=hf, history_days=hd, cutoff_day=cutoff.clip(max=n_days),
        true_interest=true, observed=observe_subset(true, observe_fraction, np.random.default_rng(seed)),
        interest_range=(0.0, 2.0), feedback_format="watched {:.1f}x", trend_window=trend_window,
        candidate_items=np.unique(s_items), user_keys=[str(u) for u in user_ids],
        item_keys=[str(v) for v in item_ids], observe_fraction=observe_fraction)
