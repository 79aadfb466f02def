"""The paper's controlled experiment on a real pretrained model: knowledge -> mixture -> finetune -> evaluate -> probe.

One :class:`~experiments.controlled.config.ControlledConfig` is one *condition* (a base model, a mixture
with its ``rho``, finetuning settings, evaluation settings) run over several seeds. :func:`run_controlled`
writes one run folder::

    <out>/controlled_config.json           the config + version + git hash
    <out>/knowledge/<model>-<key>/         known.csv (closed-book rank per fact), rates.csv (per relation)
                                           -- cached per model fingerprint and knowledge settings; a sweep
                                           shares one cache between its conditions (``knowledge_cache``)
    <out>/base/checkpoint-0 -> the base    (a link: the base is step 0 of every trajectory)
    <out>/seed-<s>/data-<key>/             ift.jsonl (finetuning records), records.csv (kind per record),
                                           heldout.jsonl (held-out conflicts), counts.json; a band arm's
                                           selection.csv (its candidates measured on the base)
    <out>/seed-<s>/finetune-<key>/         ``fullscale.finetune.run_finetune`` output (checkpoint-<step>/)
    <out>/seed-<s>/eval-<key>/             eval.jsonl (the held-out conflicts evaluated) and
                                           ``fullscale.evaluate`` output (items.csv, summary.csv)
    <out>/seed-<s>/probe-<key>/            ``mechinterp.probe_trajectory`` output (probe.csv)
    <out>/trajectory.csv, items.csv, probe_steps.csv, verdict.json, timings.csv

Every stage folder is named by a hash of everything that determines its content
(:mod:`experiments.controlled.stages`), so a stage is skipped exactly when its inputs are unchanged,
a changed setting never mixes with old outputs, and an interrupted run resumes with identical numbers.
The verdict and its statistics are :mod:`experiments.controlled.statistics`: on every metric of
:data:`~experiments.controlled.statistics.METRICS` (M_C first), a fall test whose peak is chosen on
other seeds' other items, with hierarchical-bootstrap intervals and a seed-level test.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from cpi.errors import CpiError
from cpi.io import atomic_write_json, atomic_write_table, save_run
from cpi.timing import StageTimer
from experiments.controlled.config import ControlledConfig, EvalSettings, KnowledgeSettings, TrainSettings
from experiments.controlled.keys import content_key, model_fingerprint
from experiments.controlled.pool import call, map_jobs, torch_threads
from experiments.controlled.selection import mixture_selector
from experiments.controlled.stages import (
    knowledge_items,
    link_base,
    rescore_answers,
    stage_evaluate,
    stage_finetune,
    stage_knowledge,
    stage_mixture,
    stage_probe,
)
from experiments.controlled.statistics import METRICS, add_metrics, inversion_statistic, verdict_line

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

#: columns of a condition's items.csv (those the evaluation wrote)
ITEM_COLUMNS = ("seed", "checkpoint", "step", "item_id", "dataset", "category", "m_c", "margin", "logp_context",
                "logp_parametric", "cf_correct", "param_correct", "outcome", "neither", "answer_text", "output")


@dataclass
class ControlledRun:
    """A finished condition: its folder, config and tidy tables.

    ``known``/``rates``: the base's closed-book table and per-relation rates; ``counts``: mixture counts
    per seed; ``items``: per seed x item x step scores; ``trajectory``: per seed x step summary
    (``cf_acc``, ``param_acc``, ``mean_margin`` with intervals); ``probe_steps``: per seed x step
    probe summary (``mechinterp.steps_table``); ``probe``: the raw probe tables (seed column);
    ``verdicts``: :func:`~experiments.controlled.statistics.inversion_statistic`'s result per metric
    (M_C, margin, containment); ``verdict``: the primary one (M_C); ``timings``: wall time and peak
    memory per stage.
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
    verdicts: dict[str, dict[str, Any]]
    timings: "pd.DataFrame"

    @property
    def verdict(self) -> dict[str, Any]:
        """The verdict on the primary metric (the first of ``verdicts``: M_C when the log-probs were scored)."""
        return next(iter(self.verdicts.values()))


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
    cache: Path


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
    cache: Path

    def seed_jobs(self) -> list[SeedJob]:
        return [SeedJob(self.config, self.out, seed, self.model_dir, self.model_fp, self.base_link, self.items,
                        self.known, self.cache) for seed in self.config.seeds]


def prepare_condition(cfg: ControlledConfig, out: Path, timer: Any) -> PreparedCondition:
    """Write the run's config, link the base as step 0 and measure (or read back) the base's knowledge."""
    from fullscale.models import resolve_model

    dtype = cfg.resolved_dtype()  # refused here (bfloat16 where unsupported) before anything is written
    out.mkdir(parents=True, exist_ok=True)
    save_run(out, cfg, dtype=dtype)
    (out / "config.json").replace(out / "controlled_config.json")
    model_dir = Path(resolve_model(cfg.model))
    if not (model_dir / "config.json").is_file():
        raise CpiError(f"field 'model': {cfg.model} is not a checkpoint folder with config.json ({model_dir})")
    model_fp = model_fingerprint(model_dir)
    base_link = link_base(out, model_dir)
    items = tuple(knowledge_items(cfg.knowledge))
    cache = Path(cfg.knowledge_cache) if cfg.knowledge_cache else out / "knowledge"
    known, rates = timer.run("knowledge", call, cfg.workers > 1, cfg.threads, stage_knowledge, cfg, model_dir,
                             model_fp, cache, items)
    return PreparedCondition(cfg, out, model_dir, model_fp, base_link, items, known, rates, cache)


def run_seed(job: SeedJob) -> SeedResult:
    """One seed's stages: mixture, finetune, evaluate, probe (each skipped when its folder is complete)."""
    from fullscale.scoring import summarize_items
    from mechinterp.link import steps_table

    cfg, seed, timer = job.config, job.seed, StageTimer()
    seed_dir = job.out / f"seed-{seed}"
    select = mixture_selector(cfg, seed, job.items, job.model_dir, job.model_fp, job.cache)
    data = timer.run(f"mixture[{seed}]", stage_mixture, cfg, seed, job.items, job.known, seed_dir, select)
    ft_dir = timer.run(f"finetune[{seed}]", stage_finetune, cfg, seed, job.model_dir, job.model_fp, data, seed_dir)
    it, _ = timer.run(f"evaluate[{seed}]", stage_evaluate, cfg, seed, job.base_link, ft_dir, data, seed_dir)
    it = rescore_answers(it, data.evaluated)  # the answer ends at its first line break
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
    """:func:`run_seed` for every job, ``workers`` at a time (:func:`~experiments.controlled.pool.map_jobs`);
    results in the order of ``jobs``."""
    return map_jobs(run_seed, jobs, workers, threads)


def gather_condition(prep: PreparedCondition, results: Sequence[SeedResult], timer: Any) -> ControlledRun:
    """The condition's tables from its seeds' results, written to its folder with the verdict."""
    import pandas as pd

    cfg, out = prep.config, prep.out
    items_t = add_metrics(pd.concat([r.items for r in results], ignore_index=True))
    items_t["step"] = items_t["step"].astype(int)
    traj = pd.concat([r.summary for r in results], ignore_index=True)
    traj["step"] = traj["step"].astype(int)
    keep = ["seed", "step", "n"] + [c for c in traj.columns if c.startswith(("cf_acc", "param_acc", "mean_margin",
                                                                              "context_pref_rate", "mean_reliance"))]
    traj = traj[keep].sort_values(["seed", "step"]).reset_index(drop=True)
    extra = {c: n for c, n in (("m_c", "mean_m_c"), ("neither", "neither_rate")) if c in items_t.columns}
    if extra:
        per = items_t.groupby(["seed", "step"], as_index=False)[list(extra)].mean().rename(columns=extra)
        traj = traj.merge(per, on=["seed", "step"], how="left", validate="one_to_one")
    probed = [r for r in results if r.probe is not None]
    probe = pd.concat([r.probe for r in probed], ignore_index=True) if probed else None
    psteps = pd.concat([r.probe_steps for r in probed], ignore_index=True) if probed else None
    verdicts = {m: inversion_statistic(items_t, n_boot=max(cfg.evaluate.n_boot, 200), seed=0, metric=m)
                for m in METRICS if m in items_t.columns}
    if not verdicts:
        raise CpiError(f"{out}: the evaluation scored none of {', '.join(METRICS)}")
    counts_t = pd.DataFrame([r.counts for r in results])
    tables = {"trajectory": traj, "counts": counts_t, "rates": prep.rates,
              "items": items_t[[c for c in ITEM_COLUMNS if c in items_t.columns]]}
    if psteps is not None:
        tables["probe_steps"] = psteps
    for name, table in tables.items():
        atomic_write_table(table, out / f"{name}.csv")
    atomic_write_json(out / "verdict.json", {"primary": next(iter(verdicts)), **verdicts})
    for r in results:
        timer.rows.extend(dict(row, invocation=timer.started) for row in r.timings)
    timings = timer.table()
    old = out / "timings.csv"  # earlier invocations' rows are kept (a resumed run's stages take ~0 s)
    atomic_write_table(pd.concat([pd.read_csv(old), timings], ignore_index=True) if old.is_file() else timings, old)
    return ControlledRun(out=out, config=cfg, known=prep.known, rates=prep.rates, counts=counts_t, items=items_t,
                         trajectory=traj, probe=probe, probe_steps=psteps, verdicts=verdicts, timings=timings)


__all__ = ["ITEM_COLUMNS", "ControlledConfig", "ControlledRun", "EvalSettings", "KnowledgeSettings",
           "PreparedCondition", "SeedJob", "SeedResult", "TrainSettings", "content_key", "gather_condition",
           "inversion_statistic", "model_fingerprint", "prepare_condition", "run_controlled", "run_seed",
           "run_seed_jobs", "torch_threads", "verdict_line"]
