"""The controlled experiment's conditions as data (``conditions.yaml`` beside this module, or a file of
the same form): each condition is the base config with a few dotted-key changes, and names the
conditions it is compared with and the paper's predicted sign.

A condition never silently overrides a setting the user gave: its ``defaults`` apply only where the
user left a field at its default, and its ``set`` changes (what makes the condition, e.g. the control's
``mixture.rho: 1.0``) are reported wherever they replace a user's value; a user's setting that *every*
condition run would replace is a :class:`~cpi.errors.ConfigError` naming the field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from cpi.config import Config
from cpi.errors import ConfigError
from experiments.controlled.config import ControlledConfig

#: the shipped conditions
CONDITIONS_FILE = Path(__file__).with_name("conditions.yaml")
PREDICTIONS = ("higher", "lower")


@dataclass(frozen=True)
class Condition:
    """One row of the conditions file: ``set`` (dotted key -> value, always applied), ``defaults``
    (applied where the user left the field at its default), ``compare_to`` (condition -> ``higher`` /
    ``lower``: the paper's prediction for this condition's context reliance against that one)."""

    name: str
    description: str = ""
    set: Mapping[str, Any] = field(default_factory=dict)
    defaults: Mapping[str, Any] = field(default_factory=dict)
    compare_to: Mapping[str, str] = field(default_factory=dict)


def load_conditions(path: Optional[str | Path] = None) -> dict[str, Condition]:
    """The conditions of ``path`` (default :data:`CONDITIONS_FILE`), validated: every key a field of
    :class:`~experiments.controlled.config.ControlledConfig`, every value valid there, every comparison
    with a known condition; errors are one line naming the file, condition and field."""
    import yaml

    path = Path(path) if path else CONDITIONS_FILE
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"conditions file {path}: cannot read it ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"conditions file {path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"conditions file {path}: expected a mapping of condition names to entries")
    out: dict[str, Condition] = {}
    for name, row in data.items():
        where = f"conditions file {path}, condition {name!r}"
        row = row or {}
        if not isinstance(row, dict):
            raise ConfigError(f"{where}: expected a mapping with set / defaults / compare_to / description")
        extra = sorted(set(row) - {"description", "set", "defaults", "compare_to"})
        if extra:
            raise ConfigError(f"{where}: unknown key {extra[0]!r} (known: description, set, defaults, compare_to)")
        parts = {k: row.get(k) or {} for k in ("set", "defaults", "compare_to")}
        for key, part in parts.items():
            if not isinstance(part, dict):
                raise ConfigError(f"{where}: {key!r} must be a mapping")
        both = sorted(set(parts["set"]) & set(parts["defaults"]))
        if both:
            raise ConfigError(f"{where}: field {both[0]!r} is in both set and defaults")
        try:
            ControlledConfig().replace(**parts["set"], **parts["defaults"])
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        out[str(name)] = Condition(str(name), str(row.get("description", "")), dict(parts["set"]),
                                   dict(parts["defaults"]), {str(k): str(v) for k, v in parts["compare_to"].items()})
    for cond in out.values():
        for other, sign in cond.compare_to.items():
            if other not in out:
                raise ConfigError(f"conditions file {path}, condition {cond.name!r}: compare_to names unknown "
                                  f"condition {other!r}")
            if sign not in PREDICTIONS:
                raise ConfigError(f"conditions file {path}, condition {cond.name!r}: compare_to {other}: "
                                  f"{sign!r} is not one of {', '.join(PREDICTIONS)}")
    return out


def parse_names(text: str | Sequence[str], known: Mapping[str, Condition], field_name: str = "conditions"
                ) -> tuple[str, ...]:
    """Condition names from ``"a,b"`` or a sequence: at least one, each known, none twice."""
    parts = text.split(",") if isinstance(text, str) else list(text)
    names = tuple(str(p).strip() for p in parts)
    if not names or any(not n for n in names):
        raise ConfigError(f"field '{field_name}': give condition names separated by commas, got {','.join(names)!r}")
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"field '{field_name}': unknown condition {unknown[0]!r} (known: {', '.join(known)})")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"field '{field_name}': condition {dup[0]!r} given twice")
    return names


def _leaves(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Config):
        value = value.to_dict()
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_leaves(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: value}


def user_settings(base: ControlledConfig, reference: ControlledConfig) -> dict[str, Any]:
    """Dotted key -> value of every field where ``base`` differs from ``reference`` (what the user set)."""
    ref = _leaves(reference)
    return {k: v for k, v in _leaves(base).items() if ref.get(k) != v}


@dataclass(frozen=True)
class ComposedCondition:
    """A condition's config, and the user's settings it ``replaced`` (key -> (user value, condition's))
    and ``kept`` (defaults not applied: key -> (user value, condition's default))."""

    name: str
    config: ControlledConfig
    replaced: Mapping[str, tuple[Any, Any]]
    kept: Mapping[str, tuple[Any, Any]]


def compose(base: ControlledConfig, names: Sequence[str], conditions: Mapping[str, Condition],
            reference: Optional[ControlledConfig] = None, knowledge_cache: Optional[str] = None,
            field_prefix: str = "") -> dict[str, ComposedCondition]:
    """Every condition of ``names`` applied to ``base`` (see the module doc); ``reference``: the
    runner's default config (what counts as the user's setting: a field where ``base`` differs from it;
    default ``ControlledConfig()``); ``knowledge_cache``: shared by every condition unless the base names
    one. Raises :class:`ConfigError` (the field's name prefixed by ``field_prefix``) when a setting of
    the user's would be replaced in every condition."""
    mine = user_settings(base, reference or ControlledConfig())
    out: dict[str, ComposedCondition] = {}
    for name in names:
        cond = conditions[name]
        defaults = {k: v for k, v in cond.defaults.items() if k not in mine}
        as_set = _leaves(ControlledConfig().replace(**cond.set, **cond.defaults))  # the row's values, normalised
        replaced = {k: (mine[k], v) for k, v in cond.set.items() if k in mine and mine[k] != as_set[k]}
        kept = {k: (mine[k], v) for k, v in cond.defaults.items() if k in mine}
        cfg = base.replace(**defaults, **cond.set, knowledge_cache=base.knowledge_cache or knowledge_cache)
        out[name] = ComposedCondition(name, cfg, replaced, kept)
    for key, value in mine.items():
        if out and all(key in c.replaced for c in out.values()):
            raise ConfigError(f"field '{field_prefix}{key}': set to {value!r}, but every condition run "
                              f"({', '.join(out)}) sets its own value, so the setting would be ignored; add a "
                              f"condition that keeps it (e.g. rho_mid) or drop the setting")
    return out


def comparison_pairs(names: Sequence[str], conditions: Mapping[str, Condition]) -> list[tuple[str, str]]:
    """``(a, b)`` pairs, the comparison being ``b - a`` with the paper's prediction ``> 0``, from each run
    condition's ``compare_to`` whose other condition is also run (``lower``: other - this; ``higher``:
    this - other)."""
    pairs = []
    for name in names:
        for other, sign in conditions[name].compare_to.items():
            if other in names:
                pairs.append((name, other) if sign == "lower" else (other, name))
    return pairs


def condition_lines(composed: Mapping[str, ComposedCondition], field_prefix: str = "") -> list[str]:
    """Printed lines for the user's settings a condition replaced or kept."""
    lines = []
    for c in composed.values():
        for key, (user, theirs) in c.replaced.items():
            lines.append(f"[{c.name}] sets {field_prefix}{key} = {theirs!r} (what makes this condition; your "
                         f"{user!r} applies to the others)")
        for key, (user, theirs) in c.kept.items():
            lines.append(f"[{c.name}] keeps your {field_prefix}{key} = {user!r} (its default would be {theirs!r})")
    return lines


__all__ = ["CONDITIONS_FILE", "ComposedCondition", "Condition", "comparison_pairs", "compose", "condition_lines",
           "load_conditions", "parse_names", "user_settings"]
