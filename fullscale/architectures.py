"""Per-architecture facts, one table: ``fullscale/data/architectures.csv``.

What loading, probing, QK-only finetuning and collation need to know about a model family is one
row here (keyed by the Hugging Face class name in ``config.architectures``), not a ``"gemma" in name``
branch in each of them. Columns:

| column | meaning |
|---|---|
| ``architecture`` | HF causal-LM class name (``config.architectures[0]``), unique |
| ``model_type`` | ``config.model_type``, unique |
| ``gguf_architecture`` | ``general.architecture`` of the family's GGUF files (the registry's ``architecture``), may be empty |
| ``norm`` | ``rms`` (``x / rms(x) ⊙ gain``) or ``layernorm`` (``(x − mean) / std ⊙ gain + bias``) |
| ``rmsnorm_offset`` | the RMSNorm gain is ``1 + weight`` (Gemma) rather than ``weight`` |
| ``sandwich_norms`` | each block normalises its attention and MLP outputs before the residual add (Gemma-2/3) |
| ``attention`` | ``separate`` q/k/v projections, ``fused_neox`` (one Linear, rows ``[head_index 3 d_head]``) or ``fused_gpt2`` (one Conv1D, columns ``[q | k | v]``) |
| ``qk_params`` | leaf module names holding the query/key weights (space-separated) |
| ``gqa`` | the family can have fewer key/value heads than query heads |
| ``probe_verified`` | the probe's decomposition is tested on this architecture (tests/mechinterp) |
| ``notes`` | free text |

The facts are checked against the ``transformers`` implementation of every row by
``tests/mechinterp/test_architectures.py`` (module names, norm classes, the ``1 + w`` gain).

>>> arch = architecture("Gemma3ForCausalLM")
>>> arch.norm, arch.rmsnorm_offset, arch.sandwich_norms, arch.qk_params
('rms', True, True, ('q_proj', 'k_proj'))
>>> lookup("gpt_neox").attention
'fused_neox'
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cpi.errors import CpiError
from cpi.io import read_csv_rows

ARCHITECTURES_FILE = Path(__file__).resolve().parent / "data" / "architectures.csv"
COLUMNS = ("architecture", "model_type", "gguf_architecture", "norm", "rmsnorm_offset", "sandwich_norms",
           "attention", "qk_params", "gqa", "probe_verified", "notes")
NORMS = ("rms", "layernorm")
ATTENTION_LAYOUTS = ("separate", "fused_neox", "fused_gpt2")
_BOOLS = {"true": True, "false": False}


@dataclass(frozen=True)
class Architecture:
    """One row of the architecture table (see the module docstring for the columns)."""

    architecture: str
    model_type: str
    gguf_architecture: str
    norm: str
    rmsnorm_offset: bool
    sandwich_norms: bool
    attention: str
    qk_params: tuple[str, ...]
    gqa: bool
    probe_verified: bool
    notes: str = ""


def _parse_row(path: Path, lineno: int, row: dict[str, str]) -> Architecture:
    where = f"architecture table {path}, line {lineno}"
    text = {c: (row.get(c) or "").strip() for c in COLUMNS}
    if not text["architecture"] or not text["model_type"]:
        raise CpiError(f"{where}: fields 'architecture' and 'model_type' must not be empty")
    where = f"{where} ({text['architecture']})"
    flags = {}
    for c in ("rmsnorm_offset", "sandwich_norms", "gqa", "probe_verified"):
        if text[c].lower() not in _BOOLS:
            raise CpiError(f"{where}: field {c!r} must be true or false, got {text[c]!r}")
        flags[c] = _BOOLS[text[c].lower()]
    if text["norm"] not in NORMS:
        raise CpiError(f"{where}: field 'norm' must be one of {', '.join(NORMS)}, got {text['norm']!r}")
    if text["attention"] not in ATTENTION_LAYOUTS:
        raise CpiError(f"{where}: field 'attention' must be one of {', '.join(ATTENTION_LAYOUTS)}, "
                       f"got {text['attention']!r}")
    if flags["rmsnorm_offset"] and text["norm"] != "rms":
        raise CpiError(f"{where}: field 'rmsnorm_offset' is true but 'norm' is {text['norm']!r}")
    qk = tuple(text["qk_params"].split())
    if not qk:
        raise CpiError(f"{where}: field 'qk_params' must name the query/key modules")
    return Architecture(architecture=text["architecture"], model_type=text["model_type"],
                        gguf_architecture=text["gguf_architecture"], norm=text["norm"], attention=text["attention"],
                        qk_params=qk, notes=text["notes"], **flags)


def load_architectures(path: str | Path | None = None) -> dict[str, Architecture]:
    """The table as ``{architecture: Architecture}`` in file order, validated (a bad file raises
    :class:`CpiError` naming the file, line and field). ``path`` defaults to the shipped table."""
    p = Path(path) if path is not None else ARCHITECTURES_FILE
    rows: dict[str, Architecture] = {}
    seen: dict[tuple[str, str], int] = {}
    for lineno, row in read_csv_rows(p, COLUMNS, "architecture table"):
        arch = _parse_row(p, lineno, row)
        for key in ("architecture", "model_type", "gguf_architecture"):
            value = getattr(arch, key)
            if value and (key, value) in seen:
                raise CpiError(f"architecture table {p}, line {lineno}: {key} {value!r} already on line "
                               f"{seen[(key, value)]}")
            seen[(key, value)] = lineno
        rows[arch.architecture] = arch
    return rows


@functools.lru_cache(maxsize=1)
def _shipped() -> dict[str, Architecture]:
    return load_architectures()


def architectures() -> tuple[Architecture, ...]:
    """Every row of the shipped table, in file order."""
    return tuple(_shipped().values())


def lookup(key: Any) -> Architecture | None:
    """The row for ``key``: an HF class name, a ``model_type``, a GGUF architecture name, or an HF config
    (its ``architectures[0]``, else its ``model_type``). ``None`` when the table has no such row."""
    rows = _shipped()
    if not isinstance(key, str):
        declared = list(getattr(key, "architectures", None) or [])
        if declared and declared[0] in rows:
            return rows[declared[0]]
        key = getattr(key, "model_type", None) or ""
    if key in rows:
        return rows[key]
    for arch in rows.values():
        if key in (arch.model_type, arch.gguf_architecture) and key:
            return arch
    return None


def architecture(key: Any) -> Architecture:
    """Like :func:`lookup`, but CpiError naming ``key`` and the table when there is no row."""
    arch = lookup(key)
    if arch is None:
        shown = key if isinstance(key, str) else (list(getattr(key, "architectures", None) or [])
                                                  or getattr(key, "model_type", "?"))
        raise CpiError(f"architecture {shown!r} has no row in {ARCHITECTURES_FILE.name} "
                       f"(known: {', '.join(a.architecture for a in architectures())})")
    return arch


def probe_verified_architectures() -> tuple[str, ...]:
    """HF class names on which the probe's decomposition is verified by the tests (table order)."""
    return tuple(a.architecture for a in architectures() if a.probe_verified)


def qk_parameter_names() -> tuple[str, ...]:
    """Every leaf module name that holds query/key weights in some listed architecture (sorted)."""
    return tuple(sorted({name for a in architectures() for name in a.qk_params}))
