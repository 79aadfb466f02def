"""The probe over a finetuning trajectory: one checkpoint at a time, resumable.

:func:`probe_trajectory` loads each checkpoint (LoRA merged), probes the
knowledge-conflict items, aggregates over items (mean/std/n per dataset ×
category, plus ``category="ALL"``) and writes

* ``OUT/parts/<checkpoint>.csv`` — that checkpoint's rows, atomically, as soon
  as it is done (the unit of resumption);
* ``OUT/probe.csv`` — all finished checkpoints so far, rewritten atomically
  after each one (tidy: checkpoint step × dataset × category × component ×
  layer × head × span × metric; see :func:`mechinterp.probe.arrays_to_table`);
* ``OUT/config.json`` — the :class:`ProbeConfig`, version, git hash and the
  weights mode (``raw_hf`` / ``compatibility_mode``);
* ``OUT/targets/<checkpoint>.csv`` — per item, which tokens the logit difference compares
  (the answers' shared prefix and first differing tokens) or why the item was dropped
  (:func:`mechinterp.probe.targets_table`);
* optionally ``OUT/items/<checkpoint>.csv`` — the per-item table.

A rerun with the same config skips checkpoints whose part file exists; a
rerun into a folder written with a *different* config is refused (nothing is
overwritten). The model of one checkpoint is freed before the next is loaded.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence

from cpi.config import Config
from cpi.errors import ConfigError, CpiError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

log = logging.getLogger(__name__)

#: Config fields that must match for a rerun to resume into an existing folder.
_RESUME_KEYS = ("dataset", "template", "max_items", "max_length", "compatibility_mode", "dtype")


@dataclasses.dataclass(frozen=True)
class ProbeConfig(Config):
    """What ``cpi probe`` runs: which checkpoints, which items, how."""

    checkpoints: str = ""
    dataset: str = "CF_World_Facts"
    template: str = "alpaca"
    max_items: Optional[int] = None
    max_length: Optional[int] = None
    batch_size: int = 8
    device: Optional[str] = None
    dtype: Optional[str] = None
    tokenizer: Optional[str] = None
    compatibility_mode: bool = False
    per_item: bool = False

    def validate(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"field 'batch_size': must be >= 1, got {self.batch_size}")
        if self.max_items is not None and self.max_items < 1:
            raise ConfigError(f"field 'max_items': must be >= 1, got {self.max_items}")
        if self.max_length is not None and self.max_length < 2:
            raise ConfigError(f"field 'max_length': must be >= 2, got {self.max_length}")
        from fullscale.prompts import TEMPLATES

        if self.template not in TEMPLATES:
            raise ConfigError(f"field 'template': {self.template!r} is not one of {', '.join(TEMPLATES)}")


def load_items(dataset: str | Path | Sequence[Any], max_items: int | None = None) -> list[Any]:
    """Conflict items from a shipped name / JSONL path (or a ready list), first ``max_items``."""
    if isinstance(dataset, (str, Path)):
        from fullscale.conflicts import load_conflicts

        items = list(load_conflicts(dataset))
    else:
        items = list(dataset)
    if not items:
        raise CpiError(f"dataset {dataset if isinstance(dataset, (str, Path)) else '<items>'}: no items")
    return items[:max_items] if max_items else items


def _part_name(ckpt: Any) -> str:
    return f"{ckpt.name}.csv"


def _check_resume(out: Path, config: ProbeConfig) -> None:
    cfg_file = out / "config.json"
    if not cfg_file.is_file():
        return
    try:
        old = json.loads(cfg_file.read_text()).get("config", {})
    except (OSError, json.JSONDecodeError) as exc:
        raise CpiError(f"{cfg_file}: unreadable ({exc}); use a fresh --out folder") from exc
    new = config.to_dict()
    diff = [k for k in _RESUME_KEYS if old.get(k) != new.get(k)]
    if diff:
        raise CpiError(f"{out}: already holds a probe run with different {', '.join(diff)} "
                       f"({', '.join(f'{k}={old.get(k)!r}' for k in diff)}); use a fresh --out folder")


def probe_trajectory(
    checkpoints: Any,
    items: Any,
    out_dir: str | Path,
    template: str = "alpaca",
    batch_size: int = 8,
    max_length: int | None = None,
    device: str | None = None,
    dtype: str | None = None,
    tokenizer: str | Path | None = None,
    compatibility_mode: bool = False,
    per_item: bool = False,
    config: ProbeConfig | None = None,
) -> "pd.DataFrame":
    """Probe every checkpoint of ``checkpoints`` (a spec for
    :func:`fullscale.checkpoints.discover_checkpoints` or a list of ``Checkpoint``) on ``items``
    (ConflictItems, or a dataset name/path); return the combined aggregated table (also in
    ``out_dir/probe.csv``). Resumable: finished checkpoints are not recomputed.
    """
    import pandas as pd

    from cpi.io import atomic_write_table, save_run
    from cpi.progress import progress
    from fullscale.checkpoints import Checkpoint, discover_checkpoints
    from mechinterp.load import load_bridge
    from mechinterp.probe import aggregate, probe, targets_table

    if config is None:
        config = ProbeConfig(
            checkpoints=checkpoints if isinstance(checkpoints, str) else ",".join(
                str(getattr(c, "path", c)) for c in (checkpoints if isinstance(checkpoints, (list, tuple)) else [checkpoints])),
            dataset=str(items) if isinstance(items, (str, Path)) else "<items>",
            template=template, max_length=max_length, batch_size=batch_size, device=device, dtype=dtype,
            tokenizer=None if tokenizer is None else str(tokenizer), compatibility_mode=compatibility_mode,
            per_item=per_item,
        )
    if isinstance(checkpoints, (list, tuple)) and checkpoints and all(isinstance(c, Checkpoint) for c in checkpoints):
        ckpts = list(checkpoints)
    else:
        ckpts = discover_checkpoints(checkpoints)
    if not ckpts:
        raise CpiError(f"no checkpoints found in {checkpoints}")
    item_list = load_items(items, config.max_items)
    out = Path(out_dir)
    _check_resume(out, config)
    parts_dir = out / "parts"
    parts_dir.mkdir(parents=True, exist_ok=True)
    # config.json first (so a resumed run can be checked), rewritten at the end
    save_run(out, config, weights="compatibility_mode" if config.compatibility_mode else "raw_hf")

    frames: list[pd.DataFrame] = []
    for pos, ck in enumerate(progress(ckpts, desc="checkpoints", total=len(ckpts))):
        part = parts_dir / _part_name(ck)
        if part.is_file():
            log.info("checkpoint %s: already probed (%s), skipping", ck.name, part)
            frames.append(pd.read_csv(part, keep_default_na=False, na_values=[""]))
            continue
        bridge, tok = load_bridge(ck, device=config.device, dtype=config.dtype, tokenizer=config.tokenizer,
                                  compatibility_mode=config.compatibility_mode)
        try:
            table = probe(bridge, tok, item_list, template=config.template, batch_size=config.batch_size,
                          max_length=config.max_length)
        finally:
            del bridge
            gc.collect()
        step = ck.step if ck.step is not None else pos
        atomic_write_table(targets_table(item_list, tok, template=config.template, max_length=config.max_length),
                           out / "targets" / _part_name(ck))
        if config.per_item:
            atomic_write_table(table.assign(checkpoint=ck.name, step=step), out / "items" / _part_name(ck))
        agg = aggregate(table)
        agg.insert(0, "checkpoint", ck.name)
        agg.insert(1, "step", step)
        atomic_write_table(agg, part)
        frames.append(agg)
        atomic_write_table(pd.concat(frames, ignore_index=True), out / "probe.csv")
    combined = pd.concat(frames, ignore_index=True).sort_values("step", kind="stable").reset_index(drop=True)
    save_run(out, config, tables={"probe": combined},
             weights="compatibility_mode" if config.compatibility_mode else "raw_hf",
             checkpoints=[c.name for c in ckpts])
    return combined


def read_probe_table(path: str | Path) -> "pd.DataFrame":
    """Read ``probe.csv`` (a file or the run folder containing it)."""
    import pandas as pd

    p = Path(path)
    if p.is_dir():
        p = p / "probe.csv"
    if not p.is_file():
        raise CpiError(f"{p}: probe table not found")
    return pd.read_csv(p, keep_default_na=False, na_values=[""])
