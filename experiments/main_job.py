"""The README's main job (``cpi run``, ``make run``): the theory figures, then the decisive comparison on
a real pretrained model: conditions inside and outside the theory's inversion regime, the control and a
positive control, with the theory's parameters measured on the base and its prediction stated before
any training.

One :class:`MainConfig` drives it; :func:`run_main` returns a :class:`MainResult`. Stages:

1. the theory figures (seconds);
2. the regime stage (:func:`experiments.controlled.regime_run.regime_stage`): each condition's mixture
   built as the experiment builds it, delta_M / delta_C / m / the theory's class measured per record and
   held-out conflict on the base, the simulator run at the measured parameters; the prediction is
   reported (``report``) before training starts;
3. the experiment (:func:`experiments.controlled.sweep.run_controlled_sweep`: knowledge once, every
   condition x seed in ``experiment.workers`` processes; its folder is the sweep's, ``<out>/<condition>/``,
   ``sweep.csv``, ``verdicts.csv``, ``comparison.csv``), resumable stage by stage;
4. the verdict's false-positive rate and power at the run's design, and its figures (``<out>/figures/``
   unless ``figures`` names a folder; ``make run`` passes ``figures/``).

    >>> cfg = MainConfig.quick()
    >>> cfg.conditions, cfg.experiment.seeds, cfg.out
    (('inside', 'outside', 'control', 'positive_control_20'), (0,), 'runs/main_quick')
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

from cpi.config import Config
from cpi.errors import ConfigError
from cpi.timing import StageTimer
from experiments.controlled.config import ControlledConfig, EvalSettings, KnowledgeSettings, TrainSettings
from experiments.controlled.mixture import MixtureConfig
from experiments.controlled.regime_run import RegimeSettings
from experiments.controlled.statistics import FALL_VERDICTS
from theory.sweep import FALLING_REGIMES

if TYPE_CHECKING:  # pragma: no cover
    from experiments.controlled.regime_run import RegimeResult
    from experiments.controlled.sweep import SweepResult


def default_experiment() -> ControlledConfig:
    """The main job's experiment, sized to the budget (<= 15 minutes and <= 6 GB on 2 CPU cores; measured
    in BENCHMARKS.md): SmolLM2-135M-Instruct, 3 seeds run two at a time (one process per core); the base
    scored closed-book on the first 100 capital facts of CF_World_Facts; records and held-out conflicts
    only on facts it knows by a log-prob margin >= 2 nats over the best other candidate (strong
    knowledge: delta_M high, as the theory's regime needs); 48 records per seed at rho = 0.25 (12 LoRA
    steps of 4, a checkpoint every 4); 16 held-out capital conflicts per seed, disjoint from training in
    entity, passage template and question form, evaluated at the 4 checkpoints (48 seed x item units per
    condition, paired across conditions), 8 at a time (two workers at 16 peaked at 6.14 GiB with the
    process tree, at 8 at 4.90 GiB). What differs between the conditions is in
    ``experiments/controlled/conditions.yaml``."""
    return ControlledConfig(
        model="smollm2-135m-instruct", seeds=(0, 1, 2), workers=2, threads=1,
        knowledge=KnowledgeSettings(datasets=("CF_World_Facts",), n_candidates=8, max_items=100),
        mixture=MixtureConfig(n_examples=48, rho=0.25, heldout_fraction=0.5, min_heldout=12, min_known_margin=2.0,
                              relations=("capital",)),
        finetune=TrainSettings(method="lora", steps=12, save_steps=4, batch_size=4, learning_rate=3e-4,
                               gradient_checkpointing=True),
        evaluate=EvalSettings(max_items=16, batch_size=8, n_boot=1000, probe_items=4, probe_batch_size=4),
    )


def quick_experiment() -> ControlledConfig:
    """The ``--quick`` experiment (a smoke test of the same code, not a result): one seed, 60 capital
    facts, 32 records, 4 LoRA steps (checkpoints at 2 and 4), 8 held-out conflicts, 4 probed."""
    return ControlledConfig(
        model="smollm2-135m-instruct", seeds=(0,), workers=2, threads=1,
        knowledge=KnowledgeSettings(datasets=("CF_World_Facts",), n_candidates=4, max_items=60),
        mixture=MixtureConfig(n_examples=32, rho=0.25, heldout_fraction=0.5, min_heldout=8, min_known_margin=2.0,
                              relations=("capital",)),
        finetune=TrainSettings(steps=4, save_steps=2, batch_size=4, max_seq_length=192),
        evaluate=EvalSettings(max_items=8, n_boot=200, probe_items=4, probe_batch_size=4),
    )


#: the main job's conditions: inside and outside the theory's regime at the same context-critical dose,
#: the control (only context-critical records) and the positive control (a planted fall)
MAIN_CONDITIONS = ("inside", "outside", "control", "positive_control_20")


#: the theory figures of the main job: the trajectory, the comparison, the phase diagram and eta*
MAIN_THEORY_FIGURES = ("theory_trajectory", "theory_comparison", "theory_phase_diagram", "theory_eta_star")


@dataclass(frozen=True)
class MainConfig(Config):
    """``cpi run``: ``experiment`` (a :class:`~experiments.controlled.experiment.ControlledConfig`,
    nested keys ``experiment.mixture.rho``, ``experiment.seeds``, ...) run for each of ``conditions``
    (rows of the conditions file) into ``out``. First the theory figures named in ``theory_figures``
    (the four of the theory's main results by default, seconds; empty = none; ``theory_quick``: their
    quick form), then, with ``predict``, the conditions' parameters measured on the base and the
    theory's prediction (``regime``: how), then the experiment."""

    experiment: ControlledConfig = field(default_factory=default_experiment)
    "the controlled experiment run for each condition (nested keys: experiment.seeds, experiment.mixture.rho)"
    conditions: tuple[str, ...] = MAIN_CONDITIONS
    "conditions to run (names in the conditions file)"
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
    predict: bool = True
    "measure delta_M / delta_C of every condition's records on the base and state the theory's prediction before training"
    regime: RegimeSettings = field(default_factory=lambda: RegimeSettings(n_seeds=1))
    "how the parameters are measured (nested keys: regime.n_seeds, regime.n_candidates, regime.sim_steps)"
    error_rate_sims: int = 200
    "simulated runs behind the printed false-positive rate and power of the verdict at the run's design (0: none)"

    def validate(self) -> None:
        self.composed()
        if self.error_rate_sims < 0:
            raise ConfigError(f"field 'error_rate_sims': must be >= 0, got {self.error_rate_sims}")
        from theory.figures import FIGURES

        unknown = [f for f in self.theory_figures if f not in FIGURES]
        if unknown:
            raise ConfigError(f"field 'theory_figures': unknown figure {unknown[0]!r} (known: {', '.join(FIGURES)})")
        if not self.out:
            raise ConfigError("field 'out': give a run folder")

    def composed(self) -> dict:
        """Each condition's config, composed with ``experiment`` as the sweep composes it."""
        from experiments.controlled.conditions import compose, load_conditions, parse_names

        table = load_conditions(self.conditions_file)
        names = parse_names(self.conditions, table)
        return compose(self.experiment, names, table, reference_experiment(self), knowledge_cache=str(
            Path(self.out) / "knowledge"), field_prefix="experiment.")

    @classmethod
    def quick(cls, **changes: Any) -> "MainConfig":
        """The ``--quick`` form CI runs (a smoke test, not a result): the quick theory figures,
        :func:`quick_experiment` for the same conditions, the regime on 4 candidates, into
        ``runs/main_quick``."""
        base = cls(experiment=quick_experiment(), out="runs/main_quick", theory_quick=True, error_rate_sims=100,
                   regime=RegimeSettings(n_candidates=4, n_seeds=1, sim_steps=200))
        return base.replace(**changes) if changes else base

    @property
    def figures_dir(self) -> Path:
        return Path(self.figures) if self.figures else Path(self.out) / "figures"


@dataclass
class MainResult:
    """``sweep``: the experiment (runs per condition, ``table``, ``verdicts``); ``regime``: the
    parameters measured before training and the theory's prediction (None without ``predict``);
    ``figures``: written paths; ``timings``: wall time and peak memory of every stage;
    ``comparison``: the sweep's paired comparisons (the conditions' ``compare_to``);
    ``error_rates``: the verdict's simulated false-positive rate and power at the run's design
    (:func:`~experiments.controlled.statistics.error_rates`); ``wall_s``: the whole job."""

    config: MainConfig
    sweep: "SweepResult"
    figures: list[Path]
    timings: Any
    wall_s: float
    error_rates: dict = field(default_factory=dict)
    regime: "Optional[RegimeResult]" = None

    @property
    def comparison(self) -> Any:
        """The sweep's comparison table (``sweep.comparison``)."""
        return self.sweep.comparison


def run_main(config: MainConfig, report: Optional[Callable[[str], None]] = None) -> MainResult:
    """Theory figures, the regime stage (its lines passed to ``report`` as soon as they are known, before
    any training), the experiment (resumable), its figures; returns the tables."""
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
    regime = None
    if config.predict:
        from experiments.controlled.pool import call
        from experiments.controlled.regime_run import regime_stage

        arms = {name: c.config for name, c in config.composed().items()}
        exp = config.experiment
        # in a worker process of its own (on every core the workers will use), so that the parent holds no
        # model while the seeds' workers run beside it: its memory would add to theirs
        regime = timer.run("regime", call, exp.workers > 1, exp.threads * exp.workers, regime_stage, arms,
                           config.regime, exp.resolved_dtype(), Path(config.out) / "regime",
                           Path(config.out) / "knowledge")
        if report is not None:
            for line in regime_lines(regime):
                report(line)
    sweep = timer.run("experiment", run_controlled_sweep, config.experiment, config.conditions, Path(config.out),
                      config.conditions_file, reference_experiment(config), "experiment.")
    sims = theory_configs(regime) if regime is not None else {}
    for name, run in sweep.runs.items():
        written += make_condition_figures(run, figures, prefix=f"controlled_{name}", theory=sims.get(name))
    written += save_figure(plot_sweep_panels(sweep.table), figures, "controlled_sweep")
    if regime is not None:
        from experiments.controlled.regime_figures import make_regime_figures

        written += make_regime_figures(regime.table, figures, prediction=regime.prediction)
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
                      wall_s=time.perf_counter() - t0, error_rates=rates, regime=regime)


def theory_configs(regime: "RegimeResult") -> dict[str, Any]:
    """Per condition the simulator's config at its measured parameters (conditions the theory simulates)."""
    from theory.config import SimConfig

    out = {}
    for _, row in regime.prediction.iterrows():
        if "sim_steps" in row and row["sim_steps"] == row["sim_steps"]:
            out[row["arm"]] = SimConfig(n_C=int(row["n_C"]), n_CS=int(row["n_CS_inside"]),
                                        delta_C=float(row["delta_c_inside"]), delta_M=float(row["delta_m_inside"]),
                                        steps=int(row["sim_steps"]), lr=float(row["sim_lr"]))
    return out


def regime_lines(regime: "RegimeResult") -> list[str]:
    """What the regime stage reports before training: per condition the measured parameters of its records
    (medians and quartiles per kind, the theory's classes) and the theory's prediction."""
    lines = [f"before training -- the theory's parameters measured on the base ({regime.out}"
             f"{', reused' if regime.reused else ''}):"]
    s = regime.summary
    for _, r in s[s["source"] == "record"].iterrows():
        lines.append(f"  [{r.arm}] {r.kind:>2} records (n={int(r.n)}): delta_M {r.delta_m_median:.2f} "
                     f"[{r.delta_m_q1:.2f}, {r.delta_m_q3:.2f}], delta_C {r.delta_c_median:.2f} "
                     f"[{r.delta_c_q1:.2f}, {r.delta_c_q3:.2f}], mean m {r.m_mean:+.2f}; classes C {int(r.n_C)}, "
                     f"C+S inside {int(r.n_CS_inside)}, C+S outside {int(r.n_CS_outside)}")
    lines += ["  prediction " + line for line in regime.lines]
    return lines


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
    quick = quick_experiment()
    return quick if config.experiment.finetune == quick.finetune else default_experiment()


def is_positive_control(name: str, conditions_file: Optional[str] = None) -> bool:
    """A condition labelled as a positive control (its description says so: a planted fall)."""
    from experiments.controlled.conditions import load_conditions

    return "POSITIVE CONTROL" in load_conditions(conditions_file)[name].description


def fall_evidence(verdict: dict) -> str:
    """The statistic a verdict's fall (or its absence) rests on: from the peak to the end (``fall``), and for
    "fall (no significant rise)" -- the end significantly below the start -- the end minus the start (``net``)."""
    if "fall" not in verdict:
        return verdict["verdict"]

    def pts(name: str) -> str:
        return f"{100 * verdict[name]:+.1f} pts [{100 * verdict[name + '_lo']:+.1f}, {100 * verdict[name + '_hi']:+.1f}]"

    if verdict["verdict"] == FALL_VERDICTS[1]:
        return f"end - start {pts('net')}, from the peak {pts('fall')}"
    return f"fall {pts('fall')}"


def outcome_lines(result: MainResult) -> list[str]:
    """Per condition, the theory's prediction stated before training beside what the primary metric shows,
    on the question both answer robustly (a fall or not; the verdict's full label follows, but whether a
    small rise is significant can change with the precision); for a positive control, whether the
    pipeline detected the fall it plants."""
    predicted = {}
    if result.regime is not None:
        predicted = dict(zip(result.regime.prediction["arm"], result.regime.prediction["prediction"]))
    lines = ["theory (stated before training) vs outcome (primary metric):"]
    for name, run in result.sweep.runs.items():
        v = run.verdict
        fell = v["verdict"] in FALL_VERDICTS
        fall = fall_evidence(v)
        if is_positive_control(name, result.config.conditions_file):
            lines.append(f"  [{name}] POSITIVE CONTROL (a planted fall, not the theory's mechanism): {fall}, "
                         f"'{v['verdict']}' -> " + ("the pipeline DETECTS a fall of this size" if fell else
                         "the pipeline did NOT detect the planted fall: a 'no fall' elsewhere in this run says little"))
            continue
        said = predicted.get(name)
        if said is None:
            lines.append(f"  [{name}] theory: not measured; observed: {'a' if fell else 'no'} significant fall ({fall})")
            continue
        expects = said in FALLING_REGIMES
        lines.append(f"  [{name}] theory: {'a fall' if expects else 'no fall'} ({said}); observed: "
                     f"{'a' if fell else 'no'} significant fall ({fall}; '{v['verdict']}') -> "
                     + ("agrees" if expects == fell else "DISAGREES"))
    return lines


def summary_lines(result: MainResult) -> list[str]:
    """What ``cpi run`` prints: the base's knowledge, the regime stage, each condition's trajectory and
    verdict, the paired comparisons, the theory against the outcome, stage times."""
    from experiments.controlled.cli import comparison_lines, knowledge_lines, trajectory_line, verdict_lines
    from experiments.controlled.conditions import condition_lines
    from experiments.controlled.statistics import error_rate_line

    first = next(iter(result.sweep.runs.values()))
    lines = [f"run folder: {result.config.out}   model: {result.config.experiment.model}"]
    lines += knowledge_lines(first)
    if result.regime is not None:
        lines += regime_lines(result.regime)
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
    lines += outcome_lines(result)
    t = result.timings
    for _, row in t.iterrows():
        where = f"{row.condition}/" if row.condition else ""
        lines.append(f"  stage {where + row.stage:<24} {row.wall_s:7.1f} s   peak RSS {row.peak_rss_mib:7.0f} MiB")
    lines.append(f"total {result.wall_s:.0f} s; figures: {len(result.figures)} files in {result.config.figures_dir}/")
    return lines


__all__ = ["MAIN_CONDITIONS", "MAIN_THEORY_FIGURES", "MainConfig", "MainResult", "default_experiment",
           "outcome_lines", "quick_experiment", "regime_lines", "run_main", "summary_lines"]
