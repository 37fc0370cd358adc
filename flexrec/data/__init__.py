"""flexrec.data: datasets, needs, candidate pools, prompts and batches for need-conditioned ranking.

    from flexrec.data import load, build_examples, collate, train_tiny_tokenizer, add_slot_tokens
    data = load("synthetic", seed=0)                      # or "ml-100k", "ml-1m", "kuairec"
    data = load("recbole:my-data/")                       # your own data (flexrec.data.frames)
    data = load("csv:ratings.csv", items="movies.csv")    # or from_frames(interactions, items) in Python
    train = build_examples(data, split="train", K=30)     # every need, every train user
    tok = train_tiny_tokenizer(); add_slot_tokens(tok, model, K=30)
    batch = collate(train[:8], tok, data)

`python -m flexrec.data --data ml-100k` prints statistics and one rendered prompt.
"""

from __future__ import annotations

from . import frames
from .batch import RankingBatch, collate
from .examples import RankingExample, build_examples, make_example
from .frames import DataFileError, from_frames, load_csv, load_recbole
from .needs import NEEDS, LabelContext, Need, get_need, label_context, pool_labels, register_need
from .pools import DEFAULT_MIX, PoolTooSmallError, build_pool, split_users
from .prompts import compact_prompt, render_prompt
from .synthetic import SyntheticWorld
from .slots import add_slot_tokens, slot_token_ids, slot_tokens
from .tiny_tokenizer import train_tiny_tokenizer
from .world import TREND_TIERS, InteractionData, SparseLabels

DATASETS = ("synthetic", "ml-100k", "ml-1m", "kuairec")
SOURCES = ("recbole:DIR", "csv:FILE", "parquet:FILE")  # your own data: flexrec.data.frames


def load(name: str, path: str | None = None, items: str | None = None, **options) -> InteractionData:
    """Load a dataset by name, or your own files, into an `InteractionData`.

    - "synthetic": `SyntheticWorld(**options)` (path unused).
    - "ml-100k": GroupLens `u.data` + `u.item` (or RecBole `ml-100k.inter` + `ml-100k.item`) from `path`;
      with no path, the RecBole files bundled in the installed `recbole==1.2.1` package.
    - "ml-1m": `ratings.dat` + `movies.dat` from `path`.
    - "kuairec": the official KuaiRec 2.0 `data/` folder at `path`.
    - "recbole:DIR": RecBole atomic files DIR/NAME.inter and DIR/NAME.item (`frames.load_recbole`).
    - "csv:FILE" (or "parquet:FILE"): interactions from FILE (CSV, TSV or Parquet by suffix), items from
      `items` (`frames.load_csv`); "csv:FILE?items=ITEMS&item_id=movieId" carries both, and a column mapping.
    Options go to the loader (e.g. `observe_fraction`, `n_heldout`, `seed`; for your own data also `K`,
    `columns`, `duplicates`: see `flexrec.data.frames.from_frames`).
    """
    kind, colon, rest = name.partition(":")
    if colon and kind in ("recbole", "csv", "parquet"):
        where, spec_options = frames.parse_spec(rest or str(path or ""))
        if not where:
            raise ValueError(f"--data {name}: name the {'folder' if kind == 'recbole' else 'file'}, e.g. {kind}:PATH")
        items = items or spec_options.pop("items", None)
        columns = {**spec_options.pop("columns", {}), **(options.pop("columns", None) or {})}
        options = {**spec_options, **options}  # duplicates, category_sep
        if kind == "recbole":
            if items:
                raise ValueError(f"--data {name}: RecBole data keeps its items in NAME.item beside NAME.inter; "
                                 "--items is for csv: data")
            return frames.load_recbole(where, columns, **options)
        return frames.load_csv(where, items, columns, **options)
    if name == "synthetic":
        return SyntheticWorld(**options)
    if name in ("ml-100k", "ml-1m"):
        from . import movielens
        return movielens.load_ml100k(path, **options) if name == "ml-100k" else movielens.load_ml1m(path, **options)
    if name == "kuairec":
        from .kuairec import load_kuairec
        return load_kuairec(path, **options)
    raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}; your own data: "
                     f"{', '.join(SOURCES)}")


__all__ = [
    "DATASETS", "DEFAULT_MIX", "NEEDS", "SOURCES", "DataFileError", "InteractionData", "LabelContext", "Need",
    "PoolTooSmallError", "RankingBatch", "RankingExample", "SparseLabels", "SyntheticWorld", "TREND_TIERS",
    "add_slot_tokens", "build_examples", "build_pool", "collate", "compact_prompt", "from_frames", "get_need",
    "label_context", "load", "load_csv", "load_recbole", "make_example", "pool_labels", "register_need",
    "render_prompt", "slot_token_ids", "slot_tokens", "split_users", "train_tiny_tokenizer",
]
