"""The settings of an instruction-finetuning run: :class:`FinetuneConfig` and its ``lora`` / ``tracking`` blocks.

An experiment that finetunes (the controlled experiment, the organism) nests a
:class:`FinetuneSettings`: the knobs an experiment varies, each with one meaning, one check and one
mapping onto the driver's :class:`FinetuneConfig` (:meth:`FinetuneSettings.finetune_config`). Its
defaults are the driver's; an experiment that needs other values subclasses it with its own defaults.

Only the config layer (``cpi.config``) is imported; the run is :func:`fullscale.finetune.run_finetune`.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any, Literal, Sequence

from cpi.config import Config, check_at_least, check_in_interval
from cpi.errors import ConfigError

__all__ = ["FinetuneConfig", "FinetuneSettings", "LoraSettings", "METHODS", "TrackingSettings"]

_EXP_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")
_SCHEDULES = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
              "inverse_sqrt", "reduce_lr_on_plateau", "cosine_with_min_lr", "warmup_stable_decay")


@dataclass(frozen=True)
class LoraSettings(Config):
    """LoRA adapter settings (PEFT). Omit the whole ``lora`` block for full finetuning.

    - ``rank``: adapter rank r (the paper used 128).
    - ``alpha``: LoRA scaling numerator (update scaled by alpha / rank).
    - ``dropout``: dropout on the adapter input.
    - ``target_modules``: module names to adapt (leaf names such as ``q_proj``,
      ``query_key_value``, or ``all-linear`` = every linear layer but the output
      head). A name that matches no module is an error listing the candidates.
    """

    rank: int = 128
    alpha: float = 256.0
    dropout: float = 0.05
    target_modules: tuple[str, ...] = ("all-linear",)

    def validate(self) -> None:
        check_at_least(self, "lora.", rank=1)
        if not self.alpha > 0:
            raise ConfigError(f"field 'lora.alpha': must be > 0, got {self.alpha}")
        check_in_interval(self, "lora.", dropout="[0, 1)")
        if not self.target_modules:
            raise ConfigError("field 'lora.target_modules': give at least one module name (or 'all-linear')")


@dataclass(frozen=True)
class TrackingSettings(Config):
    """In-loop context-reliance tracking on a knowledge-conflict subset.

    - ``conflicts``: conflict sets (shipped names such as ``CF_World_Facts`` or
      JSONL files in the conflict schema).
    - ``n_items``: items scored each time (a seeded random subset of all items;
      all items if fewer). These items are also excluded from augmentation.
    - ``every_steps``: score every N optimizer steps (and once at step 0).
    - ``template``: prompt template for scoring (default: the finetuning template).
    - ``batch_size``: scoring batch size.
    - ``keep_best``: also save a checkpoint whenever ``metric`` reaches a new
      maximum, record it in ``best_reliance.json`` and protect it from
      ``save_total_limit`` rotation.
    - ``metric``: ``mean_reliance``, ``context_pref_rate`` or ``mean_margin``
      (from :func:`fullscale.scoring.summarize_reliance`).
    """

    conflicts: tuple[str, ...] = ("CF_World_Facts",)
    n_items: int = 64
    every_steps: int = 50
    template: str | None = None
    batch_size: int = 16
    keep_best: bool = False
    metric: Literal["mean_reliance", "context_pref_rate", "mean_margin"] = "mean_reliance"

    def validate(self) -> None:
        if not self.conflicts:
            raise ConfigError("field 'tracking.conflicts': give at least one conflict set")
        check_at_least(self, "tracking.", n_items=1, every_steps=1, batch_size=1)
        if self.template is not None:
            _check_template_field("tracking.template", self.template)


def _check_template_field(name: str, value: str) -> None:
    from fullscale.prompts import TEMPLATES

    if value not in TEMPLATES:
        raise ConfigError(f"field '{name}': unknown template {value!r} (known templates: {', '.join(TEMPLATES)})")


@dataclass(frozen=True)
class FinetuneConfig(Config):
    """Everything an instruction-finetuning run needs. Defaults follow OpenInstruct where the
    paper is silent (linear schedule, 3% warm-up, effective batch 128 = 8 x 16 on one device).

    Model and data
    - ``base_model``: local model folder, registry model name (``cpi models list``) or hub name (hub needs the network).
    - ``tokenizer``: tokenizer folder/name if not the base model's.
    - ``data``: IFT data: local ``.jsonl``/``.json``/``.parquet`` or a hub dataset name.
    - ``data_format``: ``auto`` (per record), ``alpaca`` (instruction/input/output),
      ``tulu`` or ``ultrachat`` (``messages``).
    - ``data_split``: split of a hub dataset.
    - ``max_examples``: use only the first N records (None = all).
    - ``template``: ``plain``, ``alpaca`` or ``chat`` (the tokenizer's chat template).
    - ``max_seq_length``: tokens per example; longer ones are cut on the right.
    - ``response_only_loss``: loss on response tokens only (prompt labels = -100).
    - ``add_eos``: append EOS to responses (``plain``/``alpaca`` templates).

    What trains
    - ``lora``: a :class:`LoraSettings` block, or None for full finetuning.
    - ``qk_only``: train only attention query/key projections (full finetuning only).

    Optimisation (Trainer arguments)
    - ``learning_rate`` (paper: picked from 1e-4 / 1e-5), ``lr_scheduler``
      (transformers scheduler name), ``warmup_ratio`` (fraction of steps) or
      ``warmup_steps`` (> 0 overrides the ratio), ``weight_decay``,
      ``max_grad_norm`` (0 = no clipping), ``optim`` (Trainer optimizer name).
    - ``per_device_batch_size`` and ``gradient_accumulation_steps``: effective
      batch = their product x number of processes.
    - ``num_epochs`` or ``max_steps`` (> 0 overrides epochs; 0 or -1 = use ``num_epochs``;
      the paper ran up to 2 epochs).
    - ``dtype``: ``auto`` (the accelerate launcher's mixed precision if set, else bfloat16 where
      the hardware has it: a CPU with AMX-BF16/AVX-512-BF16 or a bf16 GPU; else float32),
      ``float32``, ``bfloat16`` or ``float16`` (GPU only); see :mod:`fullscale.precision`. In
      bfloat16 the forward and backward run under bf16 autocast, the frozen weights (LoRA's base,
      everything but q/k under QK-only) are held in bf16 and the trainable parameters and the
      optimizer state stay float32 (full finetuning keeps float32 master weights). The resolved
      dtype is recorded in ``finetune_config.json`` and a resume in another dtype is refused.
    - ``gradient_checkpointing``: trade compute for memory.
    - ``dataloader_num_workers``.

    Checkpoints and logging
    - ``output_dir``: run folder (``checkpoint-<step>/`` inside).
    - ``save_steps``: checkpoint every N optimizer steps (paper: 50); the final step is saved too.
    - ``save_schedule``: ``linear`` (every ``save_steps``, the default) or ``log`` (at ``save_steps`` x 1, 2,
      4, 8, ...: a long run's trajectory on a log scale, :meth:`is_save_step`); the final step either way.
    - ``save_total_limit``: keep at most N checkpoints (None = all; a trajectory needs all).
    - ``keep_optimizer_states``: ``last`` (default) deletes the optimizer/scheduler state of
      every checkpoint but the newest once a newer one is complete (a 7B Adam state is about
      twice the fp32 model; resuming needs only the newest); ``all`` keeps them.
    - ``logging_steps``: log the loss every N steps.
    - ``resume``: continue from the last complete checkpoint in ``output_dir``
      when one exists (False with existing checkpoints is an error). A resumed run
      must use the same number-changing settings and the same input files as the
      segment before it (learning rate, schedule, batch, data file contents, ...;
      ``max_steps``/``num_epochs`` may change only with a ``constant`` schedule); a
      difference is refused with the fields named unless ``force_resume``.
    - ``force_resume``: resume even though such settings or inputs changed; every
      segment's settings and start step are kept in ``finetune_config.json``.
    - ``seed``: seeds model init (LoRA), data order and dropout.
    - ``data_order``: ``shuffle`` (a seeded reshuffle every epoch, the default) or ``sequential`` (the data
      file's order, every epoch: a curriculum, e.g. the controlled experiment's second-phase positive
      control).
    - ``report_to``: Trainer reporting integrations (e.g. ``["wandb"]``; default none).

    Paper mitigations
    - ``filter_fraction``: drop this fraction of context-bearing examples with the
      lowest context-criticality before training (paper: 0.25; 0 = off).
    - ``filter_scores``: score table from ``cpi data score-context`` (``example_id`` +
      criterion column); None = score now with ``filter_method``.
    - ``filter_method``: ``loss`` (base-model response loss with vs without context) or ``lexical``.
    - ``filter_criterion``: ``gap`` (loss without - with context) or ``loss_without_context``
      (the paper's literal rule: lowest target loss without context).
    - ``augment_fraction``: share of the final training set made of counterfactual
      (entity-swapped) context-QA examples (paper: 0.10 Alpaca, 0.01 TULU; 0 = off).
    - ``augment_sources``: conflict sets to generate them from.
    - ``augment_exclude``: evaluation sets/files whose items (by id and by
      context text) must not be used; tracking sets are always excluded.
    - ``tracking``: a :class:`TrackingSettings` block or None.
    """

    base_model: str = ""
    tokenizer: str | None = None
    data: str = ""
    data_format: Literal["auto", "alpaca", "tulu", "ultrachat"] = "auto"
    data_split: str = "train"
    max_examples: int | None = None
    template: str = "alpaca"
    max_seq_length: int = 1024
    response_only_loss: bool = True
    add_eos: bool = True
    lora: LoraSettings | None = None
    qk_only: bool = False
    learning_rate: float = 2e-5
    lr_scheduler: str = "linear"
    warmup_ratio: float = 0.03
    warmup_steps: int = 0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    optim: str = "adamw_torch"
    per_device_batch_size: int = 8
    gradient_accumulation_steps: int = 16
    num_epochs: float = 2.0
    max_steps: int = -1
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    gradient_checkpointing: bool = False
    dataloader_num_workers: int = 0
    output_dir: str = ""
    save_steps: int = 50
    save_schedule: Literal["linear", "log"] = "linear"
    save_total_limit: int | None = None
    keep_optimizer_states: Literal["last", "all"] = "last"
    logging_steps: int = 10
    resume: bool = True
    force_resume: bool = False
    seed: int = 0
    data_order: Literal["shuffle", "sequential"] = "shuffle"
    report_to: tuple[str, ...] = ()
    filter_fraction: float = 0.0
    filter_scores: str | None = None
    filter_method: Literal["loss", "lexical"] = "loss"
    filter_criterion: Literal["gap", "loss_without_context"] = "gap"
    augment_fraction: float = 0.0
    augment_sources: tuple[str, ...] = ()
    augment_exclude: tuple[str, ...] = ()
    tracking: TrackingSettings | None = None

    #: added after runs existed: at this value a config's content (:meth:`content_dict`) is as before
    ADDED_LATER = {"save_schedule": "linear"}
    #: fields of earlier versions -> how to say the same with ``dtype``
    RENAMED = {"precision": "replaced by 'dtype' (auto, float32, bfloat16; precision fp32/bf16/fp16 is dtype "
                            "float32/bfloat16/float16)",
               "model_dtype": "replaced by 'dtype' (auto, float32, bfloat16; the frozen weights follow dtype now)"}

    def __post_init__(self) -> None:
        # accept plain mappings/lists from Python callers too (from_dict/replace already convert them)
        if isinstance(self.lora, dict):
            object.__setattr__(self, "lora", LoraSettings.from_dict(self.lora, source="lora"))
        if isinstance(self.tracking, dict):
            object.__setattr__(self, "tracking", TrackingSettings.from_dict(self.tracking, source="tracking"))
        for name in ("report_to", "augment_sources", "augment_exclude"):
            value = getattr(self, name)
            if isinstance(value, (list, str)):
                object.__setattr__(self, name, (value,) if isinstance(value, str) else tuple(value))
        super().__post_init__()

    def with_overrides(self, assignments: Sequence[str]) -> "FinetuneConfig":
        """``Config.with_overrides``, plus: ``1e-4``-style numbers count as floats (YAML 1.1 reads
        them as strings), and ``lora.rank=16`` / ``tracking.every_steps=10`` set one field of a block
        (a missing block starts from its defaults)."""
        self._refuse_renamed(item.partition("=")[0].strip() for item in assignments)
        fixed, nested = [], {}
        for item in assignments:
            key, sep, raw = item.partition("=")
            if sep and _EXP_FLOAT.fullmatch(raw.strip()):
                raw = repr(float(raw))
            head, dot, sub = key.strip().partition(".")
            if sep and dot and head in ("lora", "tracking"):
                nested.setdefault(head, []).append(f"{sub}={raw}")
            else:
                fixed.append(f"{key}{sep}{raw}")
        cfg = super().with_overrides(fixed)
        for head, items in nested.items():
            block = getattr(cfg, head) or (LoraSettings() if head == "lora" else TrackingSettings())
            cfg = cfg.replace(**{head: block.with_overrides(items)})
        return cfg

    def is_save_step(self, step: int) -> bool:
        """Whether ``step`` is on the checkpoint schedule (the final step is saved as well).

        >>> cfg = FinetuneConfig(base_model="b", data="d", output_dir="o", save_steps=3, save_schedule="log")
        >>> [s for s in range(1, 30) if cfg.is_save_step(s)]
        [3, 6, 12, 24]
        """
        whole, rest = divmod(step, self.save_steps)
        if step < 1 or rest:
            return False
        return self.save_schedule == "linear" or whole & (whole - 1) == 0

    def validate(self) -> None:
        import math

        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"field '{f.name}': must be a finite number, got {value}")
        if not self.base_model.strip():
            raise ConfigError("field 'base_model': required (a model folder or hub name)")
        if not self.data.strip():
            raise ConfigError("field 'data': required (an IFT data file or hub dataset name)")
        if not self.output_dir.strip():
            raise ConfigError("field 'output_dir': required")
        _check_template_field("template", self.template)
        if self.lr_scheduler not in _SCHEDULES:
            raise ConfigError(f"field 'lr_scheduler': unknown schedule {self.lr_scheduler!r} "
                              f"(known: {', '.join(_SCHEDULES)})")
        check_at_least(self, max_seq_length=1, per_device_batch_size=1, gradient_accumulation_steps=1, save_steps=1,
                       logging_steps=1, max_examples=1, dataloader_num_workers=0)
        if self.learning_rate <= 0:
            raise ConfigError(f"field 'learning_rate': must be > 0, got {self.learning_rate}")
        check_in_interval(self, warmup_ratio="[0, 1)")
        if self.warmup_steps < 0 or self.weight_decay < 0 or self.max_grad_norm < 0:
            raise ConfigError("fields 'warmup_steps', 'weight_decay', 'max_grad_norm' must be >= 0")
        if self.max_steps <= 0 and self.num_epochs <= 0:
            raise ConfigError("fields 'num_epochs'/'max_steps': set num_epochs > 0 or max_steps > 0")
        if self.save_total_limit is not None and self.save_total_limit < 1:
            raise ConfigError(f"field 'save_total_limit': must be >= 1 or null, got {self.save_total_limit}")
        if self.qk_only and self.lora is not None:
            raise ConfigError("field 'qk_only': QK-only finetuning is full finetuning of the q/k projections; "
                              "remove the 'lora' block (or give lora.target_modules: [q_proj, k_proj] instead)")
        check_in_interval(self, filter_fraction="[0, 1)", augment_fraction="[0, 1)")
        if self.augment_fraction > 0 and not self.augment_sources:
            raise ConfigError("field 'augment_sources': needed when augment_fraction > 0 (conflict sets to swap)")


#: how an experiment's finetuning trains: LoRA adapters, every weight, or only the query/key projections
METHODS = ("lora", "full", "qk_only")
Method = Literal["lora", "full", "qk_only"]
_DRIVER = {f.name: f.default for f in dataclasses.fields(FinetuneConfig)}
_LORA = {f.name: f.default for f in dataclasses.fields(LoraSettings)}


@dataclass(frozen=True)
class FinetuneSettings(Config):
    """The finetuning knobs an experiment varies, mapped onto :class:`FinetuneConfig` by
    :meth:`finetune_config` (the one mapping; what it fixes is listed there).

    ``method`` = ``lora`` (rank ``lora_rank``, scaling ``lora_alpha``, on every linear layer), ``full`` or
    ``qk_only`` (the paper's mitigation: only query/key projections train); ``steps`` optimizer steps of
    ``batch_size`` records (no accumulation), a checkpoint every ``save_steps`` (the base is step 0; with
    ``save_schedule: log`` at ``save_steps`` x 1, 2, 4, ...);
    ``learning_rate`` and ``lr_scheduler`` (no warm-up, no weight decay); ``max_seq_length`` tokens per record,
    prompt ``template``; ``filter_fraction`` > 0 drops that fraction of the records with the lowest
    ``cpi data score-context`` score ``filter_criterion``, scored by the base: ``loss_without_context``
    (the paper's rule: the response's loss without its context, i.e. answerable without it) or ``gap``
    (loss without minus with context: the context helps least); ``gradient_checkpointing`` recomputes
    activations in the backward pass (less memory, more time; the same numbers); ``data_order``:
    ``shuffle`` (each epoch reshuffled) or ``sequential`` (the data file's order: a second training phase
    needs it).

    The defaults are the driver's (:class:`FinetuneConfig`, :class:`LoraSettings`), except ``steps``,
    which the driver counts in epochs; an experiment states its own values in a subclass
    (``experiments.controlled.config.TrainSettings``, ``experiments.organism.experiment.OrganismFinetune``).
    Messages name the fields ``finetune.<name>``: every experiment nests this block as ``finetune``.

    >>> s = FinetuneSettings(method="lora", steps=4, save_steps=2, lora_rank=8)
    >>> ft = s.finetune_config("base", "ift.jsonl", "out", seed=1)
    >>> ft.lora.rank, ft.max_steps, ft.per_device_batch_size, ft.logging_steps, ft.learning_rate
    (8, 4, 8, 1, 2e-05)
    """

    method: Method = "full"
    steps: int = 100
    save_steps: int = _DRIVER["save_steps"]
    save_schedule: Literal["linear", "log"] = _DRIVER["save_schedule"]
    batch_size: int = _DRIVER["per_device_batch_size"]
    learning_rate: float = _DRIVER["learning_rate"]
    lr_scheduler: str = _DRIVER["lr_scheduler"]
    lora_rank: int = _LORA["rank"]
    lora_alpha: float = _LORA["alpha"]
    max_seq_length: int = _DRIVER["max_seq_length"]
    template: str = _DRIVER["template"]
    filter_fraction: float = _DRIVER["filter_fraction"]
    gradient_checkpointing: bool = _DRIVER["gradient_checkpointing"]
    filter_criterion: Literal["gap", "loss_without_context"] = _DRIVER["filter_criterion"]
    data_order: Literal["shuffle", "sequential"] = _DRIVER["data_order"]

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
        if self.lr_scheduler not in _SCHEDULES:
            raise ConfigError(f"field 'finetune.lr_scheduler': unknown schedule {self.lr_scheduler!r} "
                              f"(known: {', '.join(_SCHEDULES)})")
        _check_template_field("finetune.template", self.template)

    def finetune_config(self, base_model: Any, data: Any, output_dir: Any, seed: int, *, dtype: str = "float32",
                        filter_scores: Any = None) -> FinetuneConfig:
        """The driver's config of one run: these settings, plus what every experiment fixes: Alpaca-format
        records, no warm-up, no weight decay, no gradient accumulation, LoRA dropout 0, the loss filter
        (``filter_method: loss``; ``filter_scores``, a ``score-context`` table, is passed only when
        filtering), the loss logged every ``save_steps // 2`` steps."""
        lora = (LoraSettings(rank=self.lora_rank, alpha=self.lora_alpha, dropout=0.0)
                if self.method == "lora" else None)
        return FinetuneConfig(
            base_model=str(base_model), data=str(data), data_format="alpaca", template=self.template,
            max_seq_length=self.max_seq_length, lora=lora, qk_only=self.method == "qk_only",
            learning_rate=self.learning_rate, lr_scheduler=self.lr_scheduler, warmup_ratio=0.0, weight_decay=0.0,
            per_device_batch_size=self.batch_size, gradient_accumulation_steps=1, max_steps=self.steps,
            dtype=dtype, output_dir=str(output_dir), save_steps=self.save_steps, save_schedule=self.save_schedule,
            logging_steps=max(1, self.save_steps // 2), seed=seed, filter_fraction=self.filter_fraction,
            filter_method="loss", filter_criterion=self.filter_criterion,
            filter_scores=str(filter_scores) if (filter_scores is not None and self.filter_fraction > 0) else None,
            gradient_checkpointing=self.gradient_checkpointing, data_order=self.data_order,
        )
