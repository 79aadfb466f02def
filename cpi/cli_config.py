"""Command-line flags generated from a config dataclass: one way from config to CLI.

:func:`add_config_arguments` adds to an ``argparse`` parser

* one ``--field-name`` flag per scalar or tuple field of a :class:`cpi.config.Config`
  subclass (``bool`` fields get ``--x``/``--no-x``; ``Literal`` fields get choices;
  ``tuple`` fields take several values, space- or comma-separated, and the flag may be repeated;
  ``field(metadata={"split": False})`` keeps commas inside a value). The help text is the
  field's documentation (an attribute docstring below the field, ``field(metadata={"help": ...})``
  or a ``name: text`` entry of the class docstring) and the default shown is the dataclass
  default, never written a second time;
* ``--config FILE``: a JSON/YAML file of the config's fields;
* ``--set KEY=VALUE`` (repeatable): any field, nested ones with a dotted key (``ift.rho=0.5``).

Precedence: defaults < ``--config`` < flags < ``--set``. The handler builds the config with
:func:`config_from_args`, which raises :class:`cpi.errors.ConfigError` (a one-line
``cpi: error: ...`` in the CLI) for bad values or a missing required field.

Example::

    >>> import argparse, dataclasses
    >>> from cpi.config import Config
    >>> @dataclasses.dataclass(frozen=True)
    ... class RunConfig(Config):
    ...     out: str = "runs"
    ...     "results folder"
    ...     batch_size: int = 8
    ...     "items per forward pass"
    ...     plot: bool = True
    ...     "draw the figure"
    >>> parser = argparse.ArgumentParser(prog="demo")
    >>> add_config_arguments(parser, RunConfig)
    >>> args = parser.parse_args(["--batch-size", "4", "--no-plot", "--set", "out=r1"])
    >>> config_from_args(args)
    RunConfig(out='r1', batch_size=4, plot=False)
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import json
import re
import textwrap
import types
import typing
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence, Union

from cpi.config import Config, parse_assignment
from cpi.errors import ConfigError

__all__ = ["add_config_arguments", "config_from_args", "field_docs", "flag_given", "set_assignments", "split_values"]

_PREFIX = "cfg__"


def split_values(values: Sequence[str] | str | None) -> tuple[str, ...]:
    """``["a,b", "c"]`` -> ``("a", "b", "c")``: several values, space- or comma-separated."""
    if values is None:
        return ()
    if isinstance(values, str):
        values = [values]
    return tuple(s.strip() for v in values for s in str(v).split(",") if s.strip())


def field_docs(cls: type) -> dict[str, str]:
    """Documentation of each field of dataclass ``cls`` (and its bases), first sentence-ish line.

    Sources, first found wins: ``field(metadata={"help": ...})``; a string literal right below the
    field in the class body (an attribute docstring); ``name: text`` / ``name — text`` in the
    class docstring (``name`` may be written ``\\`\\`name\\`\\```).
    """
    docs: dict[str, str] = {}
    for klass in reversed([k for k in cls.__mro__ if dataclasses.is_dataclass(k)]):
        docs.update(_docstring_docs(klass))
        docs.update(_attribute_docs(klass))  # cached; update() copies
    for f in dataclasses.fields(cls):
        if "help" in f.metadata:
            docs[f.name] = str(f.metadata["help"])
    return docs


@functools.lru_cache(maxsize=None)
def _attribute_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings of ``cls`` (parsed once per class: reading the source is the slow part)."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    tree = ast.parse(source)
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    docs = {}
    for node, nxt in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(nxt, ast.Expr) \
                and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str):
            docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def _docstring_docs(cls: type) -> dict[str, str]:
    """``name: text`` entries of the class docstring; an entry runs to the next entry or blank line."""
    doc = cls.__dict__.get("__doc__") or ""
    names = "|".join(sorted((re.escape(f.name) for f in dataclasses.fields(cls)), key=len, reverse=True))
    if not names:
        return {}
    starts = list(re.finditer(rf"(?:^[ \t]*(?:-[ \t]+)?(?:``)?|``)({names})(?:``)?[ \t]*(?::|—)\s+", doc, re.M))
    docs: dict[str, str] = {}
    for k, m in enumerate(starts):
        end = starts[k + 1].start() if k + 1 < len(starts) else len(doc)
        text = re.split(r"\n\s*\n|\n\s*-\s", doc[m.end():end])[0]
        text = re.split(r"(?<!e\.g\.)(?<!i\.e\.)(?<=[.;])\s+(?=[A-Z`(])", " ".join(text.split()))[0]
        text = text.replace("``", "").replace(":class:`", "").replace("`", "").rstrip(".;,( -")
        if text and m.group(1) not in docs:
            docs[m.group(1)] = text
    return docs


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    if typing.get_origin(tp) in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _flag_kwargs(tp: Any) -> dict[str, Any] | None:
    """argparse keyword arguments for a field of type ``tp``; None if it has no flag (nested, dict)."""
    tp, _ = _unwrap_optional(tp)
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):  # a number or a named setting: Union[int, Literal["auto"]]
        args = typing.get_args(tp)
        words = [w for a in args if typing.get_origin(a) is Literal for w in typing.get_args(a)]
        numbers = [a for a in args if a in (int, float)]
        if len(numbers) == 1 and words and all(a in numbers or typing.get_origin(a) is Literal for a in args):
            return {"type": _number_or(numbers[0], words)}
        return None
    if tp is bool:
        return {"action": argparse.BooleanOptionalAction}
    if origin is Literal:
        return {"choices": list(typing.get_args(tp))}
    if origin in (tuple, list) or tp in (tuple, list):
        return {"nargs": "+", "action": "extend"}
    if tp in (int, float):
        return {"type": _number(tp)}
    if tp in (str, Path):
        return {}
    return None


def _number(tp: type):
    def convert(text: str):
        try:
            return tp(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if tp is int else 'a number'}, "
                                             f"got {text!r}") from None
    convert.__name__ = tp.__name__
    return convert


def _number_or(tp: type, words: Sequence[str]):
    number = _number(tp)

    def convert(text: str):
        if text in words:
            return text
        try:
            return number(text)
        except argparse.ArgumentTypeError:
            raise argparse.ArgumentTypeError(f"expected {' or '.join(words)} or "
                                             f"{'an integer' if tp is int else 'a number'}, got {text!r}") from None
    convert.__name__ = f"{tp.__name__} or {'/'.join(words)}"
    return convert


@dataclasses.dataclass
class _Spec:
    cls: "type | str"
    flags: dict[str, tuple[str, ...]]  # dest -> field path
    required: tuple[str, ...]
    inline: str | None


def add_config_arguments(parser: argparse.ArgumentParser, cls: "type | str", *, required: Sequence[str] = (),
                         inline: str | None = None, config_help: str | None = None) -> None:
    """Add ``--field`` flags for ``cls``'s fields, ``--config FILE`` and ``--set KEY=VALUE`` to ``parser``.

    ``required``: fields that must come from a flag, ``--set`` or the ``--config`` file;
    ``inline``: a nested-config field whose own fields get top-level flags and ``--set`` keys
    (``cpi theory simulate --set n_CS=8`` sets ``sim.n_CS``); ``config_help``: the help of
    ``--config``. Nested-config and ``dict`` fields get no flag (``--set`` reaches them). The
    handler calls :func:`config_from_args`.

    ``cls`` may be given as ``"module:ClassName"`` for a config whose module imports heavy
    libraries (torch): building the ``cpi`` parser must stay light, so such a command gets only
    ``--config`` and ``--set``, and the class is imported when the command runs.
    """
    if isinstance(cls, str):
        _add_file_and_set(parser, cls.rsplit(":", 1)[-1], config_help)
        parser.set_defaults(config_spec=_Spec(cls, {}, tuple(required), inline))
        return
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    flags: dict[str, tuple[str, ...]] = {}
    fields: list[tuple[tuple[str, ...], Any, str, Any]] = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if f.name == inline:
            sub = hints[f.name]
            sub_hints, sub_docs = typing.get_type_hints(sub), field_docs(sub)
            sub_default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            for g in dataclasses.fields(sub):
                if g.init:
                    fields.append(((f.name, g.name), sub_hints[g.name], sub_docs.get(g.name, ""),
                                   getattr(sub_default, g.name)))
            continue
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)  # type: ignore[misc]
        fields.append(((f.name,), hints[f.name], docs.get(f.name, ""), default))
    for path, tp, doc, default in fields:
        kwargs = _flag_kwargs(tp)
        if kwargs is None:
            continue
        text = doc
        if path[-1] in required:
            text = f"{text} (required)".strip()
        elif tp is not bool or not isinstance(default, bool):
            shown = (",".join(map(str, default)) or "none") if isinstance(default, tuple) else default
            text = f"{text} (default: {shown})".strip()
        else:
            text = f"{text} (default: {'on' if default else 'off'})".strip()
        dest = _PREFIX + "__".join(path)
        if kwargs.get("action") is not argparse.BooleanOptionalAction and "choices" not in kwargs:
            kwargs.setdefault("metavar", path[-1].upper())
        parser.add_argument("--" + path[-1].replace("_", "-"), dest=dest, default=argparse.SUPPRESS,
                            help=text.replace("%", "%%"), **kwargs)
        flags[dest] = path
    _add_file_and_set(parser, cls.__name__, config_help)
    parser.set_defaults(config_spec=_Spec(cls, flags, tuple(required), inline))


def _add_file_and_set(parser: argparse.ArgumentParser, name: str, config_help: str | None) -> None:
    parser.add_argument("--config", dest=_PREFIX + "_file", type=Path, default=None, metavar="FILE",
                        help=config_help or f"JSON/YAML file with {name} fields")
    parser.add_argument("--set", dest=_PREFIX + "_set", action="append", default=[], metavar="KEY=VALUE",
                        help="override any config field (repeatable; nested fields with a dotted key)")


def config_from_args(args: argparse.Namespace, base: Config | None = None) -> Any:
    """The config of a parser built by :func:`add_config_arguments`.

    ``base`` replaces the dataclass defaults (a command whose default depends on other flags,
    such as ``--quick``). Precedence: ``base``/defaults < ``--config`` < flags < ``--set``.
    """
    spec: _Spec = args.config_spec
    cls = spec.cls
    if isinstance(cls, str):
        import importlib

        module, _, name = cls.partition(":")
        cls = getattr(importlib.import_module(module), name)
    hints = typing.get_type_hints(cls)
    file = getattr(args, _PREFIX + "_file", None)
    data = _read_mapping(cls, file) if file is not None else {}
    if spec.inline is not None:
        data = _route_inline(cls, spec.inline, data)
    changes: dict[str, Any] = {}
    for dest, path in spec.flags.items():
        if not hasattr(args, dest):
            continue
        value = getattr(args, dest)
        tp = hints[path[0]] if len(path) == 1 else typing.get_type_hints(hints[path[0]])[path[1]]
        inner, _ = _unwrap_optional(tp)
        if typing.get_origin(inner) in (tuple, list):
            item = (typing.get_args(inner) or (str,))[0]
            meta = _field(cls, path).metadata
            parts = split_values(value) if meta.get("split", True) else tuple(value)
            value = tuple(_convert_item(v, item, path) for v in parts)
        changes[".".join(path)] = value
    assignments = list(getattr(args, _PREFIX + "_set", []) or [])
    if spec.inline is not None:
        assignments = [_inline_key(cls, spec.inline, a) for a in assignments]
    given = set(data) | {k.split(".", 1)[0] for k in changes} | {a.split("=", 1)[0].split(".", 1)[0].strip()
                                                                for a in assignments}
    missing = [name for name in spec.required if name not in given]
    if missing:
        raise ConfigError(f"{'--' + missing[0].replace('_', '-')} is required (or give it in --config)")
    if base is not None:
        cfg = base.replace(**_dotted(base, data)) if data else base
    else:  # the file, flags and plain --set keys build the config at once; dotted keys follow
        top = {k: v for k, v in changes.items() if "." not in k}
        plain = [a for a in assignments if "." not in a.split("=", 1)[0]]
        top.update(parse_assignment(a) for a in plain)
        cfg = cls.from_dict({**data, **top}, source=str(file) if file is not None and not top else "config")
        changes = {k: v for k, v in changes.items() if "." in k}
        assignments = [a for a in assignments if a not in plain]
    # the remaining flags and --set in one step (one validation: a check across fields sees them all;
    # the config's own with_overrides, e.g. FinetuneConfig's, reads both); --set comes last and wins
    assignments = [f"{k}={json.dumps(list(v) if isinstance(v, tuple) else v)}" for k, v in changes.items()] + assignments
    return cfg.with_overrides(assignments) if assignments else cfg


def _field(cls: type, path: tuple[str, ...]) -> dataclasses.Field:
    if len(path) > 1:
        cls = typing.get_type_hints(cls)[path[0]]
    return next(f for f in dataclasses.fields(cls) if f.name == path[-1])


def set_assignments(args: argparse.Namespace) -> list[str]:
    """The ``--set KEY=VALUE`` strings of a command built by :func:`add_config_arguments`, as given."""
    return list(getattr(args, _PREFIX + "_set", None) or [])


def flag_given(args: argparse.Namespace, name: str) -> bool:
    """Whether the field ``name`` (or ``"config"`` for ``--config``) was given on the command line."""
    if name == "config":
        return getattr(args, _PREFIX + "_file", None) is not None
    return any(hasattr(args, dest) for dest, path in args.config_spec.flags.items() if path[-1] == name)


def _convert_item(text: str, tp: Any, path: tuple[str, ...]) -> Any:
    if tp in (int, float):
        try:
            return tp(text)
        except ValueError:
            raise ConfigError(f"--{path[-1].replace('_', '-')}: {text!r} is not "
                              f"{'an integer' if tp is int else 'a number'}") from None
    return text


def _read_mapping(cls: type, path: Path) -> dict[str, Any]:
    """The mapping in a config file, read once, with the one-line errors of :func:`cpi.config.read_config_file`."""
    from cpi.config import read_config_file

    data = read_config_file(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of fields, got {type(data).__name__}")
    return data


def _route_inline(cls: type, inline: str, data: Mapping[str, Any]) -> dict[str, Any]:
    """Top-level keys of a config file that are not ``cls`` fields go to the ``inline`` nested config."""
    own = {f.name for f in dataclasses.fields(cls)}
    out = {k: v for k, v in data.items() if k in own}
    rest = {k: v for k, v in data.items() if k not in own}
    if rest:
        out[inline] = {**dict(out.get(inline) or {}), **rest}
    return out


def _inline_key(cls: type, inline: str, assignment: str) -> str:
    key = assignment.split("=", 1)[0].strip()
    own = {f.name for f in dataclasses.fields(cls)}
    return assignment if key.split(".", 1)[0] in own else f"{inline}.{assignment.strip()}"


def _dotted(base: Config, data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"ift": {"rho": 0.5}}`` -> ``{"ift.rho": 0.5}`` where ``ift`` is a nested config of ``base``
    (so that a file changes only the nested fields it names, keeping ``base``'s others)."""
    out: dict[str, Any] = {}
    for k, v in data.items():
        current = getattr(base, k, None)
        if isinstance(v, Mapping) and isinstance(current, Config):
            out.update(_dotted(current, v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out
