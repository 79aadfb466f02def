"""Measuring the theory's parameters of the controlled experiment's conditions before any training.

Every condition (a row of the conditions file, composed with the base config exactly as the sweep
composes it) builds each seed's mixture as the experiment does; its records and evaluated held-out
conflicts are measured on the base (:func:`~experiments.controlled.regime.measure_regime`), and the
simulator runs at each condition's measured parameters
(:func:`~experiments.controlled.regime.theory_prediction`): the theory's prediction for that mixture,
stated before training.

``cpi controlled regime`` runs :func:`run_regime` (:class:`RegimeConfig`); the main job runs
:func:`regime_stage` (the same measurement in a folder named by its content, so a resumed job reuses
it and a changed setting measures afresh).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Optional, Sequence, TypeVar

from cpi.config import Config, check_at_least
from cpi.errors import ConfigError
from experiments.controlled.config import ControlledConfig

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

T = TypeVar("T")

#: the arms of the decisive experiment (rows of the conditions file); any condition can be measured
REGIME_ARMS = ("inside", "inside_d1", "fall_band", "outside", "control", "positive_control_10", "positive_control_20")


@dataclass(frozen=True)
class RegimeSettings(Config):
    """How the parameters are measured: the answer among ``n_candidates`` candidates, ``batch_size``
    prompts at a time, at most ``max_records`` records per seed (evenly spaced in the mixture's written
    order, so a second training phase is measured too; None: all), the first
    ``n_seeds`` of the experiment's seeds (None: all); the simulator runs ``sim_steps`` full-batch
    gradient steps of ``sim_lr`` at each condition's measured parameters."""

    n_candidates: int = 8
    batch_size: int = 16
    max_records: Optional[int] = None
    n_seeds: Optional[int] = None
    sim_steps: int = 500
    sim_lr: float = 2.0

    def validate(self) -> None:
        check_at_least(self, n_candidates=2, batch_size=1, max_records=1, n_seeds=1, sim_steps=1)
        if not self.sim_lr > 0:
            raise ConfigError(f"field 'sim_lr': must be > 0, got {self.sim_lr}")


@dataclass(frozen=True)
class RegimeConfig(Config):
    """``cpi controlled regime``: measure the theory's parameters of ``arms`` (names in
    ``conditions_file``, the shipped conditions by default) before any training, each the base
    ``experiment`` composed with its condition as the sweep composes it, in the experiment's ``dtype``
    (log-probs in float32), into ``out``.
    (The main job's arms: ``RegimeConfig(experiment=experiments.main_job.default_experiment())``.)"""

    experiment: ControlledConfig = field(default_factory=ControlledConfig)
    "the base config of every arm (its fields take top-level flags and --set keys)"
    arms: tuple[str, ...] = ("inside", "outside", "control")
    "condition names, comma-separated (rows of the conditions file)"
    conditions_file: Optional[str] = None
    "YAML file of conditions (default: experiments/controlled/conditions.yaml)"
    settings: RegimeSettings = field(default_factory=RegimeSettings)
    "candidates, seeds, records and the simulator's steps (nested keys: settings.n_candidates)"
    out: Optional[str] = None
    "output folder: regime.csv, regime_summary.csv, prediction.csv, prediction.txt, config.json (default runs/regime)"

    NOT_CONTENT = ("out",)

    def validate(self) -> None:
        self.arm_configs()

    def resolved_dtype(self) -> str:
        """``float32`` or ``bfloat16``: the experiment's ``dtype`` on this machine (one home: ``--dtype``)."""
        return self.experiment.resolved_dtype()

    def arm_configs(self) -> dict[str, ControlledConfig]:
        """Each arm's config, composed as the sweep composes it (one-line errors name the field)."""
        from experiments.controlled.conditions import compose, load_conditions, parse_names

        table = load_conditions(self.conditions_file)
        names = parse_names(self.arms, table, "arms")
        return {name: c.config for name, c in compose(self.experiment, names, table).items()}


@dataclass
class RegimeResult:
    """``table``: one row per arm x seed x record / held-out conflict (:func:`measure_regime`'s columns
    plus ``arm``, ``seed``); ``summary``: :func:`regime_summary` by arm, source and kind;
    ``prediction`` / ``lines``: :func:`theory_prediction`; ``reused``: read from an earlier run."""

    out: Path
    table: "pd.DataFrame"
    summary: "pd.DataFrame"
    prediction: "pd.DataFrame"
    lines: list[str]
    reused: bool = False


def spread(records: Sequence[T], n: Optional[int]) -> list[T]:
    """At most ``n`` of ``records``, evenly spaced in their order (all of them when ``n`` is None or larger).

    >>> spread(list(range(10)), 4)
    [0, 2, 5, 7]
    """
    if n is None or n >= len(records):
        return list(records)
    return [records[(i * len(records)) // n] for i in range(n)]


def measure_arms(arms: Mapping[str, ControlledConfig], settings: RegimeSettings, dtype: str,
                 knowledge_cache: Path) -> "tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, list[str]]":
    """Measure every arm's records and evaluated held-out conflicts on its base; returns the table, its
    summary, the prediction table and its sentences."""
    import pandas as pd

    from experiments.controlled.mixture import build_mixture
    from experiments.controlled.regime import (candidate_logprobs, heldout_probes, record_probes, regime_prompts,
                                               regime_rows, regime_summary, theory_prediction)
    from experiments.controlled.selection import mixture_selector
    from experiments.controlled.stages import evaluated_items, knowledge_items, stage_knowledge
    from experiments.controlled.keys import model_fingerprint
    from fullscale.checkpoints import load_checkpoint
    from fullscale.models import resolve_model

    groups = []  # (arm, seed, probes, names, first prompt index)
    prompts: list = []
    cands: list = []
    model_name = None
    for arm, ecfg in arms.items():
        if model_name not in (None, ecfg.model):
            raise ConfigError(f"field 'model': the arms measure one base, got {model_name!r} and {ecfg.model!r}")
        model_name = ecfg.model
        model_dir = Path(resolve_model(ecfg.model))
        items = knowledge_items(ecfg.knowledge)
        cache = Path(ecfg.knowledge_cache) if ecfg.knowledge_cache else knowledge_cache
        model_fp = model_fingerprint(model_dir)
        known, _ = stage_knowledge(ecfg, model_dir, model_fp, cache, items)
        seeds = ecfg.seeds[: settings.n_seeds] if settings.n_seeds else ecfg.seeds
        for seed in seeds:  # a band arm's selection is cached in the knowledge cache: the experiment reuses it
            select = mixture_selector(ecfg, seed, items, model_dir, model_fp, cache)
            mix = build_mixture(items, known, ecfg.mixture.replace(seed=seed), select)
            evaluated = evaluated_items(mix.heldout, ecfg.evaluate.max_items, seed)  # as the experiment draws them
            records = spread(mix.records, settings.max_records)
            probes = (record_probes(records, items, settings.n_candidates)
                      + heldout_probes(evaluated, items, settings.n_candidates))
            names, pr, cd = regime_prompts(probes, seed)
            groups.append((arm, seed, probes, names, len(prompts)))
            prompts += pr
            cands += cd
    # one pass over every arm's prompts: a prompt the arms share (a held-out conflict, a fact's closed-book
    # question) is computed once
    model, tok = load_checkpoint(Path(resolve_model(model_name)), dtype=dtype)
    lps = candidate_logprobs(model, tok, prompts, cands, settings.batch_size)
    frames = [regime_rows(probes, names, lps[start: start + 3 * len(probes)]).assign(arm=arm, seed=seed)
              for arm, seed, probes, names, start in groups]
    table = pd.concat(frames, ignore_index=True)
    summary = regime_summary(table, by=("arm", "source", "kind"))
    prediction, lines = theory_prediction(table, steps=settings.sim_steps, lr=settings.sim_lr)
    return table, summary, prediction, lines


def _save(out: Path, config: Config, dtype: str, table, summary, prediction, lines: list[str]) -> RegimeResult:
    from cpi.io import atomic_write_text, save_run

    save_run(out, config, {"regime": table, "regime_summary": summary, "prediction": prediction}, dtype=dtype)
    atomic_write_text(out / "prediction.txt", "\n".join(lines) + "\n")
    return RegimeResult(out=out, table=table, summary=summary, prediction=prediction, lines=lines)


def run_regime(config: RegimeConfig) -> RegimeResult:
    """Measure every arm of ``config`` on its base and write ``regime.csv``, ``regime_summary.csv``,
    ``prediction.csv``, ``prediction.txt`` and ``config.json`` to ``config.out``."""
    config.validate()
    dtype = config.resolved_dtype()  # refused (bfloat16 where unsupported) before anything is written
    out = Path(config.out or "runs/regime")
    parts = measure_arms(config.arm_configs(), config.settings, dtype, out / "knowledge")
    return _save(out, config, dtype, *parts)


@dataclass(frozen=True)
class RegimeStageKey(Config):
    """What determines the main job's regime stage: the composed arms, the settings, the precision and
    the base's fingerprint (the folder's name is its content key)."""

    arms: dict
    settings: RegimeSettings
    dtype: str
    model_fingerprints: dict


def regime_stage(arms: Mapping[str, ControlledConfig], settings: RegimeSettings, dtype: str, out: Path,
                 knowledge_cache: Path) -> RegimeResult:
    """:func:`measure_arms` in ``out/<content key>/``, reused when that folder holds a finished
    measurement (``prediction.txt`` is written last)."""
    import pandas as pd

    from experiments.controlled.keys import content_key, model_fingerprint
    from fullscale.models import resolve_model

    fps = {name: model_fingerprint(resolve_model(c.model)) for name, c in arms.items()}
    key_cfg = RegimeStageKey(arms={name: c.content_dict() for name, c in arms.items()}, settings=settings,
                             dtype=dtype, model_fingerprints=fps)
    folder = out / content_key(key_cfg)
    if (folder / "prediction.txt").is_file():
        lines = (folder / "prediction.txt").read_text(encoding="utf-8").splitlines()
        return RegimeResult(out=folder, table=pd.read_csv(folder / "regime.csv"),
                            summary=pd.read_csv(folder / "regime_summary.csv"),
                            prediction=pd.read_csv(folder / "prediction.csv"), lines=lines, reused=True)
    return _save(folder, key_cfg, dtype, *measure_arms(arms, settings, dtype, knowledge_cache))


__all__ = ["REGIME_ARMS", "RegimeConfig", "RegimeResult", "RegimeSettings", "measure_arms", "regime_stage",
           "run_regime", "spread"]
