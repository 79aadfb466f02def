"""One precision setting for every runner: ``dtype: auto | float32 | bfloat16`` (and ``float16`` on a GPU).

:func:`resolve_dtype` turns the setting into a ``torch.dtype`` for a device:

- ``auto``: ``bfloat16`` where the hardware multiplies bf16 matrices natively — a CPU with AMX-BF16 or
  AVX-512-BF16 (:func:`cpu_has_bf16`), or a CUDA device that supports bf16 — else ``float32``;
- ``float32``: always possible;
- ``bfloat16``: refused where unsupported (a CPU without those instructions would emulate it, slower
  than float32; a GPU without bf16);
- ``float16``: GPU only (CPU float16 matmuls are emulated and its training needs a loss scaler).

A refusal is a one-line :class:`cpi.errors.ConfigError` naming the field (exit code 2 in the CLI).

The CPU check reads the instruction-set flags of ``/proc/cpuinfo``; ``CPI_CPU_BF16=0`` (or ``1``) forces
the answer, so the float32 fallback of ``auto`` can be tested on any machine (and nothing depends on
AMX being present).

Only the standard library is imported at module level; torch comes in inside the functions.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any, Iterable

from cpi.errors import ConfigError

__all__ = ["BF16_CPU_FLAGS", "DTYPE_NAMES", "canonical_dtype", "cpu_has_bf16", "dtype_name", "resolve_dtype"]

#: /proc/cpuinfo flags of native bf16 matrix arithmetic on x86 CPUs
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")
#: the values of a ``dtype`` setting
DTYPE_NAMES = ("auto", "float32", "bfloat16", "float16")
#: environment variable that forces :func:`cpu_has_bf16` (``0``/``1``)
FORCE_ENV = "CPI_CPU_BF16"
_ALIASES = {"fp32": "float32", "float": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16"}


@functools.lru_cache(maxsize=1)
def _cpuinfo_flags() -> frozenset[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def cpu_has_bf16(flags: Iterable[str] | None = None) -> bool:
    """Whether this CPU multiplies bf16 natively (AMX-BF16 or AVX-512-BF16).

    ``flags``: the CPU's instruction-set flags (default: read from ``/proc/cpuinfo``); the environment
    variable ``CPI_CPU_BF16=0|1`` overrides both (to test the fallback on any machine).
    """
    forced = os.environ.get(FORCE_ENV, "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    if forced:
        raise ConfigError(f"environment variable {FORCE_ENV}={forced!r}: use 0 or 1")
    have = set(_cpuinfo_flags() if flags is None else flags)
    return any(f in have for f in BF16_CPU_FLAGS)


def canonical_dtype(name: Any, field: str = "dtype") -> str:
    """The setting's canonical name (``auto``, ``float32``, ``bfloat16``, ``float16``; ``None`` is ``auto``;
    ``fp32``/``bf16``/``fp16`` and ``torch.dtype`` accepted) without asking the hardware: what a config's
    ``validate`` checks. ConfigError naming ``field`` for anything else."""
    text = str(name).replace("torch.", "").strip().lower() if name is not None else "auto"
    text = _ALIASES.get(text, text or "auto")
    if text not in DTYPE_NAMES:
        raise ConfigError(f"field '{field}': unknown dtype {name!r} (choose {', '.join(DTYPE_NAMES[:3])})")
    return text


def resolve_dtype(name: Any = "auto", device: Any = "cpu", field: str = "dtype") -> "Any":
    """The ``torch.dtype`` that ``name`` (``auto``/``float32``/``bfloat16``/``float16``, or a ``torch.dtype``;
    ``fp32``/``bf16``/``fp16`` accepted) means on ``device`` (``cpu``, ``cuda``, ``cuda:1``, a
    ``torch.device``). ConfigError naming ``field`` if the device cannot run it natively."""
    import torch

    kind = torch.device(device).type if device is not None else "cpu"
    name = canonical_dtype(name, field)
    if kind == "cuda":
        bf16_ok = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    elif kind == "cpu":
        bf16_ok = cpu_has_bf16()
    else:  # mps / xpu: trust the backend with bf16 only when asked for it explicitly
        bf16_ok = False
    if name == "auto":
        return torch.bfloat16 if bf16_ok else torch.float32
    if name == "float32":
        return torch.float32
    if name == "float16":
        if kind == "cpu":
            raise ConfigError(f"field '{field}': float16 is not supported on the CPU (use bfloat16 or float32)")
        return torch.float16
    if not bf16_ok and kind in ("cpu", "cuda"):
        what = "this CPU has neither AMX-BF16 nor AVX-512-BF16" if kind == "cpu" else "this GPU has no bf16"
        raise ConfigError(f"field '{field}': bfloat16 is not supported here ({what}); use float32 or auto")
    return torch.bfloat16


def dtype_name(dtype: Any) -> str:
    """``torch.bfloat16`` -> ``"bfloat16"`` (the name recorded in config.json and content keys)."""
    return str(dtype).replace("torch.", "")
