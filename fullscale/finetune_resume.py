"""When a finetuning run may continue in an existing folder: input checks, content fingerprints, segment differences.

A resumed run must use the same number-changing settings, resolved dtype and input contents as the
segment before it (:func:`resume_differences`); :func:`already_complete` says a folder needs no more steps.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from cpi.errors import CpiError
from fullscale.finetune_config import FinetuneConfig

__all__ = ["already_complete", "check_inputs", "input_fingerprints", "recorded_dtype", "resume_differences"]

#: Fields that may change between the segments of a resumed run: they change no number.
_FREE_FIELDS = frozenset({"output_dir", "logging_steps", "report_to", "dataloader_num_workers", "save_total_limit",
                          "keep_optimizer_states", "resume", "force_resume", "save_steps", "save_schedule",
                          "tracking"})
#: Fields that set the run's length: free to change only with a constant schedule.
_LENGTH_FIELDS = frozenset({"max_steps", "num_epochs"})


def input_fingerprints(config: FinetuneConfig) -> dict[str, Any]:
    """Content fingerprints of every input that changes the trained numbers (local files and folders;
    a hub name stands for itself): base model, tokenizer, data, filter scores, augmentation sets."""
    from cpi.fingerprint import checkpoint_fingerprint, source_fingerprint

    def one(source: str | None) -> str | None:
        if not source:
            return None
        if Path(source).is_dir() and not (Path(source) / "config.json").is_file() and \
                not (Path(source) / "adapter_config.json").is_file():
            return source_fingerprint(source)
        if Path(source).is_dir():
            return checkpoint_fingerprint(source)
        return source_fingerprint(source) or source

    def conflict(source: str) -> str | None:
        from fullscale.conflicts import SHIPPED_DATASETS, shipped_path

        return one(str(shipped_path(source)) if source in SHIPPED_DATASETS else source)

    fps: dict[str, Any] = {"base_model": one(config.base_model), "tokenizer": one(config.tokenizer),
                           "data": one(config.data), "filter_scores": one(config.filter_scores)}
    if config.augment_fraction > 0:
        exclude = list(config.augment_exclude) + (list(config.tracking.conflicts) if config.tracking else [])
        fps["augment_sources"] = {src: conflict(src) for src in config.augment_sources}
        fps["augment_exclude"] = {src: conflict(src) for src in exclude}
    return fps


def recorded_dtype(segment: dict[str, Any]) -> str:
    """The resolved dtype a recorded segment trained in: its ``dtype``, or for a record written before
    it existed, what its ``precision`` meant (``auto`` was float32 without a GPU)."""
    if segment.get("dtype"):
        return str(segment["dtype"])
    old = segment.get("config") or {}
    return {"bf16": "bfloat16", "fp16": "float16"}.get(old.get("precision"), "float32")


def resume_differences(previous: dict[str, Any], config: FinetuneConfig, inputs: dict[str, Any],
                       dtype: str | None = None) -> list[str]:
    """What differs between the last segment (``{"config", "inputs", "dtype"}``) and this one, in
    settings, the resolved dtype (``dtype``, default :func:`resolved_dtype` here) or input contents
    that change the trained numbers (see :data:`_FREE_FIELDS`)."""
    from fullscale.precision import dtype_name

    if dtype is None:
        from fullscale.finetune_model import resolved_dtype

        dtype = dtype_name(resolved_dtype(config))
    old, new = previous.get("config") or {}, config.to_dict()
    diffs = [k for k in sorted(set(old) & set(new)) if k not in _FREE_FIELDS and old[k] != new[k]]
    if old.get("lr_scheduler") == new["lr_scheduler"] == "constant":
        diffs = [k for k in diffs if k not in _LENGTH_FIELDS]
    details = [f"{k} ({old[k]!r} -> {new[k]!r})" for k in diffs]
    was, now = recorded_dtype(previous), dtype
    if was != now and "dtype" not in diffs:
        details.append(f"resolved dtype ({was!r} -> {now!r})")
    old_inputs = previous.get("inputs")
    if isinstance(old_inputs, dict):
        for name, fp in inputs.items():
            if name in old_inputs and old_inputs[name] != fp and name not in diffs:
                details.append(f"contents of {name}")
    return details


def check_inputs(config: FinetuneConfig) -> None:
    """One-line errors for inputs that cannot work, before anything is loaded or written."""
    from cpi.io import check_input_file

    for name in ("base_model", "tokenizer"):
        value = getattr(config, name)
        if not value:
            continue
        looks_local = value.startswith((".", "/", "~")) or os.sep in value.rstrip(os.sep) and value.count("/") != 1
        if looks_local and not Path(value).expanduser().exists():
            raise CpiError(f"{name} {value!r}: no such folder (give a model folder or a hub name 'org/name')")
        if Path(value).is_file():
            raise CpiError(f"{name} {value!r}: is a file; give the model folder that holds it")
    data = Path(config.data)
    if data.exists() and data.suffix != ".parquet":
        check_input_file(data, "data")
    if config.filter_scores:
        check_input_file(config.filter_scores, "filter_scores")


def already_complete(checkpoint: Path | None, config: FinetuneConfig, differences: list[str]) -> int | None:
    """The step a finished run reached if this config would train nothing more, else None."""
    if checkpoint is None:
        return None
    try:
        state = json.loads((checkpoint / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return None
    step, planned = int(state.get("global_step", 0)), int(state.get("max_steps", 0) or 0)
    if config.max_steps > 0:
        return step if step >= config.max_steps else None
    if planned and step >= planned and not any(d.startswith(("num_epochs", "max_steps")) for d in differences):
        return step
    return None
