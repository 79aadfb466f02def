"""Content fingerprints: resume and skip decisions are keyed by what is in the files, never by names.

- :func:`file_sha256`: SHA-256 of a file's bytes (cached per process by path, size, inode and
  modification time, so a trajectory's files are read once per command).
- :func:`checkpoint_fingerprint`: SHA-256 over a model folder's weights, model config and
  tokenizer files (names and contents; optimizer, scheduler and RNG states are left out, so
  pruning them does not change it). A LoRA adapter folder includes its local base model's
  fingerprint. Two folders with the same fingerprint give the same numbers.
- :func:`source_fingerprint`: the SHA-256 of a local data file, or ``None`` for a hub name.

Hashing reads every weight byte (about 1 GB/s: some seconds for a 7B checkpoint), which is
small next to evaluating or probing that checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

_CACHE: dict[tuple[str, int, int, int], str] = {}

#: Files of a model folder that decide its outputs.
MODEL_FILE_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
MODEL_FILE_NAMES = ("config.json", "adapter_config.json", "generation_config.json", "tokenizer.json",
                    "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json", "vocab.json",
                    "merges.txt", "added_tokens.json", "chat_template.jinja", "chat_template.json",
                    "model.safetensors.index.json", "pytorch_model.bin.index.json")
_NOT_WEIGHTS = ("optimizer", "scheduler", "scaler", "rng_state", "training_args")


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of the file's bytes."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_ino, st.st_mtime_ns)
    if key not in _CACHE:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                h.update(block)
        _CACHE[key] = h.hexdigest()
    return _CACHE[key]


def _model_files(folder: Path) -> list[Path]:
    out = []
    for p in sorted(folder.iterdir()):
        if not p.is_file():
            continue
        if p.name in MODEL_FILE_NAMES:
            out.append(p)
        elif p.suffix in MODEL_FILE_SUFFIXES and not p.name.startswith(_NOT_WEIGHTS):
            out.append(p)
    return out


def checkpoint_fingerprint(folder: str | Path, _seen: frozenset[str] = frozenset()) -> str:
    """Hex SHA-256 (first 16 digits) of a model folder's weights, config and tokenizer (see module doc)."""
    folder = Path(folder)
    h = hashlib.sha256()
    for p in _model_files(folder):
        h.update(f"{p.name}\0{file_sha256(p)}\n".encode())
    adapter = folder / "adapter_config.json"
    if adapter.is_file():
        try:
            base = json.loads(adapter.read_text()).get("base_model_name_or_path") or ""
        except (OSError, ValueError):
            base = ""
        base_dir = Path(base) if os.path.isabs(base) else folder / base
        key = str(base_dir.resolve()) if base else ""
        if base and base_dir.is_dir() and key not in _seen:
            h.update(f"base\0{checkpoint_fingerprint(base_dir, _seen | {key})}\n".encode())
        else:
            h.update(f"base\0{base}\n".encode())
    return h.hexdigest()[:16]


def source_fingerprint(source: str | Path | None) -> str | None:
    """SHA-256 (first 16 digits) of a local file, of a folder's files, or ``None`` (hub name / nothing)."""
    if source is None or str(source) == "":
        return None
    p = Path(source)
    if p.is_file():
        return file_sha256(p)[:16]
    if p.is_dir():
        h = hashlib.sha256()
        for f in sorted(q for q in p.rglob("*") if q.is_file()):
            h.update(f"{f.relative_to(p)}\0{file_sha256(f)}\n".encode())
        return h.hexdigest()[:16]
    return None


# ---------------------------------------------------------------------------
# completion markers: the unit of resumption of `cpi evaluate` and `cpi probe`


def read_marker(rows: Path, marker: Path) -> dict | None:
    """The JSON completion marker written after ``rows``; None if either is missing or unreadable."""
    if not (rows.is_file() and marker.is_file()):
        return None
    try:
        meta = json.loads(marker.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return meta if isinstance(meta, dict) else None


def marker_differences(meta: dict, fingerprint: str, weights: str) -> list[str]:
    """What differs between a marker and this run: the checkpoint's weights, the run fingerprint, or both."""
    differs = []
    if meta.get("weights") != weights:
        differs.append(f"checkpoint weights (stored {meta.get('weights')}, now {weights})")
    if meta.get("fingerprint") != fingerprint:
        differs.append(f"settings or dataset contents (fingerprint {meta.get('fingerprint')} != {fingerprint})")
    return differs
