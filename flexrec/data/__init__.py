"""flexrec.data: datasets, needs, candidate pools, prompts and batches for need-conditioned ranking.

    from flexrec.data import load, build_examples, collate, train_tiny_tokenizer, add_slot_tokens
    data = load("synthetic", seed=0)                      # or "ml-100k", "ml-1m", "kuairec"
    train = build_examples(data, split="train", K=30)     # every need, every train user
    tok = train_tiny_tokenizer(); add_slot_tokens(tok, model, K=30)
    batch = collate(train[:8], tok, data)

`python -m flexrec.data --data ml-100k` prints statistics and one rendered prompt.
"""

from __future__ import annotations

from .batch import RankingBatch, collate
from .examples import RankingExample, build_examples, make_example
from .needs import NEEDS, LabelContext, Need, get_need, label_context, pool_labels, register_need
from .pools import DEFAULT_MIX, PoolTooSmallError, build_pool, split_users
from .prompts import compact_prompt, render_prompt
from .synthetic import SyntheticWorld
from .slots import add_slot_tokens, slot_token_ids, slot_tokens
from .tiny_tokenizer import train_tiny_tokenizer
from .world import TREND_TIERS, InteractionData, SparseLabels

DATASETS = ("synthetic", "ml-100k", "ml-1m", "kuairec")


def load(name: str, path: str | None = None, **options) -> InteractionData:
    """Load a dataset by name into an `InteractionData`.

    - "synthetic": `SyntheticWorld(**options)` (path unused).
    - "ml-100k": GroupLens `u.data` + `u.item` (or RecBole `ml-100k.inter` + `ml-100k.item`) from `path`;
      with no path, the RecBole files bundled in the installed `recbole==1.2.1` package.
    - "ml-1m": `ratings.dat` + `movies.dat` from `path`.
    - "kuairec": the official KuaiRec 2.0 `data/` folder at `path`.
    Options go to the loader (e.g. `observe_fraction`, `n_heldout`, `seed`).
    """
    if name == "synthetic":
        return SyntheticWorld(**options)
    if name in ("ml-100k", "ml-1m"):
        from . import movielens
        return movielens.load_ml100k(path, **options) if name == "ml-100k" else movielens.load_ml1m(path, **options)
    if name == "kuairec":
        from .kuairec import load_kuairec
        return load_kuairec(path, **options)
    raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")


__all__ = [
    "DATASETS", "DEFAULT_MIX", "NEEDS", "InteractionData", "LabelContext", "Need", "PoolTooSmallError",
    "RankingBatch", "RankingExample", "SparseLabels", "SyntheticWorld", "TREND_TIERS", "add_slot_tokens", "build_examples",
    "build_pool", "collate", "get_need", "label_context", "load", "make_example", "pool_labels", "register_need",
    "compact_prompt", "render_prompt", "slot_token_ids", "slot_tokens", "split_users", "train_tiny_tokenizer",
]
