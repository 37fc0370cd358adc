"""Every command renders its --help (argparse %-formats help strings: a stray % crashed it)."""

import importlib

import pytest

COMMANDS = ["flexrec.train", "flexrec.eval", "flexrec.data", "flexrec.experiments", "flexrec.experiments.fidelity",
            "flexrec.rank", "flexrec.export"]


def _exit_code(main, argv) -> int:
    """argparse exits; under torch's @record (flexrec.train) a clean SystemExit(0) returns instead."""
    try:
        return main(argv) or 0
    except SystemExit as exit_:
        return exit_.code or 0


@pytest.mark.parametrize("command", COMMANDS)
def test_help_renders(command, capsys):
    package = importlib.import_module(command)
    module = importlib.import_module(command + ".__main__") if hasattr(package, "__path__") else package
    assert _exit_code(module.main, ["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m " + command.replace(".__main__", ""))
    assert "--help" in out


def test_train_help_lists_every_setting(capsys):
    import dataclasses

    from flexrec.config import TrainConfig
    from flexrec.train.__main__ import main

    assert _exit_code(main, ["-h"]) == 0
    out = capsys.readouterr().out
    for f in dataclasses.fields(TrainConfig):
        assert "--" + f.name.replace("_", "-") in out, f.name
    assert "(the paper's 10%)" in out  # the % that crashed argparse is shown as written


def test_info_prints_backends(capsys):
    from flexrec import info

    info.main()
    out = capsys.readouterr().out
    assert "swap_reward" in out and "torch" in out
