"""The controlled experiment's conditions: rho low / middle / 1.0 (the control) and the mitigations.

Each condition is the base :class:`~experiments.controlled.experiment.ControlledConfig` with a few
fields changed (:data:`CONDITIONS`); the mitigations start from the base's own ``rho``. Every
condition runs in ``<out>/<name>/`` over the base's seeds, and all share one knowledge cache
(``<out>/knowledge``), so the base is scored closed-book once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from cpi.errors import ConfigError
from cpi.io import atomic_write_table
from cpi.timing import StageTimer
from experiments.controlled.experiment import (
    ControlledConfig,
    ControlledRun,
    gather_condition,
    prepare_condition,
    run_seed_jobs,
    torch_threads,
)

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

#: condition name -> changes to the base config (dotted keys)
CONDITIONS: dict[str, dict[str, Any]] = {
    "rho_low": {"mixture.rho": 0.1},
    "rho_mid": {"mixture.rho": 0.5},
    "rho_1": {"mixture.rho": 1.0},
    "filter": {"finetune.filter_fraction": 0.25},
    "augment": {"mixture.augment_fraction": 0.1},
    "qk_only": {"finetune.method": "qk_only", "finetune.learning_rate": 1e-4},
}


def condition_config(base: ControlledConfig, name: str, out: Path) -> ControlledConfig:
    """The config of condition ``name`` (sharing the knowledge cache ``<out>/knowledge``)."""
    if name not in CONDITIONS:
        raise ConfigError(f"field 'conditions': unknown condition {name!r} (known: {', '.join(CONDITIONS)})")
    return base.replace(**CONDITIONS[name], knowledge_cache=base.knowledge_cache or str(out / "knowledge"))


#: the mitigations, compared at the end with the unmitigated ``rho_mid`` (whose rho they keep)
MITIGATIONS = ("filter", "augment", "qk_only")


@dataclass
class SweepResult:
    """``table``: :func:`~experiments.controlled.figures.condition_table` rows with a ``condition`` column;
    ``verdicts``: one row per condition (:func:`~experiments.controlled.experiment.inversion_statistic`);
    ``comparison``: :func:`comparison_table` of the runs."""

    out: Path
    runs: dict[str, ControlledRun]
    table: "pd.DataFrame"
    verdicts: "pd.DataFrame"
    comparison: "pd.DataFrame"


def run_controlled_sweep(base: ControlledConfig, conditions: Sequence[str], out_dir: str | Path) -> SweepResult:
    """Run (or resume) every condition into ``out_dir/<name>``; write ``sweep.csv`` and ``verdicts.csv``.

    The base's knowledge is measured once (shared cache); then every condition x seed runs,
    ``base.workers`` at a time (:func:`~experiments.controlled.experiment.run_seed_jobs`).
    """
    import pandas as pd

    from experiments.controlled.figures import condition_table

    out = Path(out_dir)
    cfgs = {name: condition_config(base, name, out) for name in conditions}  # all validated before any work
    timers = {name: StageTimer() for name in cfgs}
    with torch_threads(base.threads):
        prepared = {name: prepare_condition(cfg, out / name, timers[name]) for name, cfg in cfgs.items()}
        jobs = [(name, job) for name, prep in prepared.items() for job in prep.seed_jobs()]
        results = run_seed_jobs([job for _, job in jobs], base.workers, base.threads)
    runs, frames, verdicts = {}, [], []
    for name, prep in prepared.items():
        mine = [r for (owner, _), r in zip(jobs, results) if owner == name]
        run = gather_condition(prep, mine, timers[name])
        runs[name] = run
        frames.append(condition_table(run.items, run.probe_steps, n_boot=prep.config.evaluate.n_boot).assign(condition=name))
        v = {k: val for k, val in run.verdict.items() if not isinstance(val, list)}
        verdicts.append({"condition": name, **v})
    table = pd.concat(frames, ignore_index=True)
    vt = pd.DataFrame(verdicts)
    comparison = comparison_table({name: run.items for name, run in runs.items()})
    atomic_write_table(table, out / "sweep.csv")
    atomic_write_table(vt, out / "verdicts.csv")
    if len(comparison):
        atomic_write_table(comparison, out / "comparison.csv")
    return SweepResult(out=out, runs=runs, table=table, verdicts=vt, comparison=comparison)


def comparison_table(items: dict[str, "pd.DataFrame"], n_boot: int = 2000) -> "pd.DataFrame":
    """The paper's predictions at the last checkpoint, one row per pair and metric (``cf_correct``, ``margin``):

    - ``rho_1 - <condition>`` for every other condition: the control (no non-context-critical data)
      should end *more* context-reliant than a mixture, so ``diff`` > 0 is the predicted sign;
    - ``<mitigation> - rho_mid`` for each of :data:`MITIGATIONS` run beside ``rho_mid``: a mitigation
      should restore context reliance, ``diff`` > 0 predicted.

    Columns: ``comparison`` (``"b - a"``), ``a``, ``b`` (condition names), then :func:`final_difference`'s
    ``metric, mean_a, mean_b, diff, lo, hi, n_a, n_b, level``. Empty when no pair applies.
    """
    import pandas as pd

    pairs = [(name, "rho_1") for name in items if name != "rho_1" and "rho_1" in items]
    pairs += [("rho_mid", name) for name in MITIGATIONS if name in items and "rho_mid" in items]
    rows = []
    for a, b in pairs:
        for metric in ("cf_correct", "margin"):
            d = final_difference(items[a], items[b], metric=metric, n_boot=n_boot)
            d["mean_a"], d["mean_b"] = d.pop("a"), d.pop("b")
            rows.append({"comparison": f"{b} - {a}", "a": a, "b": b, **d})
    return pd.DataFrame(rows)


def final_difference(items_a: "pd.DataFrame", items_b: "pd.DataFrame", metric: str = "cf_correct",
                     n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> dict[str, Any]:
    """``metric`` at the last checkpoint, condition b minus condition a, with a bootstrap interval.

    The paper's controlled comparison in one number: with non-context-critical data (a, rho < 1)
    context reliance should end *lower* than in the control (b, rho = 1), so ``diff`` > 0 is the
    predicted sign. Units are seed x item pairs of each condition, resampled within seed and
    independently per condition; ``metric`` is ``cf_correct`` or ``margin`` (nats).
    """
    import numpy as np

    def last(items: "pd.DataFrame") -> "tuple[np.ndarray, list[np.ndarray]]":
        final = items[items["step"] == items["step"].max()]
        x = final[metric].to_numpy(dtype=float)
        seeds = final["seed"].to_numpy()
        return x, [np.flatnonzero(seeds == s) for s in sorted(set(seeds))]

    (xa, ga), (xb, gb) = last(items_a), last(items_b)
    rng = np.random.default_rng(seed)
    boot = np.empty(n_boot)
    for i in range(n_boot):
        ia = np.concatenate([rng.choice(g, size=len(g)) for g in ga])
        ib = np.concatenate([rng.choice(g, size=len(g)) for g in gb])
        boot[i] = xb[ib].mean() - xa[ia].mean()
    lo, hi = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2])
    return {"metric": metric, "a": float(xa.mean()), "b": float(xb.mean()), "diff": float(xb.mean() - xa.mean()),
            "lo": float(lo), "hi": float(hi), "n_a": len(xa), "n_b": len(xb), "level": level}


__all__ = ["CONDITIONS", "MITIGATIONS", "SweepResult", "comparison_table", "condition_config", "final_difference",
           "run_controlled_sweep"]
