"""The paper's controlled experiment on a real pretrained model: knowledge -> mixture -> finetune -> evaluate -> probe.

One :class:`ControlledConfig` is one *condition* (a base model, a mixture with its ``rho``, finetuning
settings, evaluation settings) run over several seeds. :func:`run_controlled` writes one run folder::

    <out>/controlled_config.json           the config + version + git hash
    <out>/knowledge/<model>-<key>/         known.csv (closed-book rank per fact), rates.csv (per relation)
                                           -- cached per model fingerprint and knowledge settings; a sweep
                                           shares one cache between its conditions (``knowledge_cache``)
    <out>/base/checkpoint-0 -> the base    (a link: the base is step 0 of every trajectory)
    <out>/seed-<s>/data-<key>/             ift.jsonl (finetuning records), records.csv (kind per record),
                                           heldout.jsonl (held-out conflicts), counts.json
    <out>/seed-<s>/finetune-<key>/         ``fullscale.finetune.run_finetune`` output (checkpoint-<step>/)
    <out>/seed-<s>/eval-<key>/             eval.jsonl (the held-out conflicts evaluated) and
                                           ``fullscale.evaluate`` output (items.csv, summary.csv)
    <out>/seed-<s>/probe-<key>/            ``mechinterp.probe_trajectory`` output (probe.csv)
    <out>/trajectory.csv, items.csv, probe_steps.csv, verdict.json, timings.csv

Every stage folder is named by a hash of everything that determines its content (the model's
weights, the data, the settings, the seed), so a stage is skipped exactly when its inputs are
unchanged, a changed setting never mixes with old outputs, and an interrupted run resumes with
identical numbers (each stage is itself resumable: the driver from its last complete checkpoint,
evaluation and probing per checkpoint).

The verdict (:func:`inversion_statistic`) is computed from the per-item counterfactual correctness of
every seed × held-out item at every checkpoint: the peak (an interior checkpoint, the argmax of the
mean) minus the final accuracy, and the peak minus the start, each with a bootstrap interval over
seed × item units (stratified by seed, the peak re-selected in every replicate). "rise then fall"
only when both intervals exclude 0.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Literal, Optional, Sequence

from cpi.config import Config
from cpi.errors import EXIT_INTERRUPTED, ConfigError, CpiError
from cpi.fingerprint import checkpoint_fingerprint
from cpi.io import atomic_write_json, atomic_write_table, save_run
from cpi.timing import StageTimer
from experiments.controlled.mixture import MixtureConfig, build_mixture, write_records

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

log = logging.getLogger(__name__)

METHODS = ("lora", "full", "qk_only")


@dataclass(frozen=True)
class KnowledgeSettings(Config):
    """Closed-book knowledge of the base (:func:`fullscale.knowledge.known_facts`): the question-answer
    items of ``datasets`` (the first ``max_items`` of each when set), the closed-book form of
    ``template``, the true answer ranked among ``n_candidates`` answers of its relation."""

    datasets: tuple[str, ...] = ("CF_World_Facts", "CF_Bio")
    template: str = "plain"
    n_candidates: int = 8
    max_items: Optional[int] = None
    batch_size: int = 16
    length_normalise: bool = False

    def validate(self) -> None:
        if not self.datasets:
            raise ConfigError("field 'knowledge.datasets': give at least one conflict set")
        if self.n_candidates < 2:
            raise ConfigError(f"field 'knowledge.n_candidates': must be >= 2, got {self.n_candidates}")
        if self.max_items is not None and self.max_items < 2:
            raise ConfigError(f"field 'knowledge.max_items': must be >= 2 or null, got {self.max_items}")
        if self.batch_size < 1:
            raise ConfigError(f"field 'knowledge.batch_size': must be >= 1, got {self.batch_size}")


@dataclass(frozen=True)
class TrainSettings(Config):
    """Finetuning with the ``cpi finetune`` driver: ``method`` = ``lora`` (rank ``lora_rank`` on every
    linear layer), ``full`` or ``qk_only`` (the paper's mitigation: only query/key projections train);
    ``steps`` optimizer steps of ``batch_size`` records, a checkpoint every ``save_steps`` (the base is
    step 0); ``filter_fraction`` > 0 drops that fraction of the records with the lowest
    ``cpi data score-context`` gap (the paper's filtering mitigation, scored by the base);
    ``gradient_checkpointing`` recomputes activations in the backward pass (less memory, more time;
    the same numbers)."""

    method: Literal["lora", "full", "qk_only"] = "lora"
    steps: int = 60
    save_steps: int = 10
    batch_size: int = 8
    learning_rate: float = 3e-4
    lr_scheduler: str = "constant"
    lora_rank: int = 16
    lora_alpha: float = 32.0
    max_seq_length: int = 256
    template: str = "alpaca"
    filter_fraction: float = 0.0
    gradient_checkpointing: bool = False

    #: added after the first runs: off, it leaves the finetune folder's content key as it was
    ADDED_LATER = {"gradient_checkpointing": False}

    def validate(self) -> None:
        for name in ("steps", "save_steps", "batch_size", "lora_rank", "max_seq_length"):
            if getattr(self, name) < 1:
                raise ConfigError(f"field 'finetune.{name}': must be >= 1, got {getattr(self, name)}")
        if self.save_steps > self.steps:
            raise ConfigError(f"field 'finetune.save_steps': must be <= finetune.steps={self.steps}, "
                              f"got {self.save_steps}")
        if self.learning_rate <= 0:
            raise ConfigError(f"field 'finetune.learning_rate': must be > 0, got {self.learning_rate}")
        if not 0.0 <= self.filter_fraction < 1.0:
            raise ConfigError(f"field 'finetune.filter_fraction': must be in [0, 1), got {self.filter_fraction}")


@dataclass(frozen=True)
class EvalSettings(Config):
    """Evaluation of every checkpoint on (at most ``max_items`` of) the seed's held-out conflicts with
    ``fullscale.evaluate`` (``modes``; counterfactual accuracy needs ``generate``), bootstrap intervals
    with ``n_boot`` resamples; the probe (``mechinterp``) on ``probe_items`` of them (0 = no probe)."""

    template: str = "alpaca"
    modes: tuple[str, ...] = ("generate", "logprob")
    max_items: Optional[int] = 60
    batch_size: int = 16
    max_new_tokens: int = 8
    n_boot: int = 1000
    probe_items: int = 16
    probe_batch_size: int = 8

    def validate(self) -> None:
        if "generate" not in self.modes:
            raise ConfigError("field 'evaluate.modes': must include 'generate' (counterfactual accuracy "
                              "is measured on the generated answer)")
        if self.max_items is not None and self.max_items < 1:
            raise ConfigError(f"field 'evaluate.max_items': must be >= 1 or null, got {self.max_items}")
        for name in ("batch_size", "max_new_tokens", "n_boot", "probe_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"field 'evaluate.{name}': must be >= 1, got {getattr(self, name)}")
        if self.probe_items < 0:
            raise ConfigError(f"field 'evaluate.probe_items': must be >= 0, got {self.probe_items}")


@dataclass(frozen=True)
class ControlledConfig(Config):
    """One condition of the controlled experiment, over ``seeds``.

    ``model``: a registry name (``smollm2-135m-instruct``, ``gemma-3-270m``), a hub id or a checkpoint
    folder. ``knowledge`` (:class:`KnowledgeSettings`), ``mixture``
    (:class:`~experiments.controlled.mixture.MixtureConfig`; its ``seed`` is set per seed of the run),
    ``finetune`` (:class:`TrainSettings`), ``evaluate`` (:class:`EvalSettings`). ``threads``: torch
    intra-op threads for the run (0 = leave as is; 1, the default, is robust on a shared machine, where
    2 threads on 2 busy cores were many times slower). ``workers``: seeds run at once, each in its own
    process (2 on a 2-core machine; peak memory is about ``workers`` times one seed's; the numbers do
    not depend on it). ``knowledge_cache``: folder of the knowledge cache
    (default ``<out>/knowledge``). Nested fields take dotted keys: ``--set mixture.rho=1.0``.

    >>> cfg = ControlledConfig().replace(**{"mixture.rho": 1.0}, seeds=(0, 1))
    >>> cfg.mixture.rho, cfg.seeds, cfg.finetune.method
    (1.0, (0, 1), 'lora')
    """

    model: str = "smollm2-135m-instruct"
    seeds: tuple[int, ...] = (0, 1, 2)
    knowledge: KnowledgeSettings = field(default_factory=KnowledgeSettings)
    mixture: MixtureConfig = field(default_factory=lambda: MixtureConfig(n_examples=480, rho=0.5,
                                                                         heldout_fraction=0.5, min_heldout=20))
    finetune: TrainSettings = field(default_factory=TrainSettings)
    evaluate: EvalSettings = field(default_factory=EvalSettings)
    threads: int = 1
    workers: int = 1
    knowledge_cache: Optional[str] = None

    def validate(self) -> None:
        if not self.model:
            raise ConfigError("field 'model': give a registry name, hub id or checkpoint folder")
        if not self.seeds:
            raise ConfigError("field 'seeds': give at least one seed")
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"field 'seeds': duplicate seed in {list(self.seeds)}")
        if self.threads < 0:
            raise ConfigError(f"field 'threads': must be >= 0, got {self.threads}")
        if self.workers < 1:
            raise ConfigError(f"field 'workers': must be >= 1, got {self.workers}")

    def replace(self, **changes: Any) -> "ControlledConfig":
        """As :meth:`Config.replace`; an error in a nested field names it with its dotted key."""
        try:
            return super().replace(**changes)
        except ConfigError as exc:
            msg = str(exc)
            heads = {k.split(".", 1)[0] for k in changes if "." in k}
            if len(heads) == 1 and msg.startswith("field '") and not msg.startswith(f"field '{next(iter(heads))}."):
                raise ConfigError(msg.replace("field '", f"field '{next(iter(heads))}.", 1)) from None
            raise

    @classmethod
    def quick(cls, **changes: Any) -> "ControlledConfig":
        """The ``--quick`` form (a few minutes on 2 cores with SmolLM2): one seed, 60 facts, 32 records,
        4 LoRA steps (checkpoints at 2 and 4), 12 held-out conflicts, 4 probed. A smoke test of the
        pipeline, not a result."""
        base = cls(
            seeds=(0,),
            knowledge=KnowledgeSettings(datasets=("CF_World_Facts",), n_candidates=4, max_items=60),
            mixture=MixtureConfig(n_examples=32, rho=0.5, heldout_fraction=0.5, min_heldout=8),
            finetune=TrainSettings(steps=4, save_steps=2, batch_size=4, max_seq_length=192),
            evaluate=EvalSettings(max_items=12, max_new_tokens=6, n_boot=200, probe_items=4, probe_batch_size=4),
        )
        return base.replace(**changes) if changes else base

    def finetune_config(self, base_model: str, data: Path, output_dir: Path, seed: int) -> Any:
        """The :class:`fullscale.finetune.FinetuneConfig` of one seed of this condition."""
        from fullscale.finetune import FinetuneConfig, LoraSettings

        t = self.finetune
        lora = (LoraSettings(rank=t.lora_rank, alpha=t.lora_alpha, dropout=0.0) if t.method == "lora" else None)
        return FinetuneConfig(
            base_model=base_model, data=str(data), data_format="alpaca", template=t.template,
            max_seq_length=t.max_seq_length, lora=lora, qk_only=t.method == "qk_only",
            learning_rate=t.learning_rate, lr_scheduler=t.lr_scheduler, warmup_ratio=0.0, weight_decay=0.0,
            per_device_batch_size=t.batch_size, gradient_accumulation_steps=1, max_steps=t.steps,
            dtype="float32", output_dir=str(output_dir), save_steps=t.save_steps,
            logging_steps=max(1, t.save_steps // 2), seed=seed, filter_fraction=t.filter_fraction,
            filter_method="loss", filter_criterion="gap", gradient_checkpointing=t.gradient_checkpointing,
        )


# ---------------------------------------------------------------------------------------------
# content keys


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


def _items_key(items: Sequence[Any]) -> str:
    return content_key([[it.dataset, it.id, it.version, it.context, it.question, it.context_answer,
                         it.parametric_answer] for it in items])


# ---------------------------------------------------------------------------------------------
# stages


def knowledge_items(cfg: KnowledgeSettings) -> list[Any]:
    """The question-answer items of ``cfg.datasets`` (the first ``max_items`` of each)."""
    from fullscale.conflicts import load_conflicts

    items: list[Any] = []
    for name in cfg.datasets:
        qa = [it for it in load_conflicts(name) if it.task == "qa"]
        if not qa:
            raise CpiError(f"field 'knowledge.datasets': {name} has no question-answer items")
        items += qa[: cfg.max_items] if cfg.max_items else qa
    return items


def stage_knowledge(cfg: ControlledConfig, model_dir: Path, model_fp: str, cache: Path,
                    items: Sequence[Any]) -> "tuple[pd.DataFrame, pd.DataFrame]":
    """Closed-book known table and per-relation rates of the base, cached under ``cache``."""
    import pandas as pd

    from fullscale.checkpoints import load_checkpoint
    from fullscale.knowledge import known_facts, known_rates

    k = cfg.knowledge
    folder = cache / f"{_safe(cfg.model)}-{content_key(model_fp, k.template, k.n_candidates, k.length_normalise, _items_key(items))}"
    known_path, rates_path = folder / "known.csv", folder / "rates.csv"
    if known_path.is_file() and rates_path.is_file():
        log.info("%s: closed-book knowledge already measured; reading it back", folder)
        return pd.read_csv(known_path, keep_default_na=False, na_values=[""]), pd.read_csv(rates_path)
    model, tok = load_checkpoint(model_dir)
    try:
        table = known_facts(model, tok, items, template=k.template, n_candidates=k.n_candidates,
                            batch_size=k.batch_size, length_normalise=k.length_normalise)
    finally:
        del model
    rates = known_rates(table)
    atomic_write_table(table, known_path)
    atomic_write_table(rates, rates_path)
    save_run(folder, k, model=cfg.model, model_fingerprint=model_fp)
    return table, rates


@dataclass(frozen=True)
class SeedData:
    """One seed's mixture on disk, and the held-out conflicts evaluated (at most ``evaluate.max_items``
    of the held-out ones, sampled with the seed)."""

    folder: Path
    key: str
    counts: dict[str, int]
    heldout: list[Any]
    evaluated: list[Any]


def stage_mixture(cfg: ControlledConfig, seed: int, items: Sequence[Any], known: "pd.DataFrame",
                  seed_dir: Path) -> SeedData:
    """Build (or read back) the seed's mixture and held-out conflicts."""
    import pandas as pd

    from fullscale.conflicts import items_to_jsonl, load_conflicts

    mcfg = cfg.mixture.replace(seed=seed)
    known_sig = sorted(zip(known["item_id"].astype(str), known["known"].astype(bool)))
    key = content_key(mcfg, _items_key(items), known_sig)
    folder = seed_dir / f"data-{key}"
    done = folder / "counts.json"
    if not done.is_file():
        mix = build_mixture(items, known, mcfg)
        write_records(mix.records, folder / "ift.jsonl")
        atomic_write_table(pd.DataFrame([{k: r[k] for k in ("id", "kind", "item_id", "category")}
                                         for r in mix.records]), folder / "records.csv")
        items_to_jsonl(mix.heldout, folder / "heldout.jsonl")
        atomic_write_json(done, mix.counts)  # last: marks the folder complete
    heldout = load_conflicts(folder / "heldout.jsonl")
    n = cfg.evaluate.max_items
    evaluated = heldout if n is None or len(heldout) <= n else sorted(
        random.Random(seed).sample(heldout, n), key=lambda it: it.id)
    counts = {**json.loads(done.read_text()), "evaluated": len(evaluated)}
    return SeedData(folder=folder, key=key, counts=counts, heldout=heldout, evaluated=evaluated)


def _finished(ft_dir: Path, steps: int) -> bool:
    from fullscale.finetune import is_complete_checkpoint, list_checkpoints

    done = [s for s, p in list_checkpoints(ft_dir) if is_complete_checkpoint(p)] if ft_dir.is_dir() else []
    return bool(done) and done[-1] >= steps


def stage_finetune(cfg: ControlledConfig, seed: int, model_dir: Path, model_fp: str, data: SeedData,
                   seed_dir: Path) -> Path:
    """Finetune the base on the seed's records (resumes from the last complete checkpoint)."""
    from fullscale.finetune import run_finetune

    ft_dir = seed_dir / f"finetune-{content_key(model_fp, data.key, cfg.finetune, seed)}"
    if _finished(ft_dir, cfg.finetune.steps):
        log.info("%s: finetuning already finished; reading it back", ft_dir)
        return ft_dir
    run_finetune(cfg.finetune_config(str(model_dir), data.folder / "ift.jsonl", ft_dir, seed))
    return ft_dir


def stage_evaluate(cfg: ControlledConfig, seed: int, base_link: Path, ft_dir: Path,
                   data: SeedData, seed_dir: Path) -> "tuple[pd.DataFrame, pd.DataFrame]":
    """Every checkpoint (the base as step 0) on the seed's evaluated held-out conflicts."""
    from fullscale.evaluate import EvalConfig, evaluate_trajectory, load_results

    from fullscale.conflicts import items_to_jsonl

    e = cfg.evaluate
    key = content_key(ft_dir.name, e.template, e.modes, e.max_new_tokens, e.n_boot, seed, _items_key(data.evaluated))
    out = seed_dir / f"eval-{key}"
    if not (out / "eval.jsonl").is_file():
        items_to_jsonl(data.evaluated, out / "eval.jsonl")
    ev = EvalConfig(checkpoints=(str(base_link.parent), str(ft_dir)), datasets=(str(out / "eval.jsonl"),),
                    out=str(out), template=e.template, modes=e.modes, batch_size=e.batch_size,
                    max_new_tokens=e.max_new_tokens, n_boot=e.n_boot, seed=seed, plot=False)
    evaluate_trajectory(ev)
    return load_results(out)


def stage_probe(cfg: ControlledConfig, seed: int, base_link: Path, ft_dir: Path, data: SeedData,
                seed_dir: Path) -> "pd.DataFrame":
    """Attention to context and value contributions per layer x head at every checkpoint."""
    from fullscale.checkpoints import discover_checkpoints
    from mechinterp.trajectory import probe_trajectory

    e = cfg.evaluate
    items = data.evaluated[: e.probe_items]
    out = seed_dir / f"probe-{content_key(ft_dir.name, e.template, e.probe_items, _items_key(items))}"
    ckpts = discover_checkpoints([str(base_link.parent), str(ft_dir)])
    return probe_trajectory(ckpts, items, out, template=e.template, batch_size=e.probe_batch_size)


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in Path(text).name or text)[:40]


def _link_base(out: Path, model_dir: Path) -> Path:
    """``<out>/base/checkpoint-0``: a link to the base model folder (step 0 of every trajectory)."""
    link = out / "base" / "checkpoint-0"
    link.parent.mkdir(parents=True, exist_ok=True)
    target = model_dir.resolve()
    if link.is_symlink() and Path(os.readlink(link)) == target:
        return link
    if link.is_symlink() or link.exists():
        if not link.is_symlink():
            raise CpiError(f"{link}: exists and is not a link to the base model; use a fresh --out folder")
        link.unlink()
    tmp = link.with_name(".checkpoint-0.tmp")
    if tmp.is_symlink():
        tmp.unlink()
    tmp.symlink_to(target, target_is_directory=True)
    tmp.rename(link)
    return link


# ---------------------------------------------------------------------------------------------
# the verdict


def inversion_statistic(items: "pd.DataFrame", n_boot: int = 2000, seed: int = 0, level: float = 0.95,
                        metric: str = "cf_correct") -> dict[str, Any]:
    """Rise (peak - start) and fall (peak - final) of the mean ``metric`` with bootstrap intervals.

    ``items``: one row per seed x item x step (columns ``seed, item_id, step, <metric>``). Units are
    (seed, item) pairs; every unit must be scored at every step. The peak is the interior step with
    the highest mean; each bootstrap replicate resamples units within each seed and re-selects its
    own peak (so the interval accounts for picking the maximum); ``net`` = final - start likewise.
    Verdict: ``rise then fall`` when the rise and fall intervals both exclude 0 (above); otherwise
    ``still rising at the last checkpoint`` (fall interval below 0 and net above 0), ``rise, no
    significant fall``, ``fall (no significant rise)`` (net below 0) or ``no significant change``;
    ``not testable`` with fewer than 3 steps.
    """
    import numpy as np

    wide = items.pivot_table(index=["seed", "item_id"], columns="step", values=metric, aggfunc="mean")
    if wide.isna().any().any():
        raise CpiError(f"items table: some seed x item is not scored at every step ({int(wide.isna().sum().sum())} gaps)")
    steps = [int(s) for s in wide.columns]
    x = wide.to_numpy(dtype=float)
    seeds = wide.index.get_level_values("seed").to_numpy()
    out: dict[str, Any] = {"metric": metric, "n_units": int(x.shape[0]), "n_seeds": int(len(set(seeds))),
                           "n_steps": len(steps), "steps": steps, "level": level, "n_boot": n_boot}
    mean = x.mean(axis=0)
    out["trajectory"] = [float(v) for v in mean]
    if len(steps) < 3:
        out.update(verdict="not testable (fewer than 3 checkpoints)")
        return out

    def stats(m: "np.ndarray") -> tuple[int, float, float, float]:
        p = 1 + int(np.argmax(m[1:-1]))
        return p, float(m[p] - m[0]), float(m[p] - m[-1]), float(m[-1] - m[0])

    peak, rise, fall, net = stats(mean)
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(seeds == s) for s in sorted(set(seeds))]
    boot = np.empty((n_boot, 3))
    for b in range(n_boot):
        idx = np.concatenate([rng.choice(g, size=len(g), replace=True) for g in groups])
        boot[b] = stats(x[idx].mean(axis=0))[1:]
    a = (1 - level) / 2
    (r_lo, f_lo, n_lo), (r_hi, f_hi, n_hi) = (tuple(float(v) for v in q) for q in np.quantile(boot, [a, 1 - a], axis=0))
    if r_lo > 0 and f_lo > 0:
        verdict = "rise then fall"
    elif f_hi < 0 and n_lo > 0:
        verdict = "still rising at the last checkpoint (no interior peak)"
    elif r_lo > 0:
        verdict = "rise, no significant fall"
    elif n_hi < 0:
        verdict = "fall (no significant rise)"
    else:
        verdict = "no significant change"
    out.update(peak_step=steps[peak], start=float(mean[0]), peak=float(mean[peak]), final=float(mean[-1]),
               rise=rise, rise_lo=r_lo, rise_hi=r_hi, fall=fall, fall_lo=f_lo, fall_hi=f_hi,
               net=net, net_lo=n_lo, net_hi=n_hi, verdict=verdict)
    return out


def verdict_line(stat: dict[str, Any]) -> str:
    """One printed line for :func:`inversion_statistic`'s result."""
    n = f"{stat['n_seeds']} seeds x {stat['n_units'] // max(stat['n_seeds'], 1)} items"
    if "rise" not in stat:
        return f"verdict: {stat['verdict']} ({n})"
    pct = int(round(100 * stat["level"]))
    return (f"verdict: {stat['verdict']} -- counterfactual accuracy {stat['start']:.1%} (step {stat['steps'][0]}) -> "
            f"peak {stat['peak']:.1%} (step {stat['peak_step']}) -> {stat['final']:.1%} (step {stat['steps'][-1]}); "
            f"rise {stat['rise']:+.1%} [{stat['rise_lo']:+.1%}, {stat['rise_hi']:+.1%}], "
            f"fall {stat['fall']:+.1%} [{stat['fall_lo']:+.1%}, {stat['fall_hi']:+.1%}], "
            f"net {stat['net']:+.1%} [{stat['net_lo']:+.1%}, {stat['net_hi']:+.1%}] ({pct}% bootstrap, {n})")


# ---------------------------------------------------------------------------------------------
# the run


@dataclass
class ControlledRun:
    """A finished condition: its folder, config and tidy tables.

    ``known``/``rates``: the base's closed-book table and per-relation rates; ``counts``: mixture counts
    per seed; ``items``: per seed x item x step scores; ``trajectory``: per seed x step summary
    (``cf_acc``, ``param_acc``, ``mean_margin`` with intervals); ``probe_steps``: per seed x step
    probe summary (``mechinterp.steps_table``); ``probe``: the raw probe tables (seed column);
    ``verdict``: :func:`inversion_statistic`'s result; ``timings``: wall time and peak memory per stage.
    """

    out: Path
    config: ControlledConfig
    known: "pd.DataFrame"
    rates: "pd.DataFrame"
    counts: "pd.DataFrame"
    items: "pd.DataFrame"
    trajectory: "pd.DataFrame"
    probe: "pd.DataFrame | None"
    probe_steps: "pd.DataFrame | None"
    verdict: dict[str, Any]
    timings: "pd.DataFrame"


def run_controlled(config: ControlledConfig, out_dir: str | Path, timer: Any = None) -> ControlledRun:
    """Run (or resume) every stage of ``config`` into ``out_dir``; returns the tables (also written there).

    The seeds run ``config.workers`` at a time, each in its own process on ``config.threads`` threads
    (one process per core is the fastest use of a small CPU machine; the numbers are the same as with
    ``workers = 1``). ``timer``: a :class:`cpi.timing.StageTimer` (a fresh one by default); its rows,
    and the workers' rows, are appended to ``<out>/timings.csv``.
    """
    timer = timer or StageTimer()
    with torch_threads(config.threads):
        prepared = prepare_condition(config, Path(out_dir), timer)
        results = run_seed_jobs(prepared.seed_jobs(), config.workers, config.threads)
    return gather_condition(prepared, results, timer)


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run the block with ``threads`` torch intra-op threads (0 = leave as is), restoring them after."""
    import torch

    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(old)


@dataclass(frozen=True)
class SeedJob:
    """Everything one seed's stages need (picklable: it travels to a worker process)."""

    config: ControlledConfig
    out: Path
    seed: int
    model_dir: Path
    model_fp: str
    base_link: Path
    items: tuple[Any, ...]
    known: "pd.DataFrame"


@dataclass
class SeedResult:
    """One seed's tables: ``items`` (item x step), ``summary`` (step: accuracy, margin and intervals over
    all the seed's evaluated items), ``probe`` / ``probe_steps`` (None without probe items), ``timings`` (StageTimer rows)."""

    seed: int
    counts: dict[str, Any]
    items: "pd.DataFrame"
    summary: "pd.DataFrame"
    probe: "pd.DataFrame | None"
    probe_steps: "pd.DataFrame | None"
    timings: list[dict[str, Any]]


@dataclass
class PreparedCondition:
    """A condition after its shared stage (the base's closed-book knowledge), before its seeds run."""

    config: ControlledConfig
    out: Path
    model_dir: Path
    model_fp: str
    base_link: Path
    items: tuple[Any, ...]
    known: "pd.DataFrame"
    rates: "pd.DataFrame"

    def seed_jobs(self) -> list[SeedJob]:
        return [SeedJob(self.config, self.out, seed, self.model_dir, self.model_fp, self.base_link, self.items,
                        self.known) for seed in self.config.seeds]


def prepare_condition(cfg: ControlledConfig, out: Path, timer: Any) -> PreparedCondition:
    """Write the run's config, link the base as step 0 and measure (or read back) the base's knowledge."""
    from fullscale.models import resolve_model

    out.mkdir(parents=True, exist_ok=True)
    save_run(out, cfg)
    (out / "config.json").replace(out / "controlled_config.json")
    model_dir = Path(resolve_model(cfg.model))
    if not (model_dir / "config.json").is_file():
        raise CpiError(f"field 'model': {cfg.model} is not a checkpoint folder with config.json ({model_dir})")
    model_fp = model_fingerprint(model_dir)
    base_link = _link_base(out, model_dir)
    items = tuple(knowledge_items(cfg.knowledge))
    cache = Path(cfg.knowledge_cache) if cfg.knowledge_cache else out / "knowledge"
    known, rates = timer.run("knowledge", _call, cfg.workers > 1, cfg.threads, stage_knowledge, cfg, model_dir,
                             model_fp, cache, items)
    return PreparedCondition(cfg, out, model_dir, model_fp, base_link, items, known, rates)


def _call(in_worker: bool, threads: int, fn: Any, *args: Any) -> Any:
    """``fn(*args)``: here, or with ``in_worker`` in one spawned worker process on ``threads`` torch
    threads, so that the parent never holds a model (with ``workers`` seeds running beside it, the
    parent's memory would add to theirs)."""
    if not in_worker:
        return fn(*args)
    with worker_pool(1, threads) as pool:
        return pool.apply(fn, args)


def run_seed(job: SeedJob) -> SeedResult:
    """One seed's stages: mixture, finetune, evaluate, probe (each skipped when its folder is complete)."""
    from fullscale.scoring import summarize_items
    from mechinterp.link import steps_table

    cfg, seed, timer = job.config, job.seed, StageTimer()
    seed_dir = job.out / f"seed-{seed}"
    data = timer.run(f"mixture[{seed}]", stage_mixture, cfg, seed, job.items, job.known, seed_dir)
    ft_dir = timer.run(f"finetune[{seed}]", stage_finetune, cfg, seed, job.model_dir, job.model_fp, data, seed_dir)
    it, _ = timer.run(f"evaluate[{seed}]", stage_evaluate, cfg, seed, job.base_link, ft_dir, data, seed_dir)
    # the seed's trajectory pooled over its held-out conflicts (the evaluation's summary has one row per
    # dataset x category; an unweighted mean of those rows would not be the seed's accuracy)
    summ = summarize_items(it, by=("step",), n_boot=cfg.evaluate.n_boot, add_all_category=False)
    probe = steps = None
    if cfg.evaluate.probe_items:
        probe = timer.run(f"probe[{seed}]", stage_probe, cfg, seed, job.base_link, ft_dir, data, seed_dir)
        steps = steps_table(probe).assign(seed=seed)
        probe = probe.assign(seed=seed)
    return SeedResult(seed=seed, counts={"seed": seed, **data.counts}, items=it.assign(seed=seed),
                      summary=summ.assign(seed=seed), probe=probe, probe_steps=steps, timings=timer.rows)


def run_seed_jobs(jobs: Sequence[SeedJob], workers: int, threads: int) -> list[SeedResult]:
    """Run ``jobs`` in order (``workers`` <= 1) or ``workers`` at a time in spawned processes with
    ``threads`` torch threads each; results in the order of ``jobs`` either way.

    An interrupt or an error stops the other workers at once (what they finished is on disk and a
    rerun resumes from it); a worker's :class:`~cpi.errors.CpiError` reaches the caller unchanged.
    """
    if workers <= 1 or len(jobs) <= 1:
        return [run_seed(job) for job in jobs]
    with worker_pool(min(workers, len(jobs)), threads) as pool:
        return list(pool.imap(_run_seed_in_worker, jobs))


@contextlib.contextmanager
def worker_pool(processes: int, threads: int) -> Iterator[Any]:
    """A pool of ``processes`` spawned workers on ``threads`` torch threads each, stopped at once when
    the block raises or is interrupted (what the workers finished is on disk; a rerun resumes)."""
    import multiprocessing

    pool = multiprocessing.get_context("spawn").Pool(processes, initializer=_init_worker, initargs=(threads,))
    try:
        yield pool
    except BaseException:
        pool.terminate()
        raise
    else:
        pool.close()
    finally:
        pool.join()


def _run_seed_in_worker(job: SeedJob) -> SeedResult:
    """:func:`run_seed` in a worker: stopped by the parent (SIGTERM while finetuning: the step is
    finished and saved first), it exits quietly; the parent prints the one line on how to resume."""
    try:
        return run_seed(job)
    except KeyboardInterrupt:
        os._exit(EXIT_INTERRUPTED)


def _init_worker(threads: int) -> None:
    """A worker leaves SIGINT to the parent (which stops the pool) and uses ``threads`` torch threads."""
    import signal

    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if threads:
        torch.set_num_threads(threads)


def gather_condition(prep: PreparedCondition, results: Sequence[SeedResult], timer: Any) -> ControlledRun:
    """The condition's tables from its seeds' results, written to its folder with the verdict."""
    import pandas as pd

    cfg, out = prep.config, prep.out
    items_t = pd.concat([r.items for r in results], ignore_index=True)
    items_t["step"] = items_t["step"].astype(int)
    traj = pd.concat([r.summary for r in results], ignore_index=True)
    traj["step"] = traj["step"].astype(int)
    keep = ["seed", "step", "n"] + [c for c in traj.columns if c.startswith(("cf_acc", "param_acc", "mean_margin",
                                                                              "context_pref_rate", "mean_reliance"))]
    traj = traj[keep].sort_values(["seed", "step"]).reset_index(drop=True)
    probed = [r for r in results if r.probe is not None]
    probe = pd.concat([r.probe for r in probed], ignore_index=True) if probed else None
    psteps = pd.concat([r.probe_steps for r in probed], ignore_index=True) if probed else None
    stat = inversion_statistic(items_t, n_boot=max(cfg.evaluate.n_boot, 200), seed=0)
    counts_t = pd.DataFrame([r.counts for r in results])
    tables = {"trajectory": traj, "counts": counts_t, "rates": prep.rates,
              "items": items_t[[c for c in ("seed", "checkpoint", "step", "item_id", "dataset", "category",
                                            "cf_correct", "param_correct", "outcome", "margin", "output")
                                if c in items_t.columns]]}
    if psteps is not None:
        tables["probe_steps"] = psteps
    for name, table in tables.items():
        atomic_write_table(table, out / f"{name}.csv")
    atomic_write_json(out / "verdict.json", stat)
    for r in results:
        timer.rows.extend(dict(row, invocation=timer.started) for row in r.timings)
    timings = timer.table()
    old = out / "timings.csv"  # earlier invocations' rows are kept (a resumed run's stages take ~0 s)
    atomic_write_table(pd.concat([pd.read_csv(old), timings], ignore_index=True) if old.is_file() else timings, old)
    return ControlledRun(out=out, config=cfg, known=prep.known, rates=prep.rates, counts=counts_t, items=items_t,
                         trajectory=traj, probe=probe, probe_steps=psteps, verdict=stat, timings=timings)


__all__ = ["ControlledConfig", "ControlledRun", "EvalSettings", "KnowledgeSettings", "PreparedCondition", "SeedJob",
           "SeedResult", "TrainSettings", "gather_condition", "inversion_statistic", "model_fingerprint",
           "prepare_condition", "run_controlled", "run_seed", "run_seed_jobs", "torch_threads", "verdict_line"]
