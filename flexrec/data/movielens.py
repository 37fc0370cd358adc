"""MovieLens-100K and -1M loaders (official GroupLens layouts, and RecBole's atomic files).

The licence forbids redistribution: files are read from a user's path or, for ML-100K, from the
installed `recbole==1.2.1` wheel (`pip install --no-deps recbole==1.2.1`); never commit them.

Split (ours, per user, by time): the user's last `n_heldout` ratings (at most half of them) are the
"future": their ratings are the true interest of those items, and `observe_fraction` of them are the
observed feedback. Everything earlier is the history, which therefore precedes every candidate.
Days count from the first rating; the trend signal is the plays in the `trend_window` days before the
user's first held-out rating. Item popularity counts history ratings only (no future leaks into it).
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import numpy as np

from .world import InteractionData, SparseLabels, histories_to_csr, observe_subset

log = logging.getLogger(__name__)

ML100K_GENRES = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
                 "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
                 "Romance", "Sci-Fi", "Thriller", "War", "Western"]
LAYOUTS = {
    "u.data": "GroupLens ML-100K u.data: tab-separated user_id, item_id, rating, timestamp",
    "u.item": "GroupLens ML-100K u.item: '|'-separated id|title|release date|video date|url|19 genre flags",
    "ml-100k.inter": "RecBole atomic file: tab-separated header user_id:token item_id:token rating:float timestamp:float",
    "ml-100k.item": "RecBole atomic file: tab-separated header item_id:token movie_title:token_seq release_year:token class:token_seq",
    "ratings.dat": "ML-1M ratings.dat: UserID::MovieID::Rating::Timestamp",
    "movies.dat": "ML-1M movies.dat: MovieID::Title::Genres (genres '|'-separated)",
}


def read_rows(path: Path, sep: str, min_fields: int, encoding: str = "latin-1", skip_header: bool = False):
    """Split each non-empty line of `path`; a missing file or a short line names the layout expected."""
    if not path.exists():
        raise FileNotFoundError(f"{path} not found; expected {LAYOUTS.get(path.name, path.name)}")
    rows = []
    with open(path, encoding=encoding) as f:
        lines = f.read().splitlines()
    for n, line in enumerate(lines[1:] if skip_header else lines, start=2 if skip_header else 1):
        if not line.strip():
            continue
        fields = line.split(sep)
        if len(fields) < min_fields:
            raise ValueError(f"{path}:{n}: expected at least {min_fields} fields separated by {sep!r} "
                             f"({LAYOUTS.get(path.name, '')}), got {line!r}")
        rows.append(fields)
    return rows


def read_recbole(path: Path, columns: list[str]) -> list[list[str]]:
    """Rows of a RecBole atomic file, restricted to `columns` (header names before ':')."""
    if not path.exists():
        raise FileNotFoundError(f"{path} not found; expected {LAYOUTS.get(path.name, path.name)}")
    with open(path, encoding="utf-8") as f:
        header = [h.split(":")[0] for h in f.readline().rstrip("\n").split("\t")]
        missing = [c for c in columns if c not in header]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing}; expected {LAYOUTS.get(path.name, columns)}")
        idx = [header.index(c) for c in columns]
        return [[fields[i] for i in idx] for fields in (line.rstrip("\n").split("\t") for line in f) if len(fields) > 1]


def recbole_ml100k_dir() -> Path:
    """The ML-100K folder inside the installed recbole package (found without importing recbole)."""
    spec = importlib.util.find_spec("recbole")
    folder = Path(spec.submodule_search_locations[0]) / "dataset_example" / "ml-100k" if spec else None
    if folder is None or not (folder / "ml-100k.inter").exists():
        raise FileNotFoundError("ML-100K not found: pass path= to a folder with GroupLens u.data/u.item, "
                                "or install the RecBole wheel that bundles it: pip install --no-deps recbole==1.2.1")
    return folder


def load_ml100k(path: str | Path | None = None, **options) -> InteractionData:
    """ML-100K from GroupLens `u.data`/`u.item` or RecBole `ml-100k.inter`/`.item` (installed recbole if no path)."""
    folder = recbole_ml100k_dir() if path is None else Path(path)
    if (folder / "u.data").exists():
        ratings = read_rows(folder / "u.data", "\t", 4)
        movies = read_rows(folder / "u.item", "|", 24)
        catalogue = {m[0]: (m[1], [g for g, flag in zip(ML100K_GENRES, m[5:24]) if flag == "1"]) for m in movies}
    elif (folder / "ml-100k.inter").exists():
        ratings = read_recbole(folder / "ml-100k.inter", ["user_id", "item_id", "rating", "timestamp"])
        movies = read_recbole(folder / "ml-100k.item", ["item_id", "movie_title", "release_year", "class"])
        catalogue = {m[0]: (f"{m[1]} ({m[2]})", m[3].split()) for m in movies}
    else:
        raise FileNotFoundError(f"{folder}: no ML-100K files; expected {LAYOUTS['u.data']} and "
                                f"{LAYOUTS['u.item']}, or {LAYOUTS['ml-100k.inter']} and {LAYOUTS['ml-100k.item']}")
    return from_ratings("ml-100k", ratings, catalogue, **options)


def load_ml1m(path: str | Path | None = None, **options) -> InteractionData:
    """ML-1M from `ratings.dat` and `movies.dat` (users.dat is not needed)."""
    if path is None:
        raise FileNotFoundError("ML-1M cannot be downloaded here: pass path= to the folder with "
                                f"{LAYOUTS['ratings.dat']} and {LAYOUTS['movies.dat']}")
    folder = Path(path)
    ratings = read_rows(folder / "ratings.dat", "::", 4)
    movies = read_rows(folder / "movies.dat", "::", 3)
    catalogue = {m[0]: (m[1], m[2].split("|")) for m in movies}
    return from_ratings("ml-1m", ratings, catalogue, **options)


def from_ratings(name: str, ratings: list[list[str]], catalogue: dict[str, tuple[str, list[str]]],
                 n_heldout: int = 10, observe_fraction: float = 0.1, seed: int = 0,
                 trend_window: int = 7) -> InteractionData:
    """Build InteractionData from rows (user, item, rating, timestamp) and {item: (title, genres)}."""
    if not ratings:
        raise ValueError(f"{name}: no ratings")
    unknown_items = sorted({r[1] for r in ratings} - set(catalogue))
    if unknown_items:
        log.warning("%s: %d rated items have no catalogue entry; titled 'item <id>'", name, len(unknown_items))
        catalogue = {**catalogue, **{i: (f"item {i}", []) for i in unknown_items}}
    item_keys = sorted(catalogue, key=lambda k: (len(k), k))
    item_index = {k: i for i, k in enumerate(item_keys)}
    user_keys = sorted({r[0] for r in ratings}, key=lambda k: (len(k), k))
    user_index = {k: i for i, k in enumerate(user_keys)}
    users = np.array([user_index[r[0]] for r in ratings], np.int64)
    items = np.array([item_index[r[1]] for r in ratings], np.int64)
    values = np.array([float(r[2]) for r in ratings], np.float32)
    stamps = np.array([int(float(r[3])) for r in ratings], np.int64)
    days = (stamps - stamps.min()) // 86400

    # Per user, by time: the last n_heldout (at most half) are the future; the rest is the history.
    order = np.lexsort((stamps, users))
    counts = np.bincount(users, minlength=len(user_keys))
    start = np.concatenate([[0], np.cumsum(counts)])[users[order]]
    rank = np.arange(len(order)) - start  # position within the user's own time line
    n_future = np.minimum(n_heldout, counts // 2)[users[order]]
    future = np.zeros(len(order), bool)
    future[order] = rank >= counts[users[order]] - n_future
    if (counts < 2).any():
        log.warning("%s: %d users have fewer than 2 ratings: no held-out labels for them",
                    name, int((counts < 2).sum()))

    n_days = int(days.max()) + 1
    cutoff = np.full(len(user_keys), n_days, np.int64)
    np.minimum.at(cutoff, users[future], days[future])
    daily = np.zeros((n_days, len(item_keys)), np.float32)
    np.add.at(daily, (days, items), 1.0)
    hist = ~future
    ptr, h_items, h_fb, h_days = histories_to_csr(users[hist], items[hist], values[hist], days[hist], len(user_keys),
                                               stamps[hist])
    topic_names = sorted({g for _, genres in catalogue.values() for g in genres})
    topic_index = {g: t for t, g in enumerate(topic_names)}
    item_topics = np.zeros((len(item_keys), len(topic_names)), bool)
    for k, (_, genres) in catalogue.items():
        item_topics[item_index[k], [topic_index[g] for g in genres]] = True
    true = SparseLabels.from_triples(users[future], items[future], values[future], len(item_keys))
    observed = observe_subset(true, observe_fraction, np.random.default_rng(seed))
    return InteractionData(
        name=name, topic_names=topic_names, item_titles=[catalogue[k][0] for k in item_keys],
        item_topics=item_topics, item_popularity=np.bincount(items[hist], minlength=len(item_keys)).astype(np.float32),
        daily_popularity=daily, history_ptr=ptr, history_items=h_items, history_feedback=h_fb, history_days=h_days,
        cutoff_day=cutoff, true_interest=true, observed=observed, interest_range=(1.0, 5.0),
        feedback_format="rated {:.0f}/5", trend_window=trend_window, user_keys=user_keys, item_keys=item_keys,
        observe_fraction=observe_fraction)
