"""--size recipes fill only what the user did not set and never touch the tiny model's defaults."""

import dataclasses
import json

import pytest

from flexrec.config import DATA_DEFAULTS, RECIPES, ConfigError, TrainConfig, apply_size, parse_args, recipe


def test_tiny_defaults_are_untouched_by_every_size():
    for size in ("auto", "cpu", "full"):
        cfg = parse_args(["--size", size])
        assert dataclasses.replace(cfg, size="auto") == TrainConfig()
        assert cfg.size == size  # no recipe applies, so nothing is resolved


def test_cpu_recipe_fills_unset_settings_and_keeps_given_ones(tmp_path):
    cfg = parse_args(["--model", "smollm2-135m", "--data", "ml-100k", "--size", "cpu", "--sft-steps", "7"])
    for name, (value, why) in RECIPES["cpu"].items():
        assert why
        assert getattr(cfg, name) == (7 if name == "sft_steps" else value), name
    assert cfg.num_candidates == DATA_DEFAULTS["ml-100k"]["num_candidates"] and cfg.size == "cpu"
    # a flag that repeats the global default is still the user's choice, not the recipe's
    assert parse_args(["--model", "smollm2-135m", "--size", "cpu", "--batch-size", "16"]).batch_size == 16
    # so is a --config file's
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"batch_size": 16, "model": "smollm2-135m", "size": "cpu"}))
    assert parse_args(["--config", str(path)]).batch_size == 16
    # synthetic data keeps its own K
    assert parse_args(["--model", "smollm2-135m", "--size", "cpu"]).num_candidates == TrainConfig.num_candidates


def test_full_recipe_and_auto_on_a_cpu_device():
    full = parse_args(["--model", "smollm2-135m", "--size", "full"])
    assert full.batch_size == RECIPES["full"]["batch_size"][0] and full.micro_batch == 0
    auto_cpu = parse_args(["--model", "smollm2-135m", "--device", "cpu"])
    assert auto_cpu.size == "cpu" and auto_cpu.micro_batch == RECIPES["cpu"]["micro_batch"][0]


def test_python_configs_take_the_recipe_for_default_valued_settings():
    cfg = apply_size(TrainConfig(model="smollm2-135m", size="cpu", rl_steps=3))
    assert cfg.rl_steps == 3 and cfg.lora_rank == RECIPES["cpu"]["lora_rank"][0]
    assert recipe(TrainConfig()) == {}
    with pytest.raises(ConfigError, match="--size 'gpu'"):
        apply_size(TrainConfig(model="smollm2-135m", size="gpu"))

