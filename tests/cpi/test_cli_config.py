"""Command-line flags generated from config dataclasses (cpi/cli_config.py)."""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Literal, Optional

import pytest

from cpi.cli_config import add_config_arguments, config_from_args, field_docs, flag_given
from cpi.config import Config, check_at_least
from cpi.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Inner(Config):
    """A nested block.

    - ``rate``: the inner rate.
    """

    rate: float = 0.5


@dataclasses.dataclass(frozen=True)
class Demo(Config):
    """A demo config; ``mode``: how to run it."""

    out: str = "runs"
    "results folder"
    batch_size: int = 8
    "items per forward pass"
    mode: Literal["fast", "slow"] = "fast"
    names: tuple[str, ...] = ("a", "b")
    "names, several"
    steps: tuple[int, ...] = (1,)
    limit: Optional[int] = None
    plot: bool = True
    "draw the figure"
    grid: tuple[str, ...] = dataclasses.field(default=(), metadata={"split": False, "help": "FIELD=V1,V2"})
    inner: Inner = dataclasses.field(default_factory=Inner)

    def validate(self) -> None:
        check_at_least(self, batch_size=1, limit=1)


def parse(argv, cls=Demo, **kwargs):
    parser = argparse.ArgumentParser(prog="demo", exit_on_error=False)
    add_config_arguments(parser, cls, **kwargs)
    return parser, parser.parse_args(argv)


def test_defaults_come_from_the_dataclass():
    parser, args = parse([])
    assert config_from_args(args) == Demo()
    help_text = " ".join(parser.format_help().split())
    assert "--batch-size BATCH_SIZE items per forward pass (default: 8)" in help_text
    assert "--plot, --no-plot draw the figure (default: on)" in help_text
    assert "--mode {fast,slow} how to run it (default: fast)" in help_text
    assert "--grid GRID [GRID ...] FIELD=V1,V2" in help_text
    assert "--inner" not in help_text  # nested blocks are reached with --set inner.rate=...


def test_flags_file_and_set_in_order_of_precedence(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("batch_size: 4\nout: from_file\ninner:\n  rate: 0.25\n")
    _, args = parse(["--config", str(cfg_file), "--out", "from_flag", "--set", "out=from_set", "--no-plot"])
    cfg = config_from_args(args)
    assert (cfg.batch_size, cfg.out, cfg.plot, cfg.inner.rate) == (4, "from_set", False, 0.25)
    assert flag_given(args, "config") and flag_given(args, "out") and not flag_given(args, "batch_size")


def test_tuples_take_spaces_commas_and_repeats():
    _, args = parse(["--names", "x,y", "z", "--names", "w", "--steps", "3,4", "--grid", "lr=1,2", "--grid", "n=3"])
    cfg = config_from_args(args)
    assert cfg.names == ("x", "y", "z", "w") and cfg.steps == (3, 4) and cfg.grid == ("lr=1,2", "n=3")


def test_bad_values_are_one_line_config_errors():
    _, args = parse(["--batch-size", "0"])
    with pytest.raises(ConfigError, match=r"field 'batch_size': must be >= 1, got 0"):
        config_from_args(args)
    _, args = parse(["--steps", "3,x"])
    with pytest.raises(ConfigError, match=r"--steps: 'x' is not an integer"):
        config_from_args(args)
    with pytest.raises(argparse.ArgumentError):
        parse(["--mode", "medium"])
    _, args = parse(["--set", "nope=1"])
    with pytest.raises(ConfigError, match="unknown field 'nope'"):
        config_from_args(args)


def test_required_fields_may_come_from_the_file(tmp_path):
    _, args = parse([], required=("out",))
    with pytest.raises(ConfigError, match=r"--out is required"):
        config_from_args(args)
    (tmp_path / "c.json").write_text(json.dumps({"out": "x"}))
    _, args = parse(["--config", str(tmp_path / "c.json")], required=("out",))
    assert config_from_args(args).out == "x"


def test_cross_field_checks_see_flags_and_set_together():
    """Flags and --set are applied in one step: a check across fields never sees half of them."""

    @dataclasses.dataclass(frozen=True)
    class Pair(Config):
        optimizer: str = "gd"
        batch_size: Optional[int] = None

        def validate(self) -> None:
            if self.optimizer == "sgd" and self.batch_size is None:
                raise ConfigError("field 'batch_size': sgd needs it")

    _, args = parse(["--optimizer", "sgd", "--set", "batch_size=8"], cls=Pair, required=())
    assert config_from_args(args) == Pair("sgd", 8)


def test_inline_nested_fields_are_top_level_flags_and_set_keys(tmp_path):
    @dataclasses.dataclass(frozen=True)
    class Run(Config):
        inner: Inner = dataclasses.field(default_factory=Inner)
        seeds: tuple[int, ...] = (0,)

    (tmp_path / "inner.yaml").write_text("rate: 0.125\n")  # a file of the nested config's fields
    parser, args = parse(["--config", str(tmp_path / "inner.yaml"), "--seeds", "1", "2"], cls=Run, inline="inner")
    assert config_from_args(args) == Run(Inner(0.125), (1, 2))
    assert "the inner rate" in parser.format_help()
    _, args = parse(["--rate", "0.75", "--set", "seeds=[3]"], cls=Run, inline="inner")
    assert config_from_args(args) == Run(Inner(0.75), (3,))
    _, args = parse(["--set", "rate=0.25"], cls=Run, inline="inner")
    assert config_from_args(args).inner.rate == 0.25


def test_a_heavy_config_named_by_string_gets_only_config_and_set():
    parser, args = parse(["--set", "batch_size=2"], cls="tests.cpi.test_cli_config:Demo")
    assert "--batch-size" not in parser.format_help()
    assert config_from_args(args) == Demo(batch_size=2)


def test_base_replaces_the_defaults():
    _, args = parse(["--batch-size", "3"])
    assert config_from_args(args, base=Demo(out="quick")) == Demo(out="quick", batch_size=3)


def test_field_docs_read_attribute_docstrings_and_the_class_docstring():
    docs = field_docs(Demo)
    assert docs["out"] == "results folder" and docs["mode"] == "how to run it" and docs["grid"] == "FIELD=V1,V2"
    assert field_docs(Inner) == {"rate": "the inner rate"}


# every runner's flags are its config's fields (generated, so none is missing or written twice)
RUNNERS = [
    (["evaluate"], "fullscale.evaluate:EvalConfig"),
    (["probe"], "mechinterp.trajectory:ProbeConfig"),
    (["probe-intervene"], "mechinterp.intervene:InterveneConfig"),
    (["probe-link"], "mechinterp.report:LinkConfig"),
    (["finetune"], "fullscale.finetune:FinetuneConfig"),
    (["data", "score-context"], "fullscale.curation:ScoreContextConfig"),
    (["data", "augment"], "fullscale.augment:AugmentConfig"),
    (["theory", "simulate"], "theory.run:SimulationRun"),
    (["theory", "sweep"], "theory.run:SweepRun"),
]


@pytest.mark.parametrize("words,target", RUNNERS, ids=[" ".join(w) for w, _ in RUNNERS])
def test_each_runner_has_one_flag_per_config_field(words, target):
    import importlib
    import typing

    from cpi.cli import build_parser

    parser = build_parser()
    for word in words:
        parser = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[word]
    flags = {o for a in parser._actions for o in a.option_strings if o.startswith("--")} - {"--help", "--config", "--set"}
    module, name = target.split(":")
    cls = getattr(importlib.import_module(module), name)
    hints = typing.get_type_hints(cls)
    expected = set()
    for f in dataclasses.fields(cls):
        sub = hints[f.name]
        if isinstance(sub, type) and issubclass(sub, Config):
            if f.name == "sim":  # theory's inline SimConfig: its own scalar fields are flags
                expected |= {"--" + g.name.replace("_", "-") for g in dataclasses.fields(sub)}
            continue
        if typing.get_origin(sub) is dict or (typing.get_args(sub) and any(
                isinstance(a, type) and issubclass(a, Config) for a in typing.get_args(sub))):
            continue
        expected.add("--" + f.name.replace("_", "-"))
        if sub is bool:
            expected.add("--no-" + f.name.replace("_", "-"))
    for_bools = {"--no-" + g.name.replace("_", "-") for g in dataclasses.fields(hints.get("sim", cls))
                 if hints.get("sim") is not None and typing.get_type_hints(hints["sim"])[g.name] is bool}
    assert flags == expected | for_bools
