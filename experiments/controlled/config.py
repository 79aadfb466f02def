"""The controlled experiment's settings: one :class:`ControlledConfig` is one condition over its seeds.

Nested: :class:`KnowledgeSettings` (the base's closed-book knowledge), the mixture
(:class:`~experiments.controlled.mixture.MixtureConfig`), :class:`TrainSettings` (finetuning with the
``cpi finetune`` driver) and :class:`EvalSettings` (evaluation and probing of every checkpoint).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

from cpi.config import Config
from cpi.errors import ConfigError
from experiments.controlled.mixture import MixtureConfig
from fullscale.finetune_config import METHODS, FinetuneSettings, Method

#: the values of ``ControlledConfig.dtype`` (``auto``: bfloat16 where the hardware has it, else float32)
DTYPES = ("auto", "float32", "bfloat16")


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
class TrainSettings(FinetuneSettings):
    """The controlled experiment's finetuning: :class:`~fullscale.finetune_config.FinetuneSettings` (the
    knobs, their checks and the one mapping onto the ``cpi finetune`` driver) with this experiment's own
    defaults: LoRA rank 16 (alpha 32) on every linear layer, 60 steps of 8 records at a constant 3e-4, a
    checkpoint every 10, 256 tokens per record (the driver's: full finetuning, 2e-5 linear, 1024 tokens)."""

    method: Method = "lora"
    steps: int = 60
    save_steps: int = 10
    batch_size: int = 8
    learning_rate: float = 3e-4
    lr_scheduler: str = "constant"
    lora_rank: int = 16
    lora_alpha: float = 32.0
    max_seq_length: int = 256

    #: added after the first runs: at these values they leave the finetune folder's content key as it was
    ADDED_LATER = {"gradient_checkpointing": False, "filter_criterion": "gap", "data_order": "shuffle",
                   "save_schedule": "linear"}


@dataclass(frozen=True)
class EvalSettings(Config):
    """Evaluation of every checkpoint on (at most ``max_items`` of) the seed's held-out conflicts with
    ``fullscale.evaluate`` (``modes``; counterfactual containment needs ``generate``), bootstrap intervals
    with ``n_boot`` resamples; the probe (``mechinterp``) on ``probe_items`` of them (0 = no probe).
    Generation runs to EOS or ``max_new_tokens`` (20: room for a preamble and a long answer); the
    answer is the output up to its first line break (:func:`experiments.controlled.stages.rescore_answers`)."""

    template: str = "alpaca"
    modes: tuple[str, ...] = ("generate", "logprob")
    max_items: Optional[int] = 60
    batch_size: int = 16
    max_new_tokens: int = 20
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
    (default ``<out>/knowledge``). ``dtype``: the precision of every stage (knowledge, finetuning,
    evaluation, probe): ``auto`` is bfloat16 where the CPU has AMX-BF16 or AVX-512-BF16 (or the GPU has
    bf16), else float32 (:func:`fullscale.precision.resolve_dtype`); the resolved one is recorded in
    ``controlled_config.json`` and is part of every stage's content key (float32 stages keep the keys
    they had before the field existed). Nested fields take dotted keys: ``--set mixture.rho=1.0``.

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
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"

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
        check_stage_dtype(self.dtype, "dtype")
        if self.mixture.positive_control_start is not None and self.finetune.data_order != "sequential":
            raise ConfigError("field 'finetune.data_order': mixture.positive_control_start is a second training "
                              "phase, which only data_order: sequential keeps (shuffle would mix it in everywhere)")

    def replace(self, **changes: Any) -> "ControlledConfig":
        """As :meth:`Config.replace`; an error in a nested field names it with its dotted key."""
        try:
            return super().replace(**changes)
        except ConfigError as exc:
            msg = str(exc)
            heads = {k.split(".", 1)[0] for k in changes if "." in k}
            named = msg[len("field '"):].split("'", 1)[0] if msg.startswith("field '") else ""
            if len(heads) == 1 and named and "." not in named:  # a nested config's own field: give its dotted key
                raise ConfigError(msg.replace("field '", f"field '{next(iter(heads))}.", 1)) from None
            raise

    def resolved_dtype(self) -> str:
        """``float32`` or ``bfloat16``: what ``dtype`` means on this machine (the device the stages use:
        cuda when present, else cpu). ConfigError naming the field where bfloat16 is not supported."""
        import torch

        from fullscale.precision import dtype_name, resolve_dtype

        return dtype_name(resolve_dtype(self.dtype, "cuda" if torch.cuda.is_available() else "cpu", field="dtype"))

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
            evaluate=EvalSettings(max_items=12, n_boot=200, probe_items=4, probe_batch_size=4),
        )
        return base.replace(**changes) if changes else base

    def finetune_config(self, base_model: str, data: Path, output_dir: Path, seed: int) -> Any:
        """The :class:`fullscale.finetune.FinetuneConfig` of one seed of this condition."""
        return self.finetune.finetune_config(
            base_model, data, output_dir, seed,
            dtype=self.resolved_dtype(),
        )


def check_stage_dtype(value: Any, field: str) -> None:
    """ConfigError naming ``field`` unless ``value`` is a precision every stage can run in (``auto``,
    ``float32``, ``bfloat16``; ``float16`` would need a loss scaler and is emulated on a CPU)."""
    if value not in DTYPES:
        raise ConfigError(f"field '{field}': {value!r} is not one of {', '.join(DTYPES)}"
                          + (" (float16 is not supported by the controlled experiment)" if value in ("float16", "fp16")
                             else ""))


#: the conditions ``cpi controlled sweep`` runs by default
DEFAULT_CONDITIONS = ("rho_low", "rho_mid", "rho_1", "filter", "augment", "qk_only")


@dataclass(frozen=True)
class ControlledRunConfig(Config):
    """``cpi controlled run``: one condition, ``experiment`` (its fields are also top-level flags and
    ``--set`` keys: ``--set mixture.rho=1.0``), into ``out``."""

    experiment: ControlledConfig = field(default_factory=ControlledConfig)
    "the condition (its fields take top-level flags and --set keys: --seeds, --set mixture.rho=1.0)"
    out: Optional[str] = None
    "run folder, resumable (default runs/controlled, or runs/controlled_quick with --quick)"
    figures: Optional[str] = None
    "folder for the figures (default <out>/figures)"
    prefix: str = "controlled"
    "figure file names start with this"


@dataclass(frozen=True)
class ControlledSweepConfig(Config):
    """``cpi controlled sweep``: the ``conditions`` (names in ``conditions_file``, the shipped
    ``experiments/controlled/conditions.yaml`` by default), each the base ``experiment`` with its
    changes, into ``out/<name>``."""

    experiment: ControlledConfig = field(default_factory=ControlledConfig)
    "the base config of every condition (its fields take top-level flags and --set keys)"
    conditions: tuple[str, ...] = DEFAULT_CONDITIONS
    "condition names, comma-separated (names in the conditions file)"
    conditions_file: Optional[str] = None
    "YAML file of conditions (default: experiments/controlled/conditions.yaml)"
    out: Optional[str] = None
    "run folder, resumable (default runs/controlled_sweep, or runs/controlled_sweep_quick with --quick)"
    figures: Optional[str] = None
    "folder for the figures (default <out>/figures)"

    def validate(self) -> None:
        from experiments.controlled.conditions import compose, load_conditions, parse_names

        table = load_conditions(self.conditions_file)
        compose(self.experiment, parse_names(self.conditions, table), table)  # a setting no condition keeps


__all__ = ["DEFAULT_CONDITIONS", "DTYPES", "METHODS", "check_stage_dtype", "ControlledConfig", "ControlledRunConfig", "ControlledSweepConfig",
           "EvalSettings", "KnowledgeSettings", "TrainSettings"]
