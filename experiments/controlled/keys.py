"""Content keys: every stage folder of the controlled experiment is named by a hash of what determines its content."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Optional, Sequence

from cpi.config import Config
from cpi.errors import CpiError
from cpi.fingerprint import checkpoint_fingerprint


def content_key(*parts: Any) -> str:
    """A 12-hex-digit SHA-256 of ``parts`` (JSON; configs by :meth:`~cpi.config.Config.content_dict`:
    a field in the class's ``ADDED_LATER`` at its earlier value is left out, so folders made before
    the field existed keep their names)."""
    h = hashlib.sha256()
    for p in parts:
        p = p.content_dict() if isinstance(p, Config) else p
        h.update(json.dumps(p, sort_keys=True, default=str).encode())
        h.update(b"\x00")
    return h.hexdigest()[:12]


def dtype_parts(dtype: str, batch_size: Optional[int] = None) -> tuple[Any, ...]:
    """The resolved precision as parts of a stage's :func:`content_key`: none for ``float32`` (the
    precision every stage had before ``ControlledConfig.dtype`` existed: its folders keep their names, the
    rule of ``ADDED_LATER``), ``{"dtype": name}`` otherwise (a bf16 stage gets its own folder), followed by
    ``{"batch_size": n}`` when a ``batch_size`` is given (in half precision the batch changes the numbers:
    padding changes the rounding; in float32 it does not, so it stays out of the key there)."""
    if dtype == "float32":
        return ()
    return ({"dtype": dtype},) + (({"batch_size": batch_size},) if batch_size is not None else ())


def model_fingerprint(folder: str | Path) -> str:
    """The checkpoint's content fingerprint (:func:`cpi.fingerprint.checkpoint_fingerprint`: weights,
    config and tokenizer files), refusing a folder with no config or weights to fingerprint."""
    folder = Path(folder).resolve()
    model_files = [p for p in folder.iterdir()
                   if p.is_file() and (p.suffix in (".safetensors", ".bin") or p.name in ("config.json",
                                                                                         "adapter_config.json"))]
    if not model_files:
        raise CpiError(f"model {folder}: no config.json or weight files to fingerprint")
    return checkpoint_fingerprint(folder)


def items_key(items: Sequence[Any]) -> str:
    """The content key of a list of conflict items (every field that changes how they are scored)."""
    return content_key([[it.dataset, it.id, it.version, it.context, it.question, it.context_answer,
                         it.parametric_answer] for it in items])


def safe_name(text: str) -> str:
    """A folder-name-safe short form of a model name or path."""
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in Path(text).name or text)[:40]


__all__ = ["content_key", "dtype_parts", "items_key", "model_fingerprint", "safe_name"]
