"""The finetuning run folder, writer and reader side: checkpoint names, completeness, publishing, resume points.

A run folder (``output_dir`` of :class:`fullscale.finetune_config.FinetuneConfig`) holds

- ``checkpoint-<step>/``: a complete Trainer checkpoint (:func:`is_complete_checkpoint`), published by a
  rename from a ``.tmp-checkpoint-<step>/`` staging folder (:func:`publish_checkpoint`) once every file is
  written, so a folder under its final name is never partial;
- ``interrupted-checkpoint-<step>/``: an off-cadence resume point saved on SIGINT/SIGTERM (the trajectory
  of ``checkpoint-*`` keeps its save schedule), deleted once a later checkpoint exists;
- ``finetune_config.json`` (:data:`CONFIG_FILE`): the config, resolved dtype, input fingerprints and every
  resumed segment (:func:`read_record`); ``train_log.csv`` (:func:`read_train_log`).

The one checkpoint-name rule is :func:`checkpoint_step`; :func:`finished` says whether a folder holds a
complete checkpoint at a given step or later (what a stage that finetunes checks before starting).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cpi.errors import CpiError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

log = logging.getLogger("fullscale.finetune")  # the run's log lines keep the runner's logger name

__all__ = ["CHECKPOINT_PREFIX", "CONFIG_FILE", "INTERRUPTED_PREFIX", "STAGING_PREFIX", "checkpoint_dir_name", "checkpoint_step", "finished",
           "is_complete_checkpoint", "last_complete_checkpoint", "list_checkpoints", "list_interrupted",
           "prune_optimizer_states", "publish_checkpoint", "read_record", "read_train_log",
           "remove_stale_staging", "remove_superseded_interrupts", "resume_point", "segment_start"]

CHECKPOINT_PREFIX = "checkpoint"
STAGING_PREFIX = ".tmp-checkpoint"
INTERRUPTED_PREFIX = "interrupted-checkpoint"
_INTERRUPTED_RE = re.compile(r"^interrupted-checkpoint-(\d+)$")
CONFIG_FILE = "finetune_config.json"
_CKPT_RE = re.compile(rf"^{CHECKPOINT_PREFIX}-(\d+)$")


def checkpoint_dir_name(step: int) -> str:
    """The folder name of the checkpoint at ``step``: ``checkpoint-<step>`` (the one naming rule)."""
    return f"{CHECKPOINT_PREFIX}-{int(step)}"


def checkpoint_step(name: str) -> int | None:
    """The step of a :func:`checkpoint_dir_name` folder name (None for any other name)."""
    m = _CKPT_RE.match(name)
    return int(m.group(1)) if m else None


def finished(output_dir: str | Path, steps: int) -> bool:
    """Whether ``output_dir`` holds a complete ``checkpoint-<step>/`` at ``steps`` or later."""
    done = [step for step, path in list_checkpoints(output_dir) if is_complete_checkpoint(path)]
    return bool(done) and done[-1] >= steps


def list_checkpoints(output_dir: str | Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of every ``checkpoint-<step>/`` folder, sorted by step."""
    out = Path(output_dir)
    if not out.is_dir():
        return []
    found = []
    for p in out.iterdir():
        m = _CKPT_RE.match(p.name)
        if m and p.is_dir():
            found.append((int(m.group(1)), p))
    return sorted(found)


def is_complete_checkpoint(path: str | Path) -> bool:
    """True if ``path`` holds a trainer state and model (or adapter) weights."""
    p = Path(path)
    if not (p / "trainer_state.json").is_file():
        return False
    weights = list(p.glob("*.safetensors")) + list(p.glob("pytorch_model*.bin")) + list(p.glob("adapter_model.*"))
    sharded_fsdp = any(p.glob("pytorch_model_fsdp*"))
    return bool(weights) or sharded_fsdp


def last_complete_checkpoint(output_dir: str | Path) -> Path | None:
    """The highest-step complete checkpoint in ``output_dir`` (None if none)."""
    for step, path in reversed(list_checkpoints(output_dir)):
        if is_complete_checkpoint(path):
            return path
        log.warning("%s: incomplete checkpoint (no trainer_state.json or weights); skipped", path)
    return None


def list_interrupted(output_dir: str | Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of every ``interrupted-checkpoint-<step>/`` resume point, sorted by step."""
    out = Path(output_dir)
    if not out.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in out.iterdir() if p.is_dir() and (m := _INTERRUPTED_RE.match(p.name))]
    return sorted(found)


def resume_point(output_dir: str | Path) -> Path | None:
    """Where a rerun continues: the newest complete checkpoint, or a newer complete interrupt resume point."""
    last = last_complete_checkpoint(output_dir)
    last_step = int(_CKPT_RE.match(last.name).group(1)) if last is not None else -1
    for step, path in reversed(list_interrupted(output_dir)):
        if step > last_step and is_complete_checkpoint(path):
            return path
    return last


def remove_superseded_interrupts(output_dir: str | Path) -> list[Path]:
    """Delete interrupt resume points that a later checkpoint (or resume point) has replaced."""
    ckpts = [step for step, path in list_checkpoints(output_dir)]
    inter = list_interrupted(output_dir)
    newest = max(ckpts + [step for step, _ in inter], default=-1)
    removed = []
    for step, path in inter:
        if step < newest or (ckpts and step <= max(ckpts)):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def remove_stale_staging(output_dir: str | Path) -> list[Path]:
    """Delete ``.tmp-checkpoint-*`` folders left by a run killed while saving."""
    out = Path(output_dir)
    removed = []
    if out.is_dir():
        for p in out.iterdir():
            if p.name.startswith((STAGING_PREFIX, ".old-checkpoint")) and p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
    if removed:
        log.warning("removed %d incomplete checkpoint folder(s) left by an interrupted save: %s",
                    len(removed), ", ".join(p.name for p in removed))
    return removed


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def publish_checkpoint(staged: Path, final: Path) -> None:
    """Move a finished checkpoint folder into place with a rename (replacing an older one of the same step)."""
    old = None
    if final.exists():
        old = final.with_name(f".old-{final.name}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(staged, final)
    _fsync_dir(final.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


_OPTIMIZER_STATE = ("optimizer.pt", "optimizer.bin", "scheduler.pt", "scaler.pt")


def prune_optimizer_states(output_dir: str | Path, keep: str | Path) -> int:
    """Delete optimizer/scheduler/scaler states from every checkpoint but ``keep`` (the newest);
    model weights, tokenizer, RNG and trainer state stay. Returns the number of paths removed."""
    removed = 0
    for _, ck in list_checkpoints(output_dir):
        if ck.resolve() == Path(keep).resolve():
            continue
        for p in ck.iterdir():
            if p.name in _OPTIMIZER_STATE or (p.name.startswith("optimizer_") and p.is_dir()):
                shutil.rmtree(p) if p.is_dir() else p.unlink()
                removed += 1
    return removed


def read_record(out: Path) -> dict[str, Any] | None:
    """The run's ``finetune_config.json`` (None if absent or not a mapping; CpiError if unreadable)."""
    path = out / CONFIG_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CpiError(f"{path}: unreadable ({exc}); it records the run's segments: restore it or use another "
                       "output_dir") from exc
    return record if isinstance(record, dict) else None


def segment_start(checkpoint: Path | None) -> int:
    if checkpoint is None:
        return 0
    try:
        return int(json.loads((checkpoint / "trainer_state.json").read_text()).get("global_step", 0))
    except (OSError, ValueError):
        return 0


def read_train_log(output_dir: str | Path) -> "pd.DataFrame":
    """The run's ``train_log.csv`` (one row per logged step: ``step, loss, learning_rate, grad_norm, epoch``)."""
    import pandas as pd

    path = Path(output_dir) / "train_log.csv"
    if not path.is_file():
        raise CpiError(f"{path}: no training log (has the run started?)")
    return pd.read_csv(path)
