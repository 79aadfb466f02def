"""The controlled experiment's conditions run side by side (``cpi controlled sweep``, the main job).

Each condition is the base :class:`~experiments.controlled.config.ControlledConfig` with the changes of
its row in the conditions file (:mod:`experiments.controlled.conditions`; ``conditions.yaml`` by
default). Every condition runs in ``<out>/<name>/`` over the base's seeds, and all share one knowledge
cache (``<out>/knowledge``), so the base is scored closed-book once. The comparisons (paired on the
held-out items the conditions share, at every checkpoint) come from the conditions' ``compare_to``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

from cpi.io import atomic_write_table
from cpi.timing import StageTimer
from experiments.controlled.conditions import (
    ComposedCondition,
    comparison_pairs,
    compose,
    load_conditions,
    parse_names,
)
from experiments.controlled.config import ControlledConfig
from experiments.controlled.experiment import ControlledRun, gather_condition, prepare_condition, run_seed_jobs
from experiments.controlled.pool import torch_threads
from experiments.controlled.statistics import comparison_table

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

#: the shipped conditions (name -> :class:`~experiments.controlled.conditions.Condition`)
CONDITIONS = load_conditions()


@dataclass
class SweepResult:
    """``table``: :func:`~experiments.controlled.figures.condition_table` rows with a ``condition`` column;
    ``verdicts``: one row per condition x metric
    (:func:`~experiments.controlled.statistics.inversion_statistic`); ``comparison``: the paired
    :func:`~experiments.controlled.statistics.comparison_table` of the conditions' ``compare_to`` pairs;
    ``composed``: each condition's config and the user's settings it replaced or kept."""

    out: Path
    runs: dict[str, ControlledRun]
    table: "pd.DataFrame"
    verdicts: "pd.DataFrame"
    comparison: "pd.DataFrame"
    composed: dict[str, ComposedCondition]


def run_controlled_sweep(base: ControlledConfig, conditions: Sequence[str] | str, out_dir: str | Path,
                         conditions_file: Optional[str | Path] = None,
                         reference: Optional[ControlledConfig] = None, field_prefix: str = "") -> SweepResult:
    """Run (or resume) every condition into ``out_dir/<name>``; write ``sweep.csv``, ``verdicts.csv``
    and ``comparison.csv``.

    ``conditions``: names (or ``"a,b"``) of ``conditions_file`` (default: the shipped one);
    ``reference``: the runner's default config, to tell the user's settings (see
    :func:`~experiments.controlled.conditions.compose`; ``field_prefix`` prefixes field names in its
    errors). The base's knowledge is measured once (shared cache); then every condition x seed runs,
    ``base.workers`` at a time. Every condition is composed and validated before any work.
    """
    import pandas as pd

    from experiments.controlled.figures import condition_table

    out = Path(out_dir)
    table_of = load_conditions(conditions_file) if conditions_file else CONDITIONS
    names = parse_names(conditions, table_of)
    composed = compose(base, names, table_of, reference, knowledge_cache=str(out / "knowledge"),
                       field_prefix=field_prefix)
    timers = {name: StageTimer() for name in names}
    with torch_threads(base.threads):
        prepared = {name: prepare_condition(c.config, out / name, timers[name]) for name, c in composed.items()}
        jobs = [(name, job) for name, prep in prepared.items() for job in prep.seed_jobs()]
        results = run_seed_jobs([job for _, job in jobs], base.workers, base.threads)
    runs, frames, verdicts = {}, [], []
    for name, prep in prepared.items():
        mine = [r for (owner, _), r in zip(jobs, results) if owner == name]
        run = gather_condition(prep, mine, timers[name])
        runs[name] = run
        frames.append(condition_table(run.items, run.probe_steps, n_boot=prep.config.evaluate.n_boot).assign(condition=name))
        for metric, stat in run.verdicts.items():
            verdicts.append({"condition": name, **{k: v for k, v in stat.items() if not isinstance(v, list)}})
    table = pd.concat(frames, ignore_index=True)
    vt = pd.DataFrame(verdicts)
    comparison = comparison_table({name: run.items for name, run in runs.items()}, comparison_pairs(names, table_of))
    atomic_write_table(table, out / "sweep.csv")
    atomic_write_table(vt, out / "verdicts.csv")
    if len(comparison):
        atomic_write_table(comparison, out / "comparison.csv")
    return SweepResult(out=out, runs=runs, table=table, verdicts=vt, comparison=comparison, composed=composed)


__all__ = ["CONDITIONS", "SweepResult", "run_controlled_sweep"]
