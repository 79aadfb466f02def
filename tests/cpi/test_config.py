"""The shared config base: validation, JSON/YAML round trips, --set overrides."""

from __future__ import annotations

import dataclasses
import json
from typing import Literal, Optional

import pytest

from cpi.config import Config
from cpi.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Inner(Config):
    rank: int = 8


@dataclasses.dataclass(frozen=True)
class Example(Config):
    lr: float = 1e-3
    steps: int = 10
    name: str = "run"
    mode: Literal["full", "qk"] = "full"
    flag: bool = False
    modules: tuple[str, ...] = ("q", "k")
    limit: Optional[int] = None
    inner: Inner = Inner()

    def validate(self) -> None:
        if self.steps <= 0:
            raise ConfigError(f"field 'steps': must be positive, got {self.steps}")


def test_round_trip_json_and_yaml(tmp_path):
    cfg = Example(lr=0.5, modules=("a",), limit=3, inner=Inner(rank=2))
    assert Example.from_dict(json.loads(cfg.to_json())) == cfg
    for suffix in (".json", ".yaml"):
        cfg.save(tmp_path / f"c{suffix}")
        assert Example.from_file(tmp_path / f"c{suffix}") == cfg


def test_overrides_parse_types_and_copy():
    base = Example()
    new = base.with_overrides(["lr=2", "mode=qk", "flag=true", "modules=[x, y]", "limit=null"])
    assert new.lr == 2.0 and isinstance(new.lr, float)
    assert (new.mode, new.flag, new.modules, new.limit) == ("qk", True, ("x", "y"), None)
    assert base == Example(), "the original must not be mutated"
    assert base.with_overrides(["lr=1e-4"]).lr == 1e-4, "YAML 1.1 reads 1e-4 as a string"
    with pytest.raises(dataclasses.FrozenInstanceError):
        base.lr = 3.0  # type: ignore[misc]


@pytest.mark.parametrize(
    "assignment, fragment",
    [
        ("nope=1", "unknown field 'nope'"),
        ("steps=1.5", "field 'steps'"),
        ("steps=abc", "field 'steps'"),
        ("flag=3", "field 'flag'"),
        ("mode=other", "field 'mode'"),
        ("steps=0", "must be positive"),
        ("lr", "expected key=value"),
    ],
)
def test_bad_overrides_name_the_field(assignment, fragment):
    with pytest.raises(ConfigError, match=fragment):
        Example().with_overrides([assignment])


def test_from_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="bad.json"):
        Example.from_file(bad)
    with pytest.raises(ConfigError, match="missing.yaml"):
        Example.from_file(tmp_path / "missing.yaml")
    unknown = tmp_path / "u.yaml"
    unknown.write_text("lr: 1\nwhat: 2\n")
    with pytest.raises(ConfigError, match=r"u.yaml: unknown field 'what'"):
        Example.from_file(unknown)


@dataclasses.dataclass(frozen=True)
class Later(Config):
    lr: float = 0.1
    fast: bool = False
    ADDED_LATER = {"fast": False}


@dataclasses.dataclass(frozen=True)
class Keyed(Config):
    steps: int = 3
    out: str = "runs"
    inner: Later = dataclasses.field(default_factory=Later)
    NOT_CONTENT = ("out",)


def test_content_dict_leaves_out_where_and_fields_added_later_at_their_earlier_value():
    assert Keyed().content_dict() == {"steps": 3, "inner": {"lr": 0.1}}
    assert Keyed(out="elsewhere").content_dict() == Keyed().content_dict()
    assert Keyed(inner=Later(fast=True)).content_dict() == {"steps": 3, "inner": {"lr": 0.1, "fast": True}}
    assert Keyed().to_dict() == {"steps": 3, "out": "runs", "inner": {"lr": 0.1, "fast": False}}  # saved in full
    # a stored dict from before the fields existed reads as the same content
    assert Keyed.content_of({"steps": 3, "inner": {"lr": 0.1}}) == Keyed().content_dict()
    assert Keyed.content_of({"steps": 4, "inner": {"lr": 0.1}}) != Keyed().content_dict()


@dataclasses.dataclass(frozen=True)
class Moved(Config):
    inner: Later = dataclasses.field(default_factory=Later)
    RENAMED = {"lr": "moved into the inner block: inner.lr"}


def test_a_renamed_field_is_refused_with_its_hint_never_ignored(tmp_path):
    for make in (lambda: Moved.from_dict({"lr": 0.2}), lambda: Moved().replace(lr=0.2),
                 lambda: Moved().with_overrides(["lr=0.2"]), lambda: Moved().with_overrides(["lr.x=1"])):
        with pytest.raises(ConfigError, match=r"^field 'lr': moved into the inner block: inner\.lr$"):
            make()
    (tmp_path / "c.yaml").write_text("lr: 0.2\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: field 'lr': moved"):
        Moved.from_file(tmp_path / "c.yaml")
    assert Moved().replace(**{"inner.lr": 0.2}).inner.lr == 0.2  # the new key works
