"""The README's main job (``cpi run``, ``make run``): the theory figures, then the paper's controlled
experiment on a real pretrained model for one ρ and the control (ρ = 1).

One :class:`MainConfig` drives it; :func:`run_main` returns a :class:`MainResult`. The experiment is
:func:`experiments.controlled.sweep.run_controlled_sweep` (knowledge once, every condition × seed in
``experiment.workers`` processes), so the run folder is the sweep's (``<out>/<condition>/...``,
``sweep.csv``, ``verdicts.csv``) and resumes stage by stage. Figures go to ``<out>/figures/``
unless ``figures`` names a folder (``make run`` passes ``figures/``).

    >>> cfg = MainConfig.quick()
    >>> cfg.conditions, cfg.experiment.seeds, cfg.out
    (('rho_mid', 'rho_1'), (0,), 'runs/main_quick')
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from cpi.config import Config
from cpi.errors import ConfigError
from cpi.timing import StageTimer
from experiments.controlled.config import ControlledConfig, EvalSettings, KnowledgeSettings, TrainSettings
from experiments.controlled.mixture import MixtureConfig

if TYPE_CHECKING:  # pragma: no cover
    from experiments.controlled.sweep import SweepResult


def default_experiment() -> ControlledConfig:
    """The main job's experiment, sized to the budget (≤ 15 minutes and ≤ 6 GB on 2 CPU cores; measured
    in BENCHMARKS.md): SmolLM2-135M-Instruct, 3 seeds run two at a time (one process per core), the
    base scored closed-book on the first 100 facts of CF_World_Facts and of CF_Bio, 48 records per
    seed (12 LoRA steps of 4, a checkpoint every 4; gradient checkpointing keeps two workers under
    6 GB), 12 held-out conflicts per seed evaluated at the 4 checkpoints (36 seed x item units per
    condition; generation up to 20 new tokens, the answer cut at its first line break), 4 of them probed."""
    return ControlledConfig(
        model="smollm2-135m-instruct", seeds=(0, 1, 2), workers=2, threads=1,
        knowledge=KnowledgeSettings(datasets=("CF_World_Facts", "CF_Bio"), n_candidates=8, max_items=100),
        mixture=MixtureConfig(n_examples=48, rho=0.5, heldout_fraction=0.5, min_heldout=12),
        finetune=TrainSettings(method="lora", steps=12, save_steps=4, batch_size=4, learning_rate=3e-4,
                               gradient_checkpointing=True),
        evaluate=EvalSettings(max_items=12, n_boot=1000, probe_items=4, probe_batch_size=4),
    )


#: the theory figures of the main job: the trajectory, the comparison, the phase diagram and eta*
MAIN_THEORY_FIGURES = ("theory_trajectory", "theory_comparison", "theory_phase_diagram", "theory_eta_star")


@dataclass(frozen=True)
class MainConfig(Config):
    """``cpi run``: ``experiment`` (a :class:`~experiments.controlled.experiment.ControlledConfig`,
    nested keys ``experiment.mixture.rho``, ``experiment.seeds``, ...) run for each of ``conditions``
    (names of :data:`~experiments.controlled.sweep.CONDITIONS`) into ``out``; the theory figures first
    the theory figures named in ``theory_figures`` (the four of the theory's main results by default,
    seconds; ``cpi theory figures`` makes all seven; empty = none; ``theory_quick``: their quick form)."""

    experiment: ControlledConfig = field(default_factory=default_experiment)
    "the controlled experiment run for each condition (nested keys: experiment.seeds, experiment.mixture.rho)"
    conditions: tuple[str, ...] = ("rho_mid", "rho_1")
    "conditions to run (names in the conditions file; rho_mid keeps experiment.mixture.rho)"
    conditions_file: Optional[str] = None
    "YAML file of conditions (default: experiments/controlled/conditions.yaml)"
    out: str = "runs/main"
    "run folder, resumable (--quick starts from runs/main_quick)"
    figures: Optional[str] = None
    "folder for the figures (None: <out>/figures/)"
    theory_figures: tuple[str, ...] = MAIN_THEORY_FIGURES
    "theory figures made first (names of theory.figures.FIGURES)"
    theory_quick: bool = False
    "the quick form of the theory figures"
    error_rate_sims: int = 200
    "simulated runs behind the printed false-positive rate and power of the verdict at the run's design (0: none)"

    def validate(self) -> None:
        from experiments.controlled.conditions import compose, load_conditions, parse_names

        table = load_conditions(self.conditions_file)
        names = parse_names(self.conditions, table)
        compose(self.experiment, names, table, reference_experiment(self), field_prefix="experiment.")
        if self.error_rate_sims < 0:
            raise ConfigError(f"field 'error_rate_sims': must be >= 0, got {self.error_rate_sims}")
        from theory.figures import FIGURES

        unknown = [f for f in self.theory_figures if f not in FIGURES]
        if unknown:
            raise ConfigError(f"field 'theory_figures': unknown figure {unknown[0]!r} (known: {', '.join(FIGURES)})")
        if not self.out:
            raise ConfigError("field 'out': give a run folder")

    @classmethod
    def quick(cls, **changes: Any) -> "MainConfig":
        """The ``--quick`` form CI runs (a smoke test, not a result): the quick theory figures and
        :meth:`ControlledConfig.quick` for the same two conditions, into ``runs/main_quick``."""
        base = cls(experiment=ControlledConfig.quick(workers=2), out="runs/main_quick", theory_quick=True,
                   error_rate_sims=100)
        return base.replace(**changes) if changes else base

    @property
    def figures_dir(self) -> Path:
        return Path(self.figures) if self.figures else Path(self.out) / "figures"


@dataclass
class MainResult:
    """``sweep``: the experiment (runs per condition, ``table``, ``verdicts``); ``figures``: written
    paths; ``timings``: wall time and peak memory of the theory figures and of each condition's stages;
    ``comparison``: the sweep's :func:`~experiments.controlled.sweep.comparison_table` (each condition
    against the control ``rho_1`` at the last checkpoint, counterfactual accuracy and margin);
    ``error_rates``: the verdict's simulated false-positive rate and power at the run's design
    (:func:`~experiments.controlled.statistics.error_rates`); ``wall_s``: the whole job."""

    config: MainConfig
    sweep: "SweepResult"
    figures: list[Path]
    timings: Any
    wall_s: float
    error_rates: dict = field(default_factory=dict)

    @property
    def comparison(self) -> Any:
        """The sweep's comparison table (``sweep.comparison``)."""
        return self.sweep.comparison


def run_main(config: MainConfig) -> MainResult:
    """Theory figures, then the experiment (resumable), then its figures; returns the tables."""
    import pandas as pd

    from experiments.controlled.figures import make_condition_figures, plot_sweep_panels, save_figure
    from experiments.controlled.sweep import run_controlled_sweep

    t0 = time.perf_counter()
    figures = config.figures_dir
    timer = StageTimer()
    written: list[Path] = []
    if config.theory_figures:
        from theory.figures import make_all_figures

        written += timer.run("theory_figures", make_all_figures, figures, quick=config.theory_quick,
                             names=config.theory_figures)
    sweep = timer.run("experiment", run_controlled_sweep, config.experiment, config.conditions, Path(config.out),
                      config.conditions_file, reference_experiment(config), "experiment.")
    for name, run in sweep.runs.items():
        written += make_condition_figures(run, figures, prefix=f"controlled_{name}")
    written += save_figure(plot_sweep_panels(sweep.table), figures, "controlled_sweep")
    rates = {}
    if config.error_rate_sims:
        from experiments.controlled.statistics import error_rates

        v = next(iter(sweep.runs.values())).verdict
        rates = timer.run("error_rates", error_rates, v["n_seeds"], v["n_units"] // max(v["n_seeds"], 1),
                          v["n_steps"], config.error_rate_sims)
        rates["permuted"] = timer.run("permuted_plateaus", permuted_rates, sweep, config.error_rate_sims)
    stage_rows = [run.timings.assign(condition=name) for name, run in sweep.runs.items()]
    timings = pd.concat([timer.table().assign(condition="")] + stage_rows, ignore_index=True)
    return MainResult(config=config, sweep=sweep, figures=written, timings=timings,
                      wall_s=time.perf_counter() - t0, error_rates=rates)


def permuted_rates(sweep: "SweepResult", n_perm: int) -> dict[str, dict]:
    """Per condition: the share of "rise then fall" verdicts (on the primary metric) when the order of its
    checkpoints after the first is permuted within seed (:func:`~experiments.controlled.statistics.
    permuted_plateau_rate`); conditions with fewer than 3 checkpoints are left out."""
    from experiments.controlled.statistics import permuted_plateau_rate

    out = {}
    for name, run in sweep.runs.items():
        if run.verdict["n_steps"] >= 3:
            out[name] = permuted_plateau_rate(run.items, run.verdict["metric"], n_perm=n_perm)
    return out


def reference_experiment(config: MainConfig) -> ControlledConfig:
    """The main job's default experiment that ``config.experiment`` is compared with to tell the user's
    settings (the quick one when ``config`` looks like the quick form)."""
    quick = ControlledConfig.quick(workers=2)
    return quick if config.experiment.finetune == quick.finetune else default_experiment()


def summary_lines(result: MainResult) -> list[str]:
    """What ``cpi run`` prints: the base's knowledge, each condition's trajectory and verdict, stage times."""
    from experiments.controlled.cli import comparison_lines, knowledge_lines, trajectory_line, verdict_lines
    from experiments.controlled.conditions import condition_lines
    from experiments.controlled.statistics import error_rate_line

    first = next(iter(result.sweep.runs.values()))
    lines = [f"run folder: {result.config.out}   model: {result.config.experiment.model}"]
    lines += knowledge_lines(first)
    lines += condition_lines(result.sweep.composed, "experiment.")
    for name, run in result.sweep.runs.items():
        c = run.counts.iloc[0]
        lines.append(f"[{name}] rho={run.config.mixture.rho:g}: {int(c.C)} context-critical + {int(c.CS)} "
                     f"non-context-critical records per seed; {int(c.evaluated)} held-out conflicts x "
                     f"{len(run.config.seeds)} seeds")
        lines.append(f"[{name}] {trajectory_line(run)}")
        lines += verdict_lines(run, f"[{name}] ")
    if result.error_rates:
        lines.append(error_rate_line(result.error_rates))
        for name, r in result.error_rates.get("permuted", {}).items():
            lines.append(f"[{name}] false 'rise then fall' on its own plateau, checkpoints after the first permuted "
                         f"within seed: {r['rate']:.0%} [{r['lo']:.0%}, {r['hi']:.0%}] of {r['n_sim']} permutations "
                         f"({r['metric']})")
    lines += comparison_lines(result.comparison)
    t = result.timings
    for _, row in t.iterrows():
        where = f"{row.condition}/" if row.condition else ""
        lines.append(f"  stage {where + row.stage:<24} {row.wall_s:7.1f} s   peak RSS {row.peak_rss_mib:7.0f} MiB")
    lines.append(f"total {result.wall_s:.0f} s; figures: {len(result.figures)} files in {result.config.figures_dir}/")
    return lines


__all__ = ["MAIN_THEORY_FIGURES", "MainConfig", "default_experiment", "MainResult", "run_main", "summary_lines"]
