"""The probe over a finetuning trajectory: one checkpoint at a time, resumable.

:func:`run_probe` (``ProbeConfig`` -> table; :func:`probe_trajectory` is its keyword form)
loads each checkpoint (a LoRA trajectory: its base once, adapters applied in place, see
:mod:`fullscale.adapters`), probes the
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
reused), or recomputed with ``overwrite``: the policy of ``cpi evaluate``
(:mod:`fullscale.resume`). ``config.json`` is written only once a checkpoint is done, so a run that
fails before computing anything leaves nothing behind. The folder is locked
(:class:`cpi.lock.FolderLock`) while the run writes. The model of one checkpoint
is freed before the next is loaded.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Optional, Sequence, Union

from cpi.config import check_at_least
from cpi.errors import ConfigError, CpiError
from fullscale.checkpoints import ModelSettings

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

log = logging.getLogger(__name__)

#: Config fields that must match for a rerun to resume into an existing folder.
_RESUME_KEYS = ("dataset", "template", "max_items", "max_length", "compatibility_mode", "dtype")


@dataclasses.dataclass(frozen=True)
class ItemSettings(ModelSettings):
    """Which conflict items a probe-style runner reads and how it batches them (the fields
    :class:`ProbeConfig` and :class:`mechinterp.intervene.InterveneConfig` share)."""

    dataset: str = "CF_World_Facts"
    "shipped conflict set name (e.g. CF_World_Facts) or a JSONL file"
    max_items: Optional[int] = None
    "use only the first N items"
    max_length: Optional[int] = None
    "cut contexts from the left to fit N tokens"
    batch_size: int = 8
    "items per forward pass"

    def validate(self) -> None:
        super().validate()
        if self.batch_size == "auto" and not isinstance(self, ProbeConfig):
            raise ConfigError(f"field 'batch_size': auto is not available for {type(self).__name__}; give a number")
        if self.batch_size != "auto":  # ProbeConfig also takes "auto"
            check_at_least(self, batch_size=1)
        check_at_least(self, max_items=1, max_length=2)


@dataclasses.dataclass(frozen=True)
class ProbeConfig(ItemSettings):
    """What ``cpi probe`` runs: which checkpoints, which items, how (the CLI flags are these fields)."""

    checkpoints: str = ""
    "trainer output folder (checkpoint-<step>/), a model folder, or a comma-separated list"
    batch_size: Union[int, Literal["auto"]] = 8
    "items per forward pass, or auto: the largest batch whose memory estimate fits the device"
    compatibility_mode: bool = False
    "use TransformerLens enable_compatibility_mode() weights (off: raw HF weights)"
    per_item: bool = False
    "also write items/<checkpoint>.csv (per-item rows)"
    out: str = "probe"
    "output folder (resumable)"
    overwrite: bool = False
    "recompute checkpoints whose stored parts were made from other weights, settings or items"
    figures: bool = True
    "draw the figures into <out>/figures/ (run_probe only; probe_trajectory never draws)"



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


def _fingerprint_dtype(resolved: str) -> str | None:
    """The dtype as the run fingerprint holds it: nothing (``None``, the value the fingerprint of a
    float32 run held before ``auto`` could mean bf16) for float32, so those parts still resume; the
    resolved name otherwise, so a bf16 part never resumes into a float32 folder, nor the other way round."""
    return None if resolved == "float32" else resolved


def _effective_dtype(stored: dict[str, Any]) -> str:
    """The resolved dtype a stored probe ``config.json`` was computed in: recorded since ``auto`` could mean
    bf16; before that, the setting (``None``/``auto``: float32, what the CPU ran)."""
    from fullscale.precision import canonical_dtype

    recorded = stored.get("meta", {}).get("dtype")
    if recorded is not None:
        return str(recorded)
    name = canonical_dtype(stored.get("config", {}).get("dtype"))
    return "float32" if name == "auto" else name


def _run_fingerprint(config: ProbeConfig, items: Sequence[Any], resolved_dtype: str | None = None) -> str:
    """Hash of the settings that change a checkpoint's rows and of every item's contents
    (``resolved_dtype``: the dtype the run computes in, default: resolved from ``config`` here)."""
    import hashlib

    if resolved_dtype is None:
        resolved_dtype = _resolved_dtype(config)
    h = hashlib.sha256()
    spec = {k: getattr(config, k) for k in _RESUME_KEYS if k != "dataset"}
    spec["dtype"] = _fingerprint_dtype(resolved_dtype)
    if config.tokenizer:
        from cpi.fingerprint import source_fingerprint

        spec["tokenizer"] = source_fingerprint(config.tokenizer) or config.tokenizer
    h.update(json.dumps(spec, sort_keys=True, default=str).encode())
    for it in items:
        rec = it.to_record() if hasattr(it, "to_record") else dataclasses.asdict(it)
        h.update(json.dumps(rec, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def _resolved_dtype(config: ProbeConfig) -> str:
    """The name of the dtype ``config`` computes in on this machine (``auto``: bf16 where native)."""
    from fullscale.checkpoints import resolve_device_dtype
    from fullscale.precision import dtype_name

    return dtype_name(resolve_device_dtype(config.device, config.dtype)[1])


def _check_resume(out: Path, config: ProbeConfig, resolved_dtype: str) -> None:
    cfg_file = out / "config.json"
    if not cfg_file.is_file() or not any((out / "parts").glob("*.json")):
        return  # nothing was computed into this folder: nothing to mix with
    try:
        stored = json.loads(cfg_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CpiError(f"{cfg_file}: unreadable ({exc}); use a fresh --out folder") from exc
    # the dtype compared is the resolved one (auto and float32 on a CPU without bf16 are the same run)
    old = {**stored.get("config", {}), "dtype": _effective_dtype(stored)}
    new = {**config.to_dict(), "dtype": resolved_dtype}
    diff = [k for k in _RESUME_KEYS if old.get(k) != new.get(k)]
    if diff:
        raise CpiError(f"{out}: already holds a probe run with different {', '.join(diff)} "
                       f"({', '.join(f'{k}={old.get(k)!r}' for k in diff)}); use a fresh --out folder")


#: ``probe_trajectory``'s keyword arguments that a ``config`` also sets, with their defaults.
_KWARG_DEFAULTS = {"template": "alpaca", "batch_size": 8, "max_length": None, "device": None, "dtype": None,
                   "tokenizer": None, "compatibility_mode": False, "per_item": False}


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
    """Probe every checkpoint of ``checkpoints`` on ``items`` into ``out_dir``; the keyword form of
    :func:`run_probe`, kept for existing callers (it draws no figures).

    ``checkpoints``: a spec for :func:`fullscale.checkpoints.discover_checkpoints` or a list of
    ``Checkpoint``; ``items``: ConflictItems, or a dataset name/path. Returns the combined
    aggregated table (also in ``out_dir/probe.csv``). With ``config``, the settings come from it:
    passing any of the keyword settings as well (``template``, ``batch_size``...) raises
    :class:`ConfigError` rather than ignoring one of the two, and so does a ``config.out`` other
    than ``out_dir``.
    """
    given = {"template": template, "batch_size": batch_size, "max_length": max_length, "device": device,
             "dtype": dtype, "tokenizer": tokenizer, "compatibility_mode": compatibility_mode, "per_item": per_item}
    if config is None:
        config = ProbeConfig(
            checkpoints=checkpoints if isinstance(checkpoints, str) else ",".join(
                str(getattr(c, "path", c)) for c in (checkpoints if isinstance(checkpoints, (list, tuple)) else [checkpoints])),
            dataset=str(items) if isinstance(items, (str, Path)) else "<items>",
            template=template, max_length=max_length, batch_size=batch_size, device=device, dtype=dtype,
            tokenizer=None if tokenizer is None else str(tokenizer), compatibility_mode=compatibility_mode,
            per_item=per_item, out=str(out_dir), figures=False,
        )
    else:
        clash = [k for k, v in given.items() if v != _KWARG_DEFAULTS[k]]
        if clash:
            raise ConfigError(f"probe_trajectory: {', '.join(clash)} given both as keyword and through config=; "
                              "set them in the config only")
        if config.out not in (ProbeConfig.out, str(out_dir)):
            raise ConfigError(f"probe_trajectory: out_dir {str(out_dir)!r} differs from config.out {config.out!r}")
        config = config.replace(out=str(out_dir), figures=False)
    return _run(config, checkpoints, items)


def run_probe(config: ProbeConfig) -> "pd.DataFrame":
    """Probe every checkpoint of ``config.checkpoints`` on ``config.dataset`` into ``config.out``
    (``cpi probe``); returns the combined aggregated table (also ``<out>/probe.csv``), and draws
    the figures into ``<out>/figures/`` when ``config.figures``.

    Resumable: finished checkpoints (same weights, settings and items) are not recomputed. Bad
    input raises :class:`CpiError` before anything is written.
    """
    table = _run(config, config.checkpoints, config.dataset)
    if config.figures:
        from mechinterp.plots import draw_probe_figures

        draw_probe_figures(table, Path(config.out) / "figures")
    return table


def _run(config: ProbeConfig, checkpoints: Any, items: Any) -> "pd.DataFrame":
    import pandas as pd

    from cpi.fingerprint import checkpoint_fingerprint
    from cpi.io import atomic_write_table, check_out_dir, save_run
    from cpi.lock import FolderLock
    from cpi.progress import progress
    from fullscale.checkpoints import Checkpoint, discover_checkpoints
    from fullscale.resume import part_done, write_part
    from mechinterp.load import iter_bridges
    from mechinterp.probe import aggregate, probe_items, targets_table

    dtype = _resolved_dtype(config)  # auto -> bf16 where native (recorded in config.json and the fingerprint)
    out = check_out_dir(config.out)
    if isinstance(checkpoints, (list, tuple)) and checkpoints and all(isinstance(c, Checkpoint) for c in checkpoints):
        ckpts = list(checkpoints)
    else:
        ckpts = discover_checkpoints(checkpoints)
    if not ckpts:
        raise CpiError(f"no checkpoints found in {checkpoints}")
    item_list = load_items(items, config.max_items)
    fp = _run_fingerprint(config, item_list, dtype)
    weights = {c.name: checkpoint_fingerprint(c.path) for c in ckpts}
    weights_mode = "compatibility_mode" if config.compatibility_mode else "raw_hf"
    parts_dir = out / "parts"

    frames: list[pd.DataFrame] = []
    with FolderLock(out, "cpi probe"):
        _check_resume(out, config, dtype)
        todo = [ck for ck in ckpts if not part_done(parts_dir, ck.name, fp, weights[ck.name], config.overwrite,
                                                    "probed")]
        batch_size = _plan_batch(config, todo[0], item_list) if todo else 0
        for ck in ckpts:
            if ck not in todo:
                frames.append(pd.read_csv(parts_dir / _part_name(ck), keep_default_na=False, na_values=[""]))
        for ck, bridge, tok in progress(iter_bridges(todo, device=config.device, dtype=config.dtype,
                                                     tokenizer=config.tokenizer,
                                                     compatibility_mode=config.compatibility_mode),
                                        desc="checkpoints", total=len(todo)):
            try:
                table = probe_items(bridge, tok, item_list, template=config.template, batch_size=batch_size,
                                    max_length=config.max_length)
            finally:
                del bridge
            pos = ckpts.index(ck)
            step = ck.step if ck.step is not None else pos
            atomic_write_table(targets_table(item_list, tok, template=config.template, max_length=config.max_length),
                               out / "targets" / _part_name(ck))
            if config.per_item:
                atomic_write_table(table.assign(checkpoint=ck.name, step=step), out / "items" / _part_name(ck))
            agg = aggregate(table)
            agg.insert(0, "checkpoint", ck.name)
            agg.insert(1, "step", step)
            write_part(parts_dir, ck.name, agg, {"checkpoint": ck.name, "path": str(ck.path), "step": step,
                                                 "fingerprint": fp, "weights": weights[ck.name]})
            frames.append(agg)
            # config.json beside the first finished part, so that a resumed run can be checked
            save_run(out, config, tables={"probe": pd.concat(frames, ignore_index=True)}, weights=weights_mode,
                     fingerprint=fp, dtype=dtype)
        combined = pd.concat(frames, ignore_index=True).sort_values("step", kind="stable").reset_index(drop=True)
        save_run(out, config, tables={"probe": combined}, weights=weights_mode, fingerprint=fp, dtype=dtype,
                 checkpoints=[{"name": c.name, "path": str(c.path), "step": c.step, "weights": weights[c.name]}
                              for c in ckpts])
    return combined


def _plan_batch(config: ProbeConfig, ck: Any, items: list) -> int:
    """``config.batch_size`` checked against the device's memory (or chosen, for ``auto``), before loading."""
    from fullscale.checkpoints import check_checkpoint_files, checkpoint_tokenizer, resolve_device_dtype
    from fullscale.memory import plan_batch

    device, dtype = resolve_device_dtype(config.device, config.dtype)
    base = check_checkpoint_files(ck)
    tok = checkpoint_tokenizer(ck.name, ck.path, base, config.tokenizer)
    try:
        return plan_batch(ck.path, tok, items, config.template, config.max_length, config.batch_size, dtype, device,
                          extra=0, all_logits=False)
    except CpiError as exc:
        raise CpiError(f"checkpoint {ck.name}: {exc}") from exc


def read_probe_table(path: str | Path) -> "pd.DataFrame":
    """Read ``probe.csv`` (a file or the run folder containing it)."""
    import pandas as pd

    p = Path(path)
    if p.is_dir():
        p = p / "probe.csv"
    if not p.is_file():
        raise CpiError(f"{p}: probe table not found")
    return pd.read_csv(p, keep_default_na=False, na_values=[""])
