"""The probe over a finetuning trajectory: one checkpoint at a time, resumable.

:func:`probe_trajectory` loads each checkpoint (LoRA merged), probes the
knowledge-conflict items, aggregates over items (mean/std/n per dataset ×
category, plus ``category="ALL"``) and writes

* ``OUT/parts/<checkpoint>.csv`` + ``.json`` — that checkpoint's rows, atomically, as soon
  as it is done (the unit of resumption), then a marker holding the run fingerprint
  (settings + item contents) and the checkpoint's weights fingerprint;
* ``OUT/probe.csv`` — all finished checkpoints so far, rewritten atomically
  after each one (tidy: checkpoint step × dataset × category × component ×
  layer × head × span × metric; see :func:`mechinterp.probe.arrays_to_table`);
* ``OUT/config.json`` — the :class:`ProbeConfig`, version, git hash and the
  weights mode (``raw_hf`` / ``compatibility_mode``);
* ``OUT/targets/<checkpoint>.csv`` — per item, which tokens the logit difference compares
  (the answers' shared prefix and first differing tokens) or why the item was dropped
  (:func:`mechinterp.probe.targets_table`);
* optionally ``OUT/items/<checkpoint>.csv`` — the per-item table.

A rerun skips a checkpoint only when its marker matches both fingerprints (said
at WARNING level); a part made from other weights, settings or item contents is
refused with a one-line error naming what differs (nothing is overwritten or
reused). ``config.json`` is written only once a checkpoint is done, so a run that
fails before computing anything leaves nothing behind. The folder is locked
(:class:`cpi.lock.FolderLock`) while the run writes. The model of one checkpoint
is freed before the next is loaded.
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


def _run_fingerprint(config: ProbeConfig, items: Sequence[Any]) -> str:
    """Hash of the settings that change a checkpoint's rows and of every item's contents."""
    import hashlib

    h = hashlib.sha256()
    spec = {k: getattr(config, k) for k in _RESUME_KEYS if k != "dataset"}
    if config.tokenizer:
        from cpi.fingerprint import source_fingerprint

        spec["tokenizer"] = source_fingerprint(config.tokenizer) or config.tokenizer
    h.update(json.dumps(spec, sort_keys=True, default=str).encode())
    for it in items:
        rec = it.to_record() if hasattr(it, "to_record") else dataclasses.asdict(it)
        h.update(json.dumps(rec, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def _check_resume(out: Path, config: ProbeConfig) -> None:
    cfg_file = out / "config.json"
    if not cfg_file.is_file() or not any((out / "parts").glob("*.json")):
        return  # nothing was computed into this folder: nothing to mix with
    try:
        old = json.loads(cfg_file.read_text()).get("config", {})
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CpiError(f"{cfg_file}: unreadable ({exc}); use a fresh --out folder") from exc
    new = config.to_dict()
    diff = [k for k in _RESUME_KEYS if old.get(k) != new.get(k)]
    if diff:
        raise CpiError(f"{out}: already holds a probe run with different {', '.join(diff)} "
                       f"({', '.join(f'{k}={old.get(k)!r}' for k in diff)}); use a fresh --out folder")


def _part_done(parts_dir: Path, ck: Any, fp: str, weights: str) -> bool:
    from cpi.fingerprint import marker_differences, read_marker

    part, marker = parts_dir / _part_name(ck), parts_dir / f"{ck.name}.json"
    meta = read_marker(part, marker)
    if meta is None:
        return False
    differs = marker_differences(meta, fp, weights)
    if differs:
        raise CpiError(f"{marker}: the stored probe of checkpoint {ck.name} differs in {' and '.join(differs)}; "
                       "use a fresh --out folder")
    log.warning("checkpoint %s: skipped, already probed from the same weights (%s), settings and items (%s)",
                ck.name, weights, part)
    return True


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
    ``out_dir/probe.csv``). Resumable: finished checkpoints (same weights, settings and items)
    are not recomputed. Bad input raises :class:`CpiError` before anything is written.
    """
    import pandas as pd

    from cpi.fingerprint import checkpoint_fingerprint
    from cpi.io import atomic_write_json, atomic_write_table, check_out_dir, save_run
    from cpi.lock import FolderLock
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
    out = check_out_dir(out_dir)
    if isinstance(checkpoints, (list, tuple)) and checkpoints and all(isinstance(c, Checkpoint) for c in checkpoints):
        ckpts = list(checkpoints)
    else:
        ckpts = discover_checkpoints(checkpoints)
    if not ckpts:
        raise CpiError(f"no checkpoints found in {checkpoints}")
    item_list = load_items(items, config.max_items)
    fp = _run_fingerprint(config, item_list)
    weights = {c.name: checkpoint_fingerprint(c.path) for c in ckpts}
    weights_mode = "compatibility_mode" if config.compatibility_mode else "raw_hf"
    parts_dir = out / "parts"

    frames: list[pd.DataFrame] = []
    with FolderLock(out, "cpi probe"):
        _check_resume(out, config)
        for pos, ck in enumerate(progress(ckpts, desc="checkpoints", total=len(ckpts))):
            part = parts_dir / _part_name(ck)
            if _part_done(parts_dir, ck, fp, weights[ck.name]):
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
            atomic_write_json(parts_dir / f"{ck.name}.json", {"checkpoint": ck.name, "path": str(ck.path),
                                                              "step": step, "fingerprint": fp,
                                                              "weights": weights[ck.name], "n_rows": len(agg)})
            frames.append(agg)
            # config.json beside the first finished part, so that a resumed run can be checked
            save_run(out, config, tables={"probe": pd.concat(frames, ignore_index=True)}, weights=weights_mode,
                     fingerprint=fp)
        combined = pd.concat(frames, ignore_index=True).sort_values("step", kind="stable").reset_index(drop=True)
        save_run(out, config, tables={"probe": combined}, weights=weights_mode, fingerprint=fp,
                 checkpoints=[{"name": c.name, "path": str(c.path), "step": c.step, "weights": weights[c.name]}
                              for c in ckpts])
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
