"""Defaults that depend on --data (``flexrec.config.DATA_DEFAULTS``): applied only to settings the user did
not give, never to the synthetic default run (whose digits README pins)."""

from __future__ import annotations

import dataclasses
import json

from flexrec.config import DATA_DEFAULTS, TrainConfig, parse_args, validate, with_data_defaults
from flexrec.data import NEEDS
from flexrec.data.movielens import PROTOCOL_DEFAULTS


def test_the_synthetic_default_run_is_unchanged():
    assert "synthetic" not in DATA_DEFAULTS
    assert parse_args([]) == TrainConfig()
    assert parse_args([]).num_candidates == 10


def test_movielens_defaults_to_k_20_unless_the_user_gives_k(tmp_path):
    assert parse_args(["--data", "ml-100k"]).num_candidates == 20
    assert parse_args(["--data", "ml-1m"]).num_candidates == 20
    # given on the command line, even at the dataclass's own default, the user's value wins
    assert parse_args(["--data", "ml-100k", "--num-candidates", "10"]).num_candidates == 10
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"data": "ml-100k", "num_candidates": 12}))
    assert parse_args(["--config", str(path)]).num_candidates == 12
    path.write_text(json.dumps({"data": "ml-100k"}))
    assert parse_args(["--config", str(path)]).num_candidates == 20
    assert parse_args(["--config", str(path), "--data", "synthetic"]).num_candidates == 10


def test_ml100k_shuffles_slots_and_scores_tied_sets_unless_told_otherwise():
    cfg = parse_args(["--data", "ml-100k"])
    assert cfg.shuffle_slots and cfg.sft_ties == "set" and cfg.need_weights == "explore_new_topics=3"
    assert cfg.signal_scale == "value" and cfg.sft_lr_decay == "cosine" and cfg.lr == 1e-4
    assert parse_args(["--data", "ml-100k", "--lr", "1e-3"]).lr == 1e-3  # a flag still wins
    cfg = parse_args(["--data", "ml-100k", "--no-shuffle-slots", "--sft-ties", "order", "--need-weights", "",
                      "--signal-scale", "rank"])
    assert not cfg.shuffle_slots and cfg.sft_ties == "order" and cfg.need_weights == "" and cfg.signal_scale == "rank"
    synthetic = parse_args([])  # unchanged
    assert not synthetic.shuffle_slots and synthetic.sft_ties == "order" and synthetic.need_weights == "explore_new_topics=2"
    assert synthetic.signal_scale == "rank" and synthetic.sft_lr_decay == "none" and synthetic.lr == 1e-3


def test_every_data_default_is_a_valid_setting():
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    for data, defaults in DATA_DEFAULTS.items():
        assert set(defaults) <= fields, data
        validate(TrainConfig(**with_data_defaults({"data": data})), NEEDS)


def test_k_default_is_the_known_protocols_pool_size():
    # the known protocol's pool is each user's n_heldout future films: K must be that many (one definition each)
    for data in ("ml-100k", "ml-1m"):
        assert DATA_DEFAULTS[data]["num_candidates"] == PROTOCOL_DEFAULTS["known"]["n_heldout"]


def test_experiments_apply_the_data_defaults_too():
    from flexrec.experiments.runner import train_cfg

    assert train_cfg({"data": "ml-100k"}).num_candidates == 20
    assert train_cfg({"data": "ml-100k"}, {"num_candidates": 5}).num_candidates == 5
    assert train_cfg({}).num_candidates == 10


def test_a_pretrained_models_recipe_outranks_the_datas_defaults():
    cfg = parse_args(["--data", "ml-100k", "--model", "smollm2-135m"])
    assert (cfg.lr, cfg.sft_lr_decay) == (2e-4, "none")  # the LoRA recipe's, not the tiny model's ml-100k choice
    assert cfg.num_candidates == 20 and cfg.signal_scale == "value"  # data defaults the recipe does not set
    assert parse_args(["--data", "ml-100k", "--model", "smollm2-135m", "--lr", "5e-4"]).lr == 5e-4
