"""Validated, immutable config dataclasses that round-trip to JSON and YAML.

Subclass :class:`Config` with ``@dataclass(frozen=True)`` and override
:meth:`Config.validate` to check the model's assumptions. Configs are never
mutated: derive variants with :meth:`Config.replace` (``dataclasses.replace``
plus validation) or :meth:`Config.with_overrides` for ``--set key=value``
strings from the command line.

Field types understood when reading JSON/YAML or ``--set`` values: ``bool``,
``int``, ``float``, ``str``, ``Optional[...]``, ``Literal[...]``,
``tuple[X, ...]``/``list[X]`` (stored as tuples), ``dict`` and nested
``Config`` subclasses (whose fields ``--set`` reaches with a dotted key, ``ift.rho=0.5``). A nested
block given in part (``experiment: {seeds: [4]}``) fills the fields it leaves out from its owner's
default for that block (a runner's own experiment), not from the nested class's defaults.

Content keys: a run folder keyed by a config's content (a hash of :meth:`Config.content_dict`)
keeps its name when the config class grows. Two class attributes say what is not content:
``NOT_CONTENT`` (fields that say where a run goes, not what it computes, such as an output
folder) and ``ADDED_LATER`` (fields added after runs keyed by the class existed, each with the
value that reproduces the earlier behaviour: at that value the field is left out, so folders made
before it keep their names; any other value enters the key). Record a new field in
``ADDED_LATER`` whenever a config that keys folders grows one.

A field renamed or moved is listed in ``RENAMED`` (old name -> what to write now): reading a file or
mapping with it, and ``replace`` / ``--set`` of it, are refused with that hint, never ignored.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, ClassVar, Literal, Mapping, Sequence, TypeVar, Union

import yaml

from cpi.errors import ConfigError

C = TypeVar("C", bound="Config")


@dataclasses.dataclass(frozen=True)
class Config:
    """Base class: frozen dataclass with validation and (de)serialisation."""

    #: fields that are not the run's content (where it goes, not what it computes): never in a content key
    NOT_CONTENT: ClassVar[tuple[str, ...]] = ()
    #: fields added after folders keyed by this class existed -> the value that behaves as before the
    #: field existed; at that value the field is left out of the content key (earlier folders keep their names)
    ADDED_LATER: ClassVar[Mapping[str, Any]] = types.MappingProxyType({})
    #: fields of earlier versions -> what to write now; refused with that hint (``field 'old': hint``)
    RENAMED: ClassVar[Mapping[str, str]] = types.MappingProxyType({})

    def __post_init__(self) -> None:
        self.validate()

    # -- to override -----------------------------------------------------
    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the field if the config is impossible."""

    # -- copying ---------------------------------------------------------
    def replace(self: C, **changes: Any) -> C:
        """A validated copy with ``changes`` applied (``dataclasses.replace``).

        A dotted key changes a field of a nested config: ``replace(**{"ift.rho": 0.5})``.
        """
        self._refuse_renamed(changes)
        known = {f.name for f in dataclasses.fields(self)}
        nested: dict[str, dict[str, Any]] = {}
        for key in [k for k in changes if "." in k]:
            head, rest = key.split(".", 1)
            nested.setdefault(head, {})[rest] = changes.pop(key)
        for head, sub in nested.items():
            current = changes.get(head, getattr(self, head, None)) if head in known else None
            if not isinstance(current, Config):
                raise ConfigError(f"unknown field '{head}.{next(iter(sub))}' for {type(self).__name__}: "
                                  f"'{head}' is not a nested config")
            changes[head] = current.replace(**sub)
        for key in changes:
            if key not in known:
                raise ConfigError(f"unknown field '{key}' for {type(self).__name__} (known: {', '.join(sorted(known))})")
        hints = typing.get_type_hints(type(self))
        coerced = {k: _coerce(v, hints[k], k) for k, v in changes.items()}
        return dataclasses.replace(self, **coerced)

    def with_overrides(self: C, assignments: Sequence[str]) -> C:
        """Apply ``key=value`` strings; values are parsed as YAML scalars/lists."""
        return self.replace(**dict(parse_assignment(item) for item in assignments))

    # -- serialisation ---------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def content_dict(self) -> dict[str, Any]:
        """:meth:`to_dict` without what is not content (``NOT_CONTENT``, ``ADDED_LATER`` fields at their
        earlier value), nested configs likewise: what a content key hashes.

        >>> @dataclasses.dataclass(frozen=True)
        ... class Train(Config):
        ...     steps: int = 10
        ...     out: str = "runs"
        ...     checkpointing: bool = False
        ...     NOT_CONTENT = ("out",)
        ...     ADDED_LATER = {"checkpointing": False}
        >>> Train().content_dict(), Train(checkpointing=True).content_dict()
        ({'steps': 10}, {'steps': 10, 'checkpointing': True})
        """
        return self.content_of(self.to_dict())

    @classmethod
    def content_of(cls, data: Mapping[str, Any]) -> dict[str, Any]:
        """:meth:`content_dict` of a stored ``to_dict()`` mapping (e.g. a run's saved config), so that a
        folder written before a field existed compares equal to the config that would write it now."""
        hints = typing.get_type_hints(cls)
        out: dict[str, Any] = {}
        for key, value in data.items():
            if key in cls.NOT_CONTENT or (key in cls.ADDED_LATER and value == _plain(cls.ADDED_LATER[key])):
                continue
            sub = hints.get(key)
            nested = isinstance(sub, type) and issubclass(sub, Config) and isinstance(value, Mapping)
            out[key] = sub.content_of(value) if nested else value
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    @classmethod
    def from_dict(cls: type[C], data: Mapping[str, Any], source: str = "config") -> C:
        """Build from a mapping; unknown keys, wrong types and failed validation raise :class:`ConfigError`.

        Messages read ``SOURCE: field 'name': ...`` when ``source`` names a file, and
        ``field 'block.name': ...`` for a field of a nested config block.
        """
        try:
            return cls._from_dict(data, prefix="")
        except ConfigError as exc:
            if source == "config":
                raise
            raise ConfigError(f"{source}: {exc}") from exc

    @classmethod
    def _refuse_renamed(cls, keys: Any) -> None:
        for key in keys:
            head = str(key).split(".", 1)[0]
            if head in cls.RENAMED:
                raise ConfigError(f"field '{head}': {cls.RENAMED[head]}")

    @classmethod
    def _from_dict(cls: type[C], data: Mapping[str, Any], prefix: str, base: "Config | None" = None) -> C:
        """``data`` over ``base`` (the enclosing config's default for this block; None: the class's
        defaults): a nested block given in part keeps its owner's defaults for the fields it leaves out."""
        if not isinstance(data, Mapping):
            where = f"field '{prefix.rstrip('.')}': " if prefix else ""
            raise ConfigError(f"{where}expected a mapping of fields, got {type(data).__name__}")
        cls._refuse_renamed(data)
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
        unknown = sorted(set(map(str, data)) - set(fields))
        if unknown:
            raise ConfigError(f"unknown field '{prefix}{unknown[0]}' for {cls.__name__} "
                              f"(known: {', '.join(sorted(fields))})")
        hints = typing.get_type_hints(cls)
        kwargs: dict[str, Any] = {}
        for k, v in data.items():
            tp = hints[k]
            if isinstance(tp, type) and issubclass(tp, Config) and isinstance(v, Mapping):
                inner = getattr(base, k) if base is not None else _field_default(fields[k])
                kwargs[k] = tp._from_dict(v, f"{prefix}{k}.", inner if isinstance(inner, tp) else None)
            else:
                kwargs[k] = _coerce(v, tp, f"{prefix}{k}")
        if base is not None:
            kwargs = {**{name: getattr(base, name) for name in fields}, **kwargs}
        return cls(**kwargs)

    @classmethod
    def from_file(cls: type[C], path: str | Path) -> C:
        """Read a ``.json``, ``.yaml`` or ``.yml`` file (read once: a pipe or ``<(...)`` works)."""
        return cls.from_dict(read_config_file(path), source=str(path))

    def save(self, path: str | Path) -> None:
        """Write the config as JSON (or YAML by suffix), atomically."""
        from cpi.io import atomic_write_text

        path = Path(path)
        text = yaml.safe_dump(self.to_dict(), sort_keys=False) if path.suffix in (".yaml", ".yml") else self.to_json() + "\n"
        atomic_write_text(path, text)


def read_config_file(path: str | Path) -> Any:
    """The data in a YAML/JSON config file (``{}`` for an empty one), read once.

    One-line :class:`ConfigError` s name the file: missing, a folder, not UTF-8, binary, not valid
    JSON/YAML (the parser's first line), nested too deeply to read. A pipe or ``<(process
    substitution)`` is read like a file (YAML unless the name ends in ``.json``).
    """
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder, expected a config file")
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc.strerror})") from None
    try:
        text = raw.decode("utf-8-sig")  # a leading byte-order mark is not data
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a text config file (byte {exc.start}: {exc.reason})") from None
    if "\x00" in text:
        raise ConfigError(f"{path}: binary data, not a YAML/JSON config file")
    kind = "JSON" if path.suffix == ".json" else "YAML"
    try:
        data = json.loads(text) if kind == "JSON" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        first = str(exc).splitlines()[0]
        raise ConfigError(f"{path}: not valid {kind}: {first}") from None
    except RecursionError:
        raise ConfigError(f"{path}: {kind} nested too deeply to read") from None
    return {} if data is None else data


def parse_assignment(item: str) -> tuple[str, Any]:
    """``"key=value"`` -> ``(key, value)``, the value read as a YAML scalar or list (``--set``)."""
    if "=" not in item:
        raise ConfigError(f"--set '{item}': expected key=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    shown = raw if len(raw) <= 60 else raw[:57] + "..."
    try:
        return key, (yaml.safe_load(raw) if raw.strip() else raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {key}: cannot parse value {shown!r}: {str(exc).splitlines()[0]}") from None
    except RecursionError:
        raise ConfigError(f"--set {key}: value {shown!r} is nested too deeply to read") from None


def check_at_least(config: Any, prefix: str = "", /, **minimums: float) -> None:
    """Raise :class:`ConfigError` ``field 'NAME': must be >= MIN, got VALUE`` for the first field of
    ``config`` below its minimum (``None`` values are skipped: "not set"). ``prefix`` names a nested
    block in the message (``"lora."``).

    >>> import dataclasses
    >>> @dataclasses.dataclass(frozen=True)
    ... class Sizes(Config):
    ...     batch_size: int = 8
    ...     def validate(self):
    ...         check_at_least(self, batch_size=1)
    >>> Sizes(batch_size=0)
    Traceback (most recent call last):
    cpi.errors.ConfigError: field 'batch_size': must be >= 1, got 0
    """
    for name, minimum in minimums.items():
        value = getattr(config, name)
        if value is not None and not value >= minimum:
            raise ConfigError(f"field '{prefix}{name}': must be >= {minimum}, got {value}")


def check_at_most(config: Any, prefix: str = "", /, **maximums: float) -> None:
    """Raise :class:`ConfigError` ``field 'NAME': must be <= MAX, got VALUE`` for the first field of
    ``config`` above its maximum (``None`` skipped). For sizes that would allocate or run without
    bound (``n_boot``, ``n_examples``, model widths): refused before any work starts.

    >>> import dataclasses
    >>> @dataclasses.dataclass(frozen=True)
    ... class Boot(Config):
    ...     n_boot: int = 1000
    ...     def validate(self):
    ...         check_at_most(self, n_boot=1_000_000)
    >>> Boot(n_boot=10**12)
    Traceback (most recent call last):
    cpi.errors.ConfigError: field 'n_boot': must be <= 1000000, got 1000000000000
    """
    for name, maximum in maximums.items():
        value = getattr(config, name)
        if value is not None and not value <= maximum:
            shown = f"{maximum:g}" if isinstance(maximum, float) else maximum
            raise ConfigError(f"field '{prefix}{name}': must be <= {shown}, got {value}")


def check_finite(config: Any, prefix: str = "", /, *names: str) -> None:
    """Raise :class:`ConfigError` ``field 'NAME': must be a finite number, got VALUE`` for the first
    named field that is NaN or infinite (``None`` skipped).

    >>> import dataclasses
    >>> @dataclasses.dataclass(frozen=True)
    ... class Scale(Config):
    ...     scale: float = 1.0
    ...     def validate(self):
    ...         check_finite(self, "", "scale")
    >>> Scale(scale=float("inf"))
    Traceback (most recent call last):
    cpi.errors.ConfigError: field 'scale': must be a finite number, got inf
    """
    import math

    for name in names:
        value = getattr(config, name)
        if value is not None and not math.isfinite(value):
            raise ConfigError(f"field '{prefix}{name}': must be a finite number, got {value}")


def physical_memory_bytes() -> int | None:
    """The machine's physical memory in bytes (``None`` where the OS does not say)."""
    import os

    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def check_fits_memory(nbytes: float, what: str) -> None:
    """Raise :class:`ConfigError` ``WHAT: needs about X GiB, more than this machine's Y GiB`` when an
    estimated allocation exceeds physical memory (so it is refused before work, not killed during it)."""
    total = physical_memory_bytes()
    if total is not None and nbytes > total:
        raise ConfigError(f"{what}: needs about {nbytes / 2**30:,.1f} GiB, more than this machine's "
                          f"{total / 2**30:,.1f} GiB of memory")


def check_in_interval(config: Any, prefix: str = "", /, **intervals: str) -> None:
    """Raise :class:`ConfigError` ``field 'NAME': must be in INTERVAL, got VALUE`` for the first field of
    ``config`` outside its interval, written ``"[0, 1)"`` (``[``/``]`` closed, ``(``/``)`` open ends).

    >>> import dataclasses
    >>> @dataclasses.dataclass(frozen=True)
    ... class Mix(Config):
    ...     rho: float = 0.5
    ...     def validate(self):
    ...         check_in_interval(self, rho="(0, 1]")
    >>> Mix(rho=0.0)
    Traceback (most recent call last):
    cpi.errors.ConfigError: field 'rho': must be in (0, 1], got 0.0
    """
    for name, interval in intervals.items():
        low, high = (float(x) for x in interval[1:-1].split(","))
        value = getattr(config, name)
        above = value >= low if interval[0] == "[" else value > low
        below = value <= high if interval[-1] == "]" else value < high
        if not (above and below):
            raise ConfigError(f"field '{prefix}{name}': must be in {interval}, got {value}")


def _plain(value: Any) -> Any:
    if isinstance(value, Config):
        return value.to_dict()
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    return value


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _field_default(f: "dataclasses.Field[Any]") -> Any:
    """A dataclass field's default value (its factory called), or None when it has none."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None


def _coerce(value: Any, tp: Any, name: str) -> Any:
    """Check ``value`` against the annotation ``tp``; convert lists to tuples, ints to floats."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, name)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"field '{name}': {value!r} is not a valid {_type_name(tp)}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"field '{name}': {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if origin in (tuple, list, Sequence) or tp in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"field '{name}': expected a list, got {value!r}")
        item_tp = args[0] if args else Any
        return tuple(_coerce(v, item_tp, f"{name}[{i}]") for i, v in enumerate(value))
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"field '{name}': expected a mapping, got {value!r}")
        return dict(value)
    if isinstance(tp, type) and issubclass(tp, Config):
        if isinstance(value, tp):
            return value
        return tp._from_dict(value, prefix=f"{name}.")
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"field '{name}': expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"field '{name}': expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(f"field '{name}': expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"field '{name}': expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"field '{name}': expected a string, got {value!r}")
        return value
    if tp is Path:
        if not isinstance(value, (str, Path)):
            raise ConfigError(f"field '{name}': expected a path, got {value!r}")
        return Path(value)
    return value
