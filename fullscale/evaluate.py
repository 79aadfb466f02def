"""Context reliance over a finetuning trajectory: every checkpoint x dataset x item.

:func:`run_evaluate` (``cpi evaluate``; :func:`evaluate_trajectory` is its older keyword form) streams the checkpoints one at a time (only one
model in memory), scores every item of every dataset with the modes of
:mod:`fullscale.scoring`, and writes into ``out``:

``items/<checkpoint>.csv`` + ``items/<checkpoint>.json``
    The rows of one checkpoint (all datasets), written atomically, then a
    marker with the run fingerprint (settings + item contents), the
    checkpoint's weights fingerprint (:func:`cpi.fingerprint.checkpoint_fingerprint`)
    and the row count. A checkpoint whose marker matches both is skipped on a
    re-run (said at WARNING level), so an interrupted run resumes where it
    stopped and never loses or duplicates rows; a marker from other weights or
    settings is refused (or recomputed with ``overwrite``), never reused.
``items.csv``
    One row per checkpoint × dataset × item (prompt, output, both scores, the
    closed-book check), rebuilt from ``items/`` after each checkpoint.
``summary.csv``
    One row per checkpoint × dataset × category (+ ``category == "ALL"``):
    ``cf_acc``, ``param_acc`` with bootstrap bands, ``mean_margin``...
``config.json``
    The :class:`EvalConfig`, package version and git hash (``cpi.io.save_run``).
``inversion.png``
    :func:`fullscale.plots.plot_inversion` of the summary (``plot=True``).

Example::

    from fullscale.evaluate import EvalConfig, run_evaluate
    out = run_evaluate(EvalConfig(checkpoints=("runs/alpaca",), datasets=("CF_World_Facts",), out="eval"))
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Optional, Union

from cpi.config import check_at_least, check_at_most
from cpi.errors import ConfigError, CpiError
from cpi.io import atomic_save_figure, save_run
from cpi.progress import progress
from fullscale.checkpoints import ModelSettings
from fullscale.matching import DEFAULT_STOPS
from fullscale.prompts import MODES
from fullscale.stats import MAX_N_BOOT

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

log = logging.getLogger(__name__)

ITEM_KEY = ("checkpoint", "dataset", "item_id")


@dataclass(frozen=True)
class EvalConfig(ModelSettings):
    """What to evaluate and how (``cpi evaluate``'s flags are generated from these fields)."""

    checkpoints: tuple[str, ...] = ()
    "Trainer output folder (checkpoint-<step>/), model or LoRA adapter folders; several, space- or comma-separated"
    datasets: tuple[str, ...] = ("CF_World_Facts", "CF_Bio", "CF_Quotes")
    "shipped conflict-set names or JSONL files"
    out: str = "eval"
    "results folder (resumable)"
    modes: tuple[str, ...] = MODES
    "subset of generate, logprob, closed_book"
    batch_size: Union[int, Literal["auto"]] = 16
    "items per forward pass, or auto: the largest batch whose memory estimate fits the device"
    max_items: Optional[int] = None
    "a seeded random subset of N items per dataset (original order kept)"
    max_new_tokens: int = 24
    "generation budget of the generate mode"
    stops: tuple[str, ...] = DEFAULT_STOPS
    "the generated answer ends at the first of these strings after its leading whitespace (generation stops there)"
    max_length: Optional[int] = None
    "token budget of prompt + answer (None: the model's context length; longer contexts are cut from the left and flagged)"
    n_boot: int = 1000
    "bootstrap resamples for the confidence bands"
    on_invalid: Literal["raise", "skip"] = "raise"
    "an invalid record in a dataset: raise (stop, naming it) or skip (drop each, one WARNING with the count)"
    seed: int = 0
    "seed of the item subset and the bootstrap"
    plot: bool = True
    "draw inversion.png"
    overwrite: bool = False
    "recompute checkpoints whose stored results were made with other settings"

    def validate(self) -> None:
        super().validate()
        if not self.checkpoints:
            raise ConfigError("field 'checkpoints': give at least one checkpoint folder")
        if not self.datasets:
            raise ConfigError("field 'datasets': give at least one dataset name or JSONL file")
        bad = [m for m in self.modes if m not in MODES]
        if bad or not self.modes:
            raise ConfigError(f"field 'modes': {bad[0] if bad else '(empty)'!r} is not one of {', '.join(MODES)}")
        if self.batch_size != "auto":
            check_at_least(self, batch_size=1)
        if not self.stops or any(not isinstance(t, str) or not t for t in self.stops):
            raise ConfigError(f"field 'stops': give one or more non-empty strings, got {list(self.stops)!r}")
        check_at_least(self, max_items=1, max_new_tokens=1, max_length=8, n_boot=0)
        check_at_most(self, n_boot=MAX_N_BOOT)


def _load_datasets(cfg: EvalConfig) -> dict[str, list]:
    """Every dataset's (sub-sampled) items, keyed by the items' dataset name; errors before any model loads."""
    import random

    from fullscale.conflicts import load_conflicts

    out: dict[str, list] = {}
    for source in cfg.datasets:
        items = load_conflicts(source, on_invalid=cfg.on_invalid)
        names = sorted({it.dataset for it in items})
        for name in names:
            if name in out:
                raise CpiError(f"dataset {source}: dataset name {name!r} is also used by another --datasets entry")
        if cfg.max_items is not None and len(items) > cfg.max_items:
            keep = sorted(random.Random(cfg.seed).sample(range(len(items)), cfg.max_items))
            items = [items[i] for i in keep]
        for name in names:
            out[name] = [it for it in items if it.dataset == name]
    return out


def _fingerprint(cfg: EvalConfig, data: dict[str, list], dtype: str) -> str:
    """Hash of everything that changes a checkpoint's rows (not batch size, device or the checkpoint list)."""
    h = hashlib.sha256()
    spec = {k: getattr(cfg, k) for k in ("template", "modes", "max_new_tokens", "max_length", "max_items", "seed")}
    spec["dtype"] = dtype
    if tuple(cfg.stops) != DEFAULT_STOPS:  # other answer ends (the default's results keep their fingerprint)
        spec["stops"] = list(cfg.stops)
    from fullscale.scoring import scorer_fingerprint

    spec["scorer"] = scorer_fingerprint()  # the answer matching, aliases and margin columns
    if cfg.tokenizer:  # used for checkpoints without their own tokenizer
        from cpi.fingerprint import source_fingerprint

        spec["tokenizer"] = source_fingerprint(cfg.tokenizer) or cfg.tokenizer
    h.update(json.dumps(spec, sort_keys=True, default=list).encode())
    for name in sorted(data):
        for it in data[name]:
            h.update(json.dumps([name, it.id, it.version, it.context, it.question, it.context_answer,
                                 it.parametric_answer, list(it.context_aliases), list(it.parametric_aliases)]).encode())
    return h.hexdigest()[:16]


def _marker(items_dir: Path, name: str) -> dict[str, Any] | None:
    """The completion marker of checkpoint ``name`` (None if it or its rows are missing or unreadable)."""
    from cpi.fingerprint import read_marker

    return read_marker(items_dir / f"{name}.csv", items_dir / f"{name}.json")


def _read_items(items_dir: Path, names: list[str], fp: str, weights: dict[str, str]) -> "pd.DataFrame":
    """The stored rows of ``names`` whose markers match this run (fingerprint and weights); others are left out."""
    import pandas as pd

    frames = []
    for n in names:
        meta = _marker(items_dir, n)
        if meta is None or meta.get("fingerprint") != fp or meta.get("weights") != weights.get(n):
            continue
        frame = pd.read_csv(items_dir / f"{n}.csv", keep_default_na=False, na_values=[""])
        if len(frame) != meta.get("n_rows"):
            raise CpiError(f"{items_dir / (n + '.csv')}: {len(frame)} rows but its marker says {meta.get('n_rows')} "
                           "(edited or damaged); delete it and its .json marker to recompute")
        frames.append(frame)
    if not frames:
        return pd.DataFrame()
    table = pd.concat(frames, ignore_index=True)
    return table.drop_duplicates(subset=list(ITEM_KEY), keep="last")


def _plan_batch(cfg: EvalConfig, todo: list, items: list, device: Any, dtype: Any) -> int:
    """``cfg.batch_size`` checked against the memory of ``device`` (or chosen, for ``auto``), before loading."""
    from fullscale.checkpoints import checkpoint_tokenizer, check_checkpoint_files
    from fullscale.memory import plan_batch

    ck = todo[0]
    base = check_checkpoint_files(ck)
    tok = checkpoint_tokenizer(ck.name, ck.path, base, cfg.tokenizer)
    extra = cfg.max_new_tokens if "generate" in cfg.modes else 0
    try:
        return plan_batch(ck.path, tok, items, cfg.template, cfg.max_length, cfg.batch_size, dtype, device,
                          extra=extra)
    except CpiError as exc:
        raise CpiError(f"checkpoint {ck.name}: {exc}") from exc


def _write_combined(cfg: EvalConfig, out: Path, names: list[str], meta: dict[str, Any],
                    weights: dict[str, str]) -> "tuple[pd.DataFrame, pd.DataFrame]":
    from fullscale.scoring import summarize_items

    items = _read_items(out / "items", names, meta["fingerprint"], weights)
    summary = summarize_items(items, n_boot=cfg.n_boot, seed=cfg.seed) if len(items) else items
    save_run(out, cfg, tables={"items": items, "summary": summary}, **meta)
    return items, summary


def evaluate_trajectory(config: EvalConfig | None = None, **kwargs: Any) -> Path:
    """Evaluate every checkpoint of ``config`` (or ``EvalConfig(**kwargs)``); returns the results folder.

    A thin wrapper of :func:`run_evaluate` kept for existing callers: ``kwargs`` build the config
    (or change fields of ``config``).
    """
    cfg = config if config is not None else EvalConfig(**kwargs)
    if config is not None and kwargs:
        cfg = cfg.replace(**kwargs)
    return run_evaluate(cfg)


def run_evaluate(config: EvalConfig) -> Path:
    """Evaluate every checkpoint of ``config`` into ``config.out``; returns that folder.

    One checkpoint is loaded at a time. Bad input (output folder, dataset,
    checkpoint, tokenizer) raises :class:`CpiError` before anything is written;
    a checkpoint that fails later keeps the finished ones. The folder is locked
    (:class:`cpi.lock.FolderLock`) while the run writes into it.
    """
    import pandas as pd

    from cpi.fingerprint import checkpoint_fingerprint
    from cpi.io import check_out_dir
    from cpi.lock import FolderLock
    from fullscale.adapters import checkpoint_models
    from fullscale.checkpoints import discover_checkpoints, resolve_device_dtype
    from fullscale.resume import part_done, write_part
    from fullscale.scoring import score_items

    cfg = config
    device, dtype = resolve_device_dtype(cfg.device, cfg.dtype)  # auto -> bf16 where native; refusals first
    out = check_out_dir(cfg.out)
    data = _load_datasets(cfg)
    ckpts = discover_checkpoints(list(cfg.checkpoints))
    fp = _fingerprint(cfg, data, str(dtype))  # the resolved dtype: a bf16 result never resumes a float32 one
    items_dir = out / "items"
    names = [c.name for c in ckpts]
    weights = {c.name: checkpoint_fingerprint(c.path) for c in ckpts}
    meta = {"fingerprint": fp, "checkpoints": [{"name": c.name, "path": str(c.path), "step": c.step,
                                                "adapter": c.adapter, "weights": weights[c.name]} for c in ckpts],
            "device": str(device), "dtype": str(dtype),
            "n_items": {k: len(v) for k, v in data.items()}}
    all_items = [it for name in data for it in data[name]]
    with FolderLock(out, "cpi evaluate"):
        todo = [ck for ck in ckpts if not part_done(items_dir, ck.name, fp, weights[ck.name], cfg.overwrite,
                                                    "evaluated")]
        batch_size = _plan_batch(cfg, todo, all_items, device, dtype) if todo else 0
        if todo:
            meta["batch_size"] = batch_size
        models = checkpoint_models(todo, device=device, dtype=dtype, tokenizer=cfg.tokenizer)
        for ck, model, tok in progress(models, desc="checkpoints", total=len(todo)):
            try:
                table = score_items(model, tok, all_items, template=cfg.template, modes=cfg.modes,
                                    batch_size=batch_size, max_new_tokens=cfg.max_new_tokens,
                                    max_length=cfg.max_length, stops=cfg.stops)
            except CpiError as exc:
                raise CpiError(f"checkpoint {ck.name}: {exc}") from exc
            finally:
                del model
            table.insert(0, "checkpoint", ck.name)
            table.insert(1, "step", pd.array([ck.step] * len(table), dtype="Int64"))
            table.insert(2, "template", cfg.template)
            # rows first, then the marker that says they are complete
            write_part(items_dir, ck.name, table, {"checkpoint": ck.name, "path": str(ck.path), "step": ck.step,
                                                   "fingerprint": fp, "weights": weights[ck.name]})
            _write_combined(cfg, out, names, meta, weights)
        items, summary = _write_combined(cfg, out, names, meta, weights)
        if cfg.plot and len(summary) and "cf_acc" in summary:
            import matplotlib.pyplot as plt

            from fullscale.plots import plot_inversion

            fig = plot_inversion(summary)
            atomic_save_figure(fig, out / "inversion.png", dpi=150)
            plt.close(fig)
    return out


def load_results(out: str | Path) -> "tuple[pd.DataFrame, pd.DataFrame]":
    """``(items, summary)`` tables of a results folder."""
    import pandas as pd

    out = Path(out)
    for name in ("items.csv", "summary.csv"):
        if not (out / name).is_file():
            raise CpiError(f"{out}: no {name} (not an evaluation results folder?)")
    # outputs such as "None" or "NA" are text, not missing values
    items = pd.read_csv(out / "items.csv", keep_default_na=False, na_values=[""])
    return items, pd.read_csv(out / "summary.csv")
