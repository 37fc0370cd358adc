"""Your own interactions and items as `InteractionData`: RecBole atomic files, CSV/Parquet, or frames.

    from flexrec.data.frames import from_frames, load_csv, load_recbole
    data = load_recbole("my-data/")                          # my-data/NAME.inter + my-data/NAME.item
    data = load_csv("ratings.csv", items="movies.csv", columns={"item_id": "movieId"})
    data = from_frames(interactions_df, items_df)            # pandas frames, dicts of columns or lists of rows

From the command line: ``--data recbole:DIR`` or ``--data csv:INTER.csv --items ITEMS.csv`` (a column
mapping, the item file and ``duplicates=last`` can also ride in the name:
``csv:ratings.csv?items=movies.csv&item_id=movieId``).

The columns (flexrec's name: what it holds; the names recognised without a mapping):
- interactions: user_id (any id: userId, user), item_id (item_id, itemId, movieId, item), rating (a number on
  your own scale: score, stars, watch_ratio), timestamp (Unix seconds or an ISO 8601 date-time: time, ts);
- items: item_id, title (movie_title, item_title, name), categories (genres, genre, class, category; several
  separated by ``category_sep``, "|" in CSV, " " in RecBole ``token_seq`` columns).
``columns={"rating": "stars"}`` maps a flexrec name to yours; ``{"rating": None}`` says there is none
(implicit feedback: every interaction counts 1, on a 0-1 scale), as does ``{"categories": None}``.

What is built from them is the MovieLens recipe (``flexrec.data.movielens`` uses this same path): per user, by
time, the last ``n_heldout`` interactions (at most half) are the future whose ratings are the true interest
(``observe_fraction`` of them observed); the rest is the history. Days count from the first timestamp.

Bad input raises `DataFileError` naming the file, the line (1-based, the header is line 1; "row" for
in-memory frames) and the column, before anything is built: a missing column, a non-numeric rating or
timestamp, an interaction with an item the item file lacks, a repeated (user, item) or item id, an empty
file, fewer items than the K candidates a pool needs.
"""

from __future__ import annotations

import csv
import logging
import math
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np

from .protocol import add_implicit_negatives
from .world import InteractionData, SparseLabels, histories_to_csr, observe_subset

log = logging.getLogger(__name__)

INTERACTION_COLUMNS = ("user_id", "item_id", "rating", "timestamp")
ITEM_COLUMNS = ("item_id", "title", "categories")
# The names each column goes by without a mapping, tried in order (RecBole's, MovieLens's, KuaiRec's).
ALIASES = {
    "user_id": ("user_id", "userId", "user"),
    "item_id": ("item_id", "itemId", "movieId", "movie_id", "video_id", "item"),
    "rating": ("rating", "score", "stars", "watch_ratio"),
    "timestamp": ("timestamp", "time", "ts"),
    "title": ("title", "movie_title", "item_title", "name"),
    "categories": ("categories", "genres", "genre", "class", "category"),
}
OPTIONAL = ("rating", "categories")  # may be mapped to None
PROTOCOLS = ("sparse", "known", "implicit")  # what the future and the pools are (from_frames, docs/real-data-protocol.md)


class DataFileError(ValueError):
    """A problem in a data file (or frame) at a place: ``file``, ``line`` (1-based; None: the whole file),
    ``column`` (None: every column)."""

    def __init__(self, file: str, line: Optional[int], column: Optional[str], problem: str, unit: str = "line"):
        self.file, self.line, self.column, self.problem = file, line, column, problem
        where = [file] + ([f"{unit} {line}"] if line is not None else []) + (
            [f"column {column!r}"] if column is not None else [])
        super().__init__(f"{', '.join(where)}: {problem}")


@dataclass
class Table:
    """The columns of one file or frame as Python lists, with each row's number for messages.

    ``numbers[i]`` is row i's 1-based line in the file (the header is line 1), or its 1-based row in a frame.
    """

    source: str
    columns: dict[str, list]
    numbers: list[int]
    unit: str = "line"  # what ``numbers`` count: "line" (files) or "row" (frames)

    def __len__(self) -> int:
        return len(self.numbers)

    def error(self, i: Optional[int], column: Optional[str], problem: str) -> DataFileError:
        """The error at data row ``i`` (an index into the columns; None: the whole file, or the header)."""
        line = None if i is None else self.numbers[i] if i >= 0 else 1 if self.unit == "line" else None
        return DataFileError(self.source, line, column, problem, self.unit)


# ------------------------------------------------------------------------------------------------
# Reading
# ------------------------------------------------------------------------------------------------

def as_table(frame: Any, source: str) -> Table:
    """A pandas/polars-style frame (``.columns`` + ``frame[col]``), a mapping of column -> values, or a list
    of row dicts, as a Table."""
    if isinstance(frame, Table):
        return frame
    if isinstance(frame, (list, tuple)):
        names = list(dict.fromkeys(k for row in frame for k in row))
        columns = {n: [row.get(n) for row in frame] for n in names}
    elif isinstance(frame, Mapping):
        columns = {str(k): list(v) for k, v in frame.items()}
    elif hasattr(frame, "columns"):
        columns = {str(c): list(frame[c]) for c in frame.columns}
    else:
        raise TypeError(f"{source}: expected a data frame, a dict of columns or a list of row dicts, "
                        f"got {type(frame).__name__}")
    lengths = {len(v) for v in columns.values()}
    if len(lengths) > 1:
        raise DataFileError(source, None, None, f"columns of different lengths {sorted(lengths)}", "row")
    n = lengths.pop() if lengths else 0
    return Table(source, columns, list(range(1, n + 1)), "row")


def read_csv(path: Path, sep: str = ",") -> Table:
    """A CSV (or, with ``sep="\\t"``, TSV) file with a header line."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter=sep))
    if not rows or not any(cell.strip() for cell in rows[0]):
        raise DataFileError(str(path), 1, None, "empty file: expected a header line naming the columns")
    header = [h.strip() for h in rows[0]]
    columns: dict[str, list] = {h: [] for h in header}
    numbers = []
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise DataFileError(str(path), line, None, f"{len(row)} fields, the header has {len(header)}")
        for h, cell in zip(header, row):
            columns[h].append(cell)
        numbers.append(line)
    return Table(str(path), columns, numbers)


def read_recbole(path: Path) -> Table:
    """A RecBole atomic file: tab-separated, a header of ``name:type`` fields (the type is dropped)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; expected a RecBole atomic file (tab-separated, "
                                "a header like user_id:token item_id:token rating:float timestamp:float)")
    table = read_csv(path, sep="\t")
    table.columns = {name.split(":")[0]: values for name, values in table.columns.items()}
    return table


def read_parquet(path: Path) -> Table:
    """A Parquet file, through pandas or pyarrow (whichever is installed; flexrec requires neither)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    try:
        import pandas as pd

        frame = pd.read_parquet(path)
    except ImportError:
        try:
            import pyarrow.parquet as pq
        except ImportError as err:
            raise ValueError(f"{path}: reading Parquet needs pandas or pyarrow (pip install pyarrow); "
                             "or save the file as CSV") from err
        frame = pq.read_table(path).to_pydict()
    return as_table(frame, str(path))  # rows numbered from 1 (Parquet has no header line)


def read_table(path: str | Path) -> Table:
    """By suffix: .parquet/.pq, .tsv, RecBole's .inter/.item, anything else CSV."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return read_parquet(path)
    if suffix in (".inter", ".item"):
        return read_recbole(path)
    return read_csv(path, sep="\t" if suffix == ".tsv" else ",")


# ------------------------------------------------------------------------------------------------
# Checking and building
# ------------------------------------------------------------------------------------------------

def resolve_columns(table: Table, wanted: tuple[str, ...], columns: Mapping[str, Optional[str]],
                    shared: tuple[str, ...] = ()) -> dict:
    """flexrec name -> the table's column name (or None where mapped away); a missing one raises.

    A ``shared`` name whose mapped column the table lacks is looked up by alias instead (the item id
    column may be named differently in the interactions and in the items)."""
    out = {}
    for name in wanted:
        if name in columns and not (name in shared and columns[name] not in table.columns):
            source = columns[name]
            if source is None and name not in OPTIONAL:
                raise ValueError(f"columns={{{name!r}: None}}: {name} is required")
            if source is not None and source not in table.columns:
                raise table.error(-1, source, f"missing column (mapped from {name!r}); the file has columns "
                                  f"{list(table.columns)}")
            out[name] = source
            continue
        found = [a for a in ALIASES[name] if a in table.columns]
        if not found:
            hint = f"; or columns={{{name!r}: None}} if there is none" if name in OPTIONAL else ""
            raise table.error(-1, name, f"missing column; the file has columns {list(table.columns)}; name "
                              f"yours with columns={{{name!r}: 'YOUR_COLUMN'}}{hint}")
        out[name] = found[0]
    return out


def ids(table: Table, column: str) -> list[str]:
    """A column of ids as stripped strings ("12", 12 and 12.0 are the same id); empty ids raise."""
    out = []
    for i, v in enumerate(table.columns[column]):
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        text = "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v).strip()
        if not text:
            raise table.error(i, column, "empty id")
        out.append(text)
    return out


def numbers(table: Table, column: str) -> np.ndarray:
    """A column of finite numbers. Shapes: (N,) float64."""
    out = np.empty(len(table), np.float64)
    for i, v in enumerate(table.columns[column]):
        try:
            out[i] = float(v)
        except (TypeError, ValueError):
            raise table.error(i, column, f"{v!r} is not a number") from None
        if not math.isfinite(out[i]):
            raise table.error(i, column, f"{v!r} is not a finite number")
    return out


def timestamps(table: Table, column: str) -> np.ndarray:
    """Unix seconds from numbers or ISO 8601 date-times (naive ones read as UTC). Shapes: (N,) int64."""
    out = np.empty(len(table), np.int64)
    for i, v in enumerate(table.columns[column]):
        if hasattr(v, "timestamp"):  # a datetime / pandas Timestamp
            when = v if getattr(v, "tzinfo", None) else v.replace(tzinfo=timezone.utc)
            out[i] = int(when.timestamp())
            continue
        try:
            out[i] = int(float(v))
            continue
        except (TypeError, ValueError, OverflowError):
            pass
        try:
            when = datetime.fromisoformat(str(v).strip())
        except ValueError:
            raise table.error(i, column, f"{v!r} is neither Unix seconds nor an ISO 8601 date-time") from None
        out[i] = int((when if when.tzinfo else when.replace(tzinfo=timezone.utc)).timestamp())
    return out


def from_frames(interactions: Any, items: Any, columns: Optional[Mapping[str, Optional[str]]] = None, *,
                name: str = "custom", n_heldout: int = 10, observe_fraction: float = 0.1, seed: int = 0,
                trend_window: int = 7, K: Optional[int] = None, duplicates: str = "error",
                unknown_items: str = "error", category_sep: str = "|",
                interest_range: Optional[tuple[float, float]] = None,
                feedback_format: Optional[str] = None, protocol: str = "sparse", min_history: int = 10,
                negatives: int = 15, novelty_share: float = 0.0, trend_half_life: float = 0.0) -> InteractionData:
    """Build InteractionData from interactions and items (frames, dicts of columns, lists of rows or Tables).

    Args:
        columns: flexrec column name -> yours (see the module docstring); unmapped ones are found by alias.
        name: the dataset's name (prompts never show it).
        n_heldout, observe_fraction, seed, trend_window: the split (module docstring); ``trend_window`` is the
            days of plays before a user's first held-out interaction that count as "lately".
        K: the pool size you will train with; fewer items than K is an error here instead of no pools later.
        duplicates: a repeated (user, item) is an "error", or "last" keeps the latest by time.
        unknown_items: an interaction whose item the items lack is an "error", or "title" adds the item as
            "item <id>" with no categories (counted in the log).
        category_sep: what separates several categories in one cell.
        interest_range: the rating scale (default: the ratings' min and max); ``feedback_format`` how one
            reads in a full prompt (default "rated {:.0f}/<max>" for whole-number ratings).
        protocol: "sparse" (the split above; pools mix rated and unrated items, an unrated one counting as 0),
            "known" (pools hold only the user's future items, labelled by their ratings; the future is the last
            ``n_heldout`` interactions leaving at least ``min_history``) or "implicit" (the future items against
            ``negatives`` retrieved items labelled "not watched"): docs/real-data-protocol.md.
        novelty_share, trend_half_life: see `InteractionData` (0: the synthetic world's rules).
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol={protocol!r}: use one of {', '.join(PROTOCOLS)}")
    if duplicates not in ("error", "last"):
        raise ValueError(f"duplicates={duplicates!r}: use 'error' or 'last'")
    if unknown_items not in ("error", "title"):
        raise ValueError(f"unknown_items={unknown_items!r}: use 'error' or 'title'")
    columns = dict(columns or {})
    unknown = set(columns) - set(INTERACTION_COLUMNS) - set(ITEM_COLUMNS)
    if unknown:
        raise ValueError(f"columns: unknown flexrec column(s) {sorted(unknown)}; known: "
                         f"{', '.join(INTERACTION_COLUMNS + ITEM_COLUMNS[1:])}")
    inter, cat = as_table(interactions, "interactions"), as_table(items, "items")
    for table in (inter, cat):
        if not len(table):
            raise table.error(None, None, "empty: no data rows" + (" after the header" if table.unit == "line" else ""))
    ic = resolve_columns(inter, INTERACTION_COLUMNS, columns)
    cc = resolve_columns(cat, ITEM_COLUMNS, columns, shared=("item_id",))

    # The catalogue: id -> (title, categories); a repeated id is an error.
    item_ids = ids(cat, cc["item_id"])
    first_line: dict[str, int] = {}
    for i, key in enumerate(item_ids):
        if key in first_line:
            raise cat.error(i, cc["item_id"], f"item {key!r} again (first at {cat.unit} "
                            f"{cat.numbers[first_line[key]]}); each item needs one row")
        first_line[key] = i
    titles = ["" if v is None else str(v).strip() for v in cat.columns[cc["title"]]]
    if cc["categories"] is None:
        genres = [[] for _ in item_ids]
    else:
        genres = [[g.strip() for g in ("" if v is None else str(v)).split(category_sep) if g.strip()]
                  for v in cat.columns[cc["categories"]]]
    catalogue = {key: (titles[i] or f"item {key}", genres[i]) for i, key in enumerate(item_ids)}

    # The interactions, checked cell by cell.
    users, rated = ids(inter, ic["user_id"]), ids(inter, ic["item_id"])
    values = numbers(inter, ic["rating"]) if ic["rating"] is not None else np.ones(len(inter))
    stamps = timestamps(inter, ic["timestamp"])
    missing = [i for i, key in enumerate(rated) if key not in catalogue]
    if missing and unknown_items == "error":
        raise inter.error(missing[0], ic["item_id"], f"item {rated[missing[0]]!r} is not in {cat.source} "
                          f"({len(missing)} interaction(s) name items it lacks)")
    if missing:
        log.warning("%s: %d rated items have no catalogue entry; titled 'item <id>'", name,
                    len({rated[i] for i in missing}))
        catalogue.update({rated[i]: (f"item {rated[i]}", []) for i in missing})
    keep = dedupe(inter, users, rated, stamps, duplicates, ic)
    if K is not None and len(catalogue) < K:
        raise cat.error(None, cc["item_id"], f"{len(catalogue)} items, fewer than the K={K} candidates a pool needs")
    users, rated = [users[i] for i in keep], [rated[i] for i in keep]
    values, stamps = values[keep], stamps[keep]
    if interest_range is None:
        interest_range = (0.0, 1.0) if ic["rating"] is None else (float(values.min()), float(values.max()))
        if interest_range[0] == interest_range[1]:
            interest_range = (interest_range[0] - 1.0, interest_range[1])
    if feedback_format is None:
        whole = bool(np.all(values == np.round(values)))
        feedback_format = ("interacted" if ic["rating"] is None else
                           f"rated {{:.{0 if whole else 1}f}}/{interest_range[1]:g}")
    return build(name, users, rated, values, stamps, catalogue, n_heldout=n_heldout,
                 observe_fraction=observe_fraction, seed=seed, trend_window=trend_window,
                 interest_range=interest_range, feedback_format=feedback_format, protocol=protocol,
                 min_history=min_history, negatives=negatives, novelty_share=novelty_share,
                 trend_half_life=trend_half_life)


def dedupe(inter: Table, users: list[str], items: list[str], stamps: np.ndarray, duplicates: str,
           ic: dict) -> np.ndarray:
    """Indices of the rows to keep: all, or with ``duplicates="last"`` each (user, item)'s latest."""
    seen: dict[tuple[str, str], int] = {}
    for i, pair in enumerate(zip(users, items)):
        if pair in seen:
            if duplicates == "error":
                raise inter.error(i, ic["item_id"], f"user {pair[0]!r} has item {pair[1]!r} again (first at "
                                  f"{inter.unit} {inter.numbers[seen[pair]]}); pass duplicates='last' to keep "
                                  "each pair's latest interaction")
            if stamps[i] >= stamps[seen[pair]]:
                seen[pair] = i
        else:
            seen[pair] = i
    if len(seen) < len(users):
        log.warning("%s: kept the latest of %d repeated (user, item) interactions", inter.source,
                    len(users) - len(seen))
    return np.array(sorted(seen.values()), np.int64)


def key_order(key: str) -> tuple[int, str]:
    """Ids sort numerically when they are numbers ("2" before "10"), else as text."""
    return (len(key), key)


def build(name: str, users: list[str], items: list[str], values: np.ndarray, stamps: np.ndarray,
          catalogue: dict[str, tuple[str, list[str]]], n_heldout: int = 10, observe_fraction: float = 0.1,
          seed: int = 0, trend_window: int = 7, interest_range: tuple[float, float] = (1.0, 5.0),
          feedback_format: str = "rated {:.0f}/5", protocol: str = "sparse", min_history: int = 10,
          negatives: int = 15, novelty_share: float = 0.0, trend_half_life: float = 0.0) -> InteractionData:
    """InteractionData from checked interactions (user key, item key, rating, Unix seconds) and
    {item key: (title, categories)}: the per-user time split of the module docstring (``protocol``: see
    `from_frames`).

    Shapes: users, items, values, stamps: (N,), every item a key of ``catalogue``.
    """
    if not len(users):
        raise ValueError(f"{name}: no interactions")
    item_keys = sorted(catalogue, key=key_order)
    item_index = {k: i for i, k in enumerate(item_keys)}
    user_keys = sorted(set(users), key=key_order)
    user_index = {k: i for i, k in enumerate(user_keys)}
    users = np.array([user_index[u] for u in users], np.int64)
    items = np.array([item_index[i] for i in items], np.int64)
    values = np.asarray(values, np.float32)
    stamps = np.asarray(stamps, np.int64)
    days = (stamps - stamps.min()) // 86400

    # Per user, by time: the last n_heldout (at most half) are the future; the rest is the history.
    order = np.lexsort((stamps, users))
    counts = np.bincount(users, minlength=len(user_keys))
    start = np.concatenate([[0], np.cumsum(counts)])[users[order]]
    rank = np.arange(len(order)) - start  # position within the user's own time line
    if protocol == "sparse":
        n_future = np.minimum(n_heldout, counts // 2)[users[order]]
    else:  # the future is all of a pool's known items: keep it whole, leaving min_history in the history
        n_future = np.minimum(n_heldout, np.maximum(counts - min_history, 0))[users[order]]
    future = np.zeros(len(order), bool)
    future[order] = rank >= counts[users[order]] - n_future
    if (counts < 2).any():
        log.warning("%s: %d users have fewer than 2 interactions: no held-out labels for them",
                    name, int((counts < 2).sum()))

    n_days = int(days.max()) + 1
    cutoff = np.full(len(user_keys), n_days, np.int64)
    np.minimum.at(cutoff, users[future], days[future])
    daily = np.zeros((n_days, len(item_keys)), np.float32)
    np.add.at(daily, (days, items), 1.0)
    hist = ~future
    ptr, h_items, h_fb, h_days = histories_to_csr(users[hist], items[hist], values[hist], days[hist], len(user_keys),
                                                  stamps[hist])
    topic_names, item_topics = topic_matrix([catalogue[k][1] for k in item_keys])
    true = SparseLabels.from_triples(users[future], items[future], values[future], len(item_keys))
    observed = observe_subset(true, observe_fraction, np.random.default_rng(seed))
    real = protocol != "sparse"
    data = InteractionData(
        name=name, topic_names=topic_names, item_titles=[catalogue[k][0] for k in item_keys],
        item_topics=item_topics, item_popularity=np.bincount(items[hist], minlength=len(item_keys)).astype(np.float32),
        daily_popularity=daily, history_ptr=ptr, history_items=h_items, history_feedback=h_fb, history_days=h_days,
        cutoff_day=cutoff, true_interest=true, observed=observed, interest_range=tuple(interest_range),
        feedback_format=feedback_format, trend_window=trend_window, user_keys=user_keys, item_keys=item_keys,
        observe_fraction=observe_fraction, pools_from_known=real, novelty_share=novelty_share,
        trend_half_life=trend_half_life, trend_random_ties=real, compact_signals=real)
    if protocol == "implicit":
        add_implicit_negatives(data, negatives, seed)
    return data


def topic_matrix(categories: list[list]) -> tuple[list, np.ndarray]:
    """(sorted topic names, (n_items, n_topics) bool multi-hot) from each item's categories."""
    topic_names = sorted({g for genres in categories for g in genres})
    topic_index = {g: t for t, g in enumerate(topic_names)}
    item_topics = np.zeros((len(categories), len(topic_names)), bool)
    for i, genres in enumerate(categories):
        item_topics[i, [topic_index[g] for g in genres]] = True
    return topic_names, item_topics


# ------------------------------------------------------------------------------------------------
# Files
# ------------------------------------------------------------------------------------------------

def load_recbole(path: str | Path, columns: Optional[Mapping[str, Optional[str]]] = None,
                 **options) -> InteractionData:
    """RecBole atomic files: ``DIR/NAME.inter`` and ``DIR/NAME.item`` (``path`` is DIR, or the .inter file).

    Multi-value ``token_seq`` cells (categories) are space-separated, as RecBole writes them.
    Options as in `from_frames`; the dataset is named NAME.
    """
    path = Path(path)
    if path.is_dir():
        inters = sorted(path.glob("*.inter"))
        if len(inters) != 1:
            found = ", ".join(p.name for p in inters) or "none"
            raise FileNotFoundError(f"{path}: expected one RecBole NAME.inter file (with NAME.item beside it), "
                                    f"found {found}; pass the .inter file itself to choose")
        path = inters[0]
    items = path.with_suffix(".item")
    options.setdefault("category_sep", " ")
    options.setdefault("name", path.stem)
    return from_frames(read_recbole(path), read_recbole(items), columns, **options)


def load_csv(interactions: str | Path, items: str | Path | None = None,
             columns: Optional[Mapping[str, Optional[str]]] = None, **options) -> InteractionData:
    """Interactions and items from CSV, TSV or Parquet files (by suffix; Parquet needs pandas or pyarrow).

    Options as in `from_frames`; the dataset is named after the interactions file.
    """
    if items is None:
        raise ValueError(f"{interactions}: the item file is missing: pass items= (--items ITEMS.csv), a file "
                         "with columns item_id, title, categories")
    options.setdefault("name", Path(interactions).stem)
    return from_frames(read_table(interactions), read_table(items), columns, **options)


def parse_spec(spec: str) -> tuple[str, dict]:
    """"ratings.csv?items=movies.csv&item_id=movieId" -> ("ratings.csv", {"items": ..., "columns": {...}}).

    The query part is optional; its keys are ``items``, ``duplicates``, ``category_sep`` and flexrec column
    names (an empty value maps the column to None), so a command line can say all of it in ``--data``.
    """
    path, sep, query = spec.partition("?")
    if not sep:
        return spec, {}
    out: dict[str, Any] = {}
    columns: dict[str, Optional[str]] = {}
    for part in filter(None, query.split("&")):
        key, eq, value = part.partition("=")
        if not eq or not re.fullmatch(r"\w+", key):
            raise ValueError(f"{spec!r}: expected PATH?key=value&..., got {part!r}")
        if key in ("items", "duplicates", "category_sep"):
            out[key] = value
        else:
            columns[key] = value or None
    if columns:
        out["columns"] = columns
    return path, out


def absolute_spec(name: str, cwd: Optional[str] = None) -> str:
    """A ``recbole:`` / ``csv:`` / ``parquet:`` data name with its file paths made absolute, so that a run's saved
    config reloads from any directory; other names unchanged."""
    import os

    kind, colon, rest = name.partition(":")
    if not colon or kind not in ("recbole", "csv", "parquet") or not rest:
        return name
    base = cwd or os.getcwd()
    path, sep, query = rest.partition("?")
    parts = []
    for part in filter(None, query.split("&")):
        key, eq, value = part.partition("=")
        parts.append(f"{key}={os.path.join(base, value)}" if key == "items" and value else part)
    return f"{kind}:{os.path.join(base, path)}" + (sep + "&".join(parts) if sep else "")
