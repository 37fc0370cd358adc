"""MovieLens-100K and -1M loaders (official GroupLens layouts, and RecBole's atomic files).

The licence forbids redistribution: files are read from a user's path or, for ML-100K, from the
installed `recbole==1.2.1` wheel (`pip install --no-deps recbole==1.2.1`); never commit them.

Split (ours, per user, by time; docs/real-data-protocol.md): the user's last ratings are the "future": their
ratings are the true interest of those items, and `observe_fraction` of them are the observed feedback.
Everything earlier is the history, which therefore precedes every candidate. By default ("known") the
pool holds only the future films (20 per user, a user needs 30 ratings), so every candidate's label is the
user's own rating; "implicit" pits 5 future films against 15 retrieved unwatched ones; "sparse" is the
split of `flexrec.data.frames` (last 10, at most half; unrated fillers count 0).
Days count from the first rating; the trend signal is every earlier day's plays decayed by half per week
before the user's first held-out rating. Item popularity counts history ratings only (no future leaks into it).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from .frames import INTERACTION_COLUMNS, DataFileError, Table, from_frames, read_recbole
from .world import InteractionData

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


def read_rows(path: Path, sep: str, names: list[str], encoding: str = "latin-1") -> Table:
    """The first ``len(names)`` fields of each non-empty line of a header-less file, as a Table of those
    columns; a missing file or a short line names the layout expected."""
    if not path.exists():
        raise FileNotFoundError(f"{path} not found; expected {LAYOUTS.get(path.name, path.name)}")
    with open(path, encoding=encoding) as f:
        lines = f.read().splitlines()
    columns: dict[str, list] = {n: [] for n in names}
    numbers = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        fields = line.split(sep)
        if len(fields) < len(names):
            raise DataFileError(str(path), n, None, f"expected at least {len(names)} fields separated by {sep!r} "
                                f"({LAYOUTS.get(path.name, '')}), got {line!r}")
        for name, value in zip(names, fields):
            columns[name].append(value)
        numbers.append(n)
    return Table(str(path), columns, numbers)


def recbole_ml100k_dir() -> Path:
    """The ML-100K folder inside the installed recbole package (found without importing recbole)."""
    spec = importlib.util.find_spec("recbole")
    folder = Path(spec.submodule_search_locations[0]) / "dataset_example" / "ml-100k" if spec else None
    if folder is None or not (folder / "ml-100k.inter").exists():
        raise FileNotFoundError("ML-100K not found: give --data-path DIR (path= in Python), a folder with GroupLens u.data/u.item, "
                                "or install the RecBole wheel that bundles it: pip install --no-deps recbole==1.2.1")
    return folder


def load_ml100k(path: str | Path | None = None, **options) -> InteractionData:
    """ML-100K from GroupLens `u.data`/`u.item` or RecBole `ml-100k.inter`/`.item` (installed recbole if no path)."""
    folder = recbole_ml100k_dir() if path is None else Path(path)
    if (folder / "u.data").exists():
        ratings = read_rows(folder / "u.data", "\t", list(INTERACTION_COLUMNS))
        movies = read_rows(folder / "u.item", "|", ["item_id", "title", "date", "video", "url"] + ML100K_GENRES)
        movies.columns["categories"] = ["|".join(g for g, flag in zip(ML100K_GENRES, flags) if flag == "1")
                                        for flags in zip(*(movies.columns[g] for g in ML100K_GENRES))]
    elif (folder / "ml-100k.inter").exists():
        ratings = read_recbole(folder / "ml-100k.inter")
        movies = read_recbole(folder / "ml-100k.item")
        for column in ("movie_title", "release_year", "class"):
            if column not in movies.columns:
                raise movies.error(-1, column, f"missing column; expected {LAYOUTS['ml-100k.item']}")
        # RecBole splits the GroupLens title "Toy Story (1995)" into title and year; join them back.
        movies.columns["title"] = [f"{t} ({y})" for t, y in zip(movies.columns["movie_title"],
                                                               movies.columns["release_year"])]
        movies.columns["categories"] = [c.replace(" ", "|") for c in movies.columns["class"]]
    else:
        raise FileNotFoundError(f"{folder}: no ML-100K files; expected {LAYOUTS['u.data']} and "
                                f"{LAYOUTS['u.item']}, or {LAYOUTS['ml-100k.inter']} and {LAYOUTS['ml-100k.item']}")
    return from_movielens("ml-100k", ratings, movies, **options)


def load_ml1m(path: str | Path | None = None, **options) -> InteractionData:
    """ML-1M from `ratings.dat` and `movies.dat` (users.dat is not needed)."""
    if path is None:
        raise FileNotFoundError("ML-1M cannot be downloaded here: give --data-path DIR (path= in Python), the folder with "
                                f"{LAYOUTS['ratings.dat']} and {LAYOUTS['movies.dat']}")
    folder = Path(path)
    ratings = read_rows(folder / "ratings.dat", "::", list(INTERACTION_COLUMNS))
    movies = read_rows(folder / "movies.dat", "::", ["item_id", "title", "categories"])
    return from_movielens("ml-1m", ratings, movies, **options)


# The real-data protocol's MovieLens settings (docs/real-data-protocol.md gives the measurements behind each):
# protocol -> its defaults. "known": each user's last 20 ratings (K = 20, LLMRank's setting) are the future and
# the pool; "implicit": the last 5 against 15 retrieved films not watched.
PROTOCOL_DEFAULTS = {
    "known": dict(n_heldout=20, min_history=10),
    "implicit": dict(n_heldout=5, negatives=15, min_history=10),
    "sparse": dict(n_heldout=10),
}
NOVELTY_SHARE = 0.1  # a film is new to a user when each of its genres is at most 10% of the history
TREND_HALF_LIFE = 7.0  # days: short-term plays decay by half per week before the user's cutoff


def from_movielens(name: str, ratings: Table, movies: Table, protocol: str = "known", **options) -> InteractionData:
    """`flexrec.data.frames.from_frames` with MovieLens's scale and the real-data protocol (``protocol``
    "known", "implicit" or "sparse", with ``PROTOCOL_DEFAULTS``); a rated film missing from the catalogue is
    titled "item <id>" (and counted in the log) rather than an error."""
    if protocol not in PROTOCOL_DEFAULTS:
        raise ValueError(f"protocol={protocol!r}: use one of {', '.join(PROTOCOL_DEFAULTS)}")
    if protocol != "sparse":
        options = {"novelty_share": NOVELTY_SHARE, "trend_half_life": TREND_HALF_LIFE, **options}
    options = {**PROTOCOL_DEFAULTS[protocol], **options}
    return from_frames(ratings, movies, {"categories": "categories", "title": "title"}, name=name, protocol=protocol,
                       unknown_items="title", interest_range=(1.0, 5.0), feedback_format="rated {:.0f}/5",
                       **options)
