"""Instruction finetuning that saves checkpoint trajectories, on the Hugging Face ``Trainer``.

:func:`run_finetune` runs ``transformers.Trainer`` (which runs on Accelerate)
and adds nothing to the training loop that Trainer/Accelerate already do: the
optimizer, learning-rate schedule, gradient accumulation, mixed precision,
checkpointing, resuming and DDP/FSDP all come from them, so the same code runs
on one CPU process (tests) and under ``accelerate launch``/``torchrun``.

What this module adds, as Trainer callbacks and one small subclass (defined in
:mod:`fullscale.trainer`, which imports torch/transformers and is loaded by the runner):

- :class:`~fullscale.trainer.CpiTrainer` — (1) *atomic checkpoints*: Trainer writes each
  checkpoint into ``.tmp-checkpoint-<step>/`` and it is renamed to
  ``checkpoint-<step>/`` only once complete (transformers' own
  ``_save_checkpoint`` writes straight into the final folder, and its SIGTERM
  "JIT checkpoint" marks incomplete folders with a sentinel file that
  ``get_last_checkpoint`` does not check); (2) records whether any micro-batch
  loss was non-finite; (3) excludes partially-frozen (QK-only fused QKV)
  matrices from weight decay so their frozen slices stay bit-identical.
- :class:`~fullscale.trainer.TrainingGuard` callback — stops on a non-finite loss or gradient
  *before* the optimizer step (gradients are dropped, nothing is saved), and on
  SIGINT/SIGTERM finishes the current step, saves a checkpoint and stops (a
  second signal aborts at once). In multi-process runs the stop flags are
  all-reduced so every rank stops at the same step.
- :class:`~fullscale.trainer.RelianceTracker` callback — every N steps scores a small
  knowledge-conflict subset with :func:`fullscale.scoring.score_logprob`, logs
  it to ``reliance.csv`` and optionally keeps the checkpoint with the highest
  context reliance (an early-stopping mitigation the paper hints at).

Output folder layout (``output_dir``): ``checkpoint-<step>/`` (Trainer layout:
a reloadable model or LoRA-adapter folder with tokenizer, optimizer, scheduler,
RNG and ``trainer_state.json``), ``finetune_config.json`` (config + run
metadata), ``train_log.csv`` (one row per logged step), ``data_summary.json``,
and with tracking ``reliance.csv``, ``reliance_items.csv``,
``best_reliance.json``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Sequence

from cpi.config import Config, check_at_least, check_in_interval
from cpi.errors import ConfigError, CpiError, Interrupted

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

log = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "checkpoint"
STAGING_PREFIX = ".tmp-checkpoint"
INTERRUPTED_PREFIX = "interrupted-checkpoint"
_INTERRUPTED_RE = re.compile(r"^interrupted-checkpoint-(\d+)$")
CONFIG_FILE = "finetune_config.json"
_CKPT_RE = re.compile(r"^checkpoint-(\d+)$")
_EXP_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")
_SCHEDULES = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
              "inverse_sqrt", "reduce_lr_on_plateau", "cosine_with_min_lr", "warmup_stable_decay")


class FinetuneInterrupted(Interrupted):
    """SIGINT/SIGTERM stopped the run after finishing a step; a resume point of that step was saved.

    An off-cadence step is saved as ``interrupted-checkpoint-<step>/`` (not ``checkpoint-<step>``),
    so that the trajectory later stages read keeps the ``save_steps`` cadence; the next run
    resumes from it and deletes it once a later checkpoint exists.
    """


class NonFiniteLossError(CpiError):
    """A non-finite loss or gradient stopped the run; nothing was saved after the last good checkpoint."""


# ---------------------------------------------------------------------------
# config


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


#: fields of earlier versions -> how to say the same with ``dtype``
_RENAMED = {"precision": "precision fp32/bf16/fp16 is dtype float32/bfloat16/float16",
            "model_dtype": "the frozen weights follow dtype now"}


def _refuse_renamed(keys: Any) -> None:
    for key in keys:
        if key in _RENAMED:
            raise ConfigError(f"field '{key}': replaced by 'dtype' (auto, float32, bfloat16; {_RENAMED[key]})")


def _check_template_field(name: str, value: str) -> None:
    from fullscale.ift_data import TEMPLATES

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
    save_total_limit: int | None = None
    keep_optimizer_states: Literal["last", "all"] = "last"
    logging_steps: int = 10
    resume: bool = True
    force_resume: bool = False
    seed: int = 0
    report_to: tuple[str, ...] = ()
    filter_fraction: float = 0.0
    filter_scores: str | None = None
    filter_method: Literal["loss", "lexical"] = "loss"
    filter_criterion: Literal["gap", "loss_without_context"] = "gap"
    augment_fraction: float = 0.0
    augment_sources: tuple[str, ...] = ()
    augment_exclude: tuple[str, ...] = ()
    tracking: TrackingSettings | None = None

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

    @classmethod
    def _from_dict(cls, data: Any, prefix: str) -> "FinetuneConfig":
        if isinstance(data, dict) or hasattr(data, "keys"):
            _refuse_renamed(data.keys())
        return super()._from_dict(data, prefix)

    def with_overrides(self, assignments: Sequence[str]) -> "FinetuneConfig":
        """``Config.with_overrides``, plus: ``1e-4``-style numbers count as floats (YAML 1.1 reads
        them as strings), and ``lora.rank=16`` / ``tracking.every_steps=10`` set one field of a block
        (a missing block starts from its defaults)."""
        _refuse_renamed(item.partition("=")[0].strip() for item in assignments)
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


# ---------------------------------------------------------------------------
# output folder: complete checkpoints, stale staging folders


def list_checkpoints(output_dir: str | Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of every ``checkpoint-<step>/`` folder, sorted by step."""
    out = Path(output_dir)
    if not out.is_dir():
        return []
    found = []
    for p in out.iterdir():
        m = _CKPT_RE.match(p.name)
        if m and p.is_dir():
            found.append((int(m.group(1)), p))
    return sorted(found)


def is_complete_checkpoint(path: str | Path) -> bool:
    """True if ``path`` holds a trainer state and model (or adapter) weights."""
    p = Path(path)
    if not (p / "trainer_state.json").is_file():
        return False
    weights = list(p.glob("*.safetensors")) + list(p.glob("pytorch_model*.bin")) + list(p.glob("adapter_model.*"))
    sharded_fsdp = any(p.glob("pytorch_model_fsdp*"))
    return bool(weights) or sharded_fsdp


def last_complete_checkpoint(output_dir: str | Path) -> Path | None:
    """The highest-step complete checkpoint in ``output_dir`` (None if none)."""
    for step, path in reversed(list_checkpoints(output_dir)):
        if is_complete_checkpoint(path):
            return path
        log.warning("%s: incomplete checkpoint (no trainer_state.json or weights); skipped", path)
    return None


def list_interrupted(output_dir: str | Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of every ``interrupted-checkpoint-<step>/`` resume point, sorted by step."""
    out = Path(output_dir)
    if not out.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in out.iterdir() if p.is_dir() and (m := _INTERRUPTED_RE.match(p.name))]
    return sorted(found)


def resume_point(output_dir: str | Path) -> Path | None:
    """Where a rerun continues: the newest complete checkpoint, or a newer complete interrupt resume point."""
    last = last_complete_checkpoint(output_dir)
    last_step = int(_CKPT_RE.match(last.name).group(1)) if last is not None else -1
    for step, path in reversed(list_interrupted(output_dir)):
        if step > last_step and is_complete_checkpoint(path):
            return path
    return last


def remove_superseded_interrupts(output_dir: str | Path) -> list[Path]:
    """Delete interrupt resume points that a later checkpoint (or resume point) has replaced."""
    ckpts = [step for step, path in list_checkpoints(output_dir)]
    inter = list_interrupted(output_dir)
    newest = max(ckpts + [step for step, _ in inter], default=-1)
    removed = []
    for step, path in inter:
        if step < newest or (ckpts and step <= max(ckpts)):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def remove_stale_staging(output_dir: str | Path) -> list[Path]:
    """Delete ``.tmp-checkpoint-*`` folders left by a run killed while saving."""
    out = Path(output_dir)
    removed = []
    if out.is_dir():
        for p in out.iterdir():
            if p.name.startswith((STAGING_PREFIX, ".old-checkpoint")) and p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
    if removed:
        log.warning("removed %d incomplete checkpoint folder(s) left by an interrupted save: %s",
                    len(removed), ", ".join(p.name for p in removed))
    return removed


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def publish_checkpoint(staged: Path, final: Path) -> None:
    """Move a finished checkpoint folder into place with a rename (replacing an older one of the same step)."""
    old = None
    if final.exists():
        old = final.with_name(f".old-{final.name}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(staged, final)
    _fsync_dir(final.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


_OPTIMIZER_STATE = ("optimizer.pt", "optimizer.bin", "scheduler.pt", "scaler.pt")


def prune_optimizer_states(output_dir: str | Path, keep: str | Path) -> int:
    """Delete optimizer/scheduler/scaler states from every checkpoint but ``keep`` (the newest);
    model weights, tokenizer, RNG and trainer state stay. Returns the number of paths removed."""
    removed = 0
    for _, ck in list_checkpoints(output_dir):
        if ck.resolve() == Path(keep).resolve():
            continue
        for p in ck.iterdir():
            if p.name in _OPTIMIZER_STATE or (p.name.startswith("optimizer_") and p.is_dir()):
                shutil.rmtree(p) if p.is_dir() else p.unlink()
                removed += 1
    return removed


# ---------------------------------------------------------------------------
# the run


def _has_accelerator() -> bool:
    import torch

    xpu = getattr(torch, "xpu", None)
    mps = getattr(torch.backends, "mps", None)
    return bool(torch.cuda.is_available() or (xpu is not None and xpu.is_available())
                or (mps is not None and mps.is_available()))


def resolved_dtype(config: FinetuneConfig) -> Any:
    """The ``torch.dtype`` the run trains in: ``config.dtype`` on this machine's device
    (:func:`fullscale.precision.resolve_dtype`); with ``auto``, an accelerate launcher's
    ``ACCELERATE_MIXED_PRECISION`` (bf16/fp16) wins."""
    import torch

    from fullscale.precision import resolve_dtype

    env = os.environ.get("ACCELERATE_MIXED_PRECISION", "no")
    if config.dtype == "auto" and env in ("bf16", "fp16"):
        return torch.bfloat16 if env == "bf16" else torch.float16
    return resolve_dtype(config.dtype, "cuda" if torch.cuda.is_available() else "cpu")


def _load_dtype(config: FinetuneConfig, dtype: Any) -> Any:
    """LoRA's base is all frozen: loaded in bf16 directly; otherwise float32 (master weights; the
    frozen part is cast down after freezing, :func:`hold_frozen_in`)."""
    import torch

    return torch.bfloat16 if dtype == torch.bfloat16 and config.lora is not None else torch.float32


def _attention_kwargs(dtype: Any) -> dict[str, Any]:
    """``attn_implementation="eager"`` for bf16 on a CPU: there torch's fused (flash) attention is slower
    in bf16 than in float32 (forward + backward, batch 8 x 9 heads x 128 positions x d_head 64, one thread:
    70 ms bf16 against 29 ms float32) while the plain matmul-and-softmax attention takes 24 ms in bf16
    (``benchmarks/profile_finetune.py``, BENCHMARKS.md). Otherwise the model's default."""
    import torch

    return {"attn_implementation": "eager"} if dtype == torch.bfloat16 and not torch.cuda.is_available() else {}


def _skip_adapter_input_casts(model: Any) -> None:
    """Under autocast, PEFT's cast of each adapter's input to the adapter's float32 is undone at once by
    autocast (the adapter's matmul runs in bf16 anyway): turn it off (``cast_input_dtype_enabled``, what
    ``peft.helpers.disable_input_dtype_casting`` sets); the numbers are the same, two activation copies
    per adapter and pass fewer."""
    for module in model.modules():
        if hasattr(module, "cast_input_dtype_enabled") or hasattr(module, "lora_A"):
            module.cast_input_dtype_enabled = False


def hold_frozen_in(model: Any, dtype: Any) -> int:
    """Cast every frozen floating-point parameter of ``model`` to ``dtype`` in place (tied weights stay
    tied: the same ``Parameter`` is cast once); trainable ones keep their dtype. Returns how many."""
    n = 0
    for p in model.parameters():
        if not p.requires_grad and p.is_floating_point() and p.dtype != dtype:
            p.data = p.data.to(dtype)
            n += 1
    return n


def load_base(config: FinetuneConfig, dtype: Any = None) -> tuple[Any, Any]:
    """Load the base model and tokenizer (pad token = EOS if the tokenizer has none). ``dtype``: the
    run's resolved dtype (default: :func:`resolved_dtype`); the weights load in float32 but for LoRA in bf16."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from fullscale.models import resolve_model

    base = str(resolve_model(config.base_model))  # a registry name becomes its cached folder
    if Path(base).exists():
        base = str(Path(base).resolve())  # so a LoRA adapter's base_model_name_or_path is absolute
    tok_src = str(resolve_model(config.tokenizer)) if config.tokenizer else base
    if config.tokenizer and Path(tok_src).exists():
        tok_src = str(Path(tok_src).resolve())
    try:
        tokenizer = AutoTokenizer.from_pretrained(tok_src)
    except (OSError, ValueError) as exc:
        raise CpiError(f"tokenizer {tok_src!r}: cannot load: {str(exc).splitlines()[0]}") from exc
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise CpiError(f"tokenizer {tok_src!r}: has neither a pad nor an EOS token")
        tokenizer.pad_token = tokenizer.eos_token
        log.info("tokenizer has no pad token; using EOS %r for padding", tokenizer.eos_token)
    from safetensors import SafetensorError

    try:
        dtype = resolved_dtype(config) if dtype is None else dtype
        model = AutoModelForCausalLM.from_pretrained(base, dtype=_load_dtype(config, dtype),
                                                     **_attention_kwargs(dtype))
    except SafetensorError as exc:
        raise CpiError(f"base_model {config.base_model!r}: corrupt or truncated safetensors file: {exc}") from exc
    except (OSError, ValueError, KeyError) as exc:
        raise CpiError(f"base_model {config.base_model!r}: cannot load: {str(exc).splitlines()[0]}") from exc
    model.config.use_cache = False
    return model, tokenizer


def prepare_model(config: FinetuneConfig, model: Any) -> tuple[Any, set[str]]:
    """Apply QK-only freezing or LoRA; returns ``(model, names excluded from weight decay)``."""
    from fullscale.qk_only import apply_qk_only, masked_parameter_names, validate_lora_targets

    no_decay: set[str] = set()
    if config.qk_only:
        plan = apply_qk_only(model)
        no_decay = masked_parameter_names(plan)
    if config.lora is not None:
        from peft import LoraConfig, get_peft_model

        from fullscale.checkpoints import peft_deprecations_silenced

        targets = list(config.lora.target_modules)
        validate_lora_targets(model, targets)
        lcfg = LoraConfig(r=config.lora.rank, lora_alpha=config.lora.alpha, lora_dropout=config.lora.dropout,
                          target_modules="all-linear" if targets == ["all-linear"] else targets,
                          task_type="CAUSAL_LM")
        with peft_deprecations_silenced():
            model = get_peft_model(model, lcfg)
        if config.gradient_checkpointing:
            model.enable_input_require_grads()
    return model, no_decay


def prepare_examples(config: FinetuneConfig, model: Any = None, tokenizer: Any = None,
                     out_dir: Path | None = None, is_main: bool = True, device: Any = None
                     ) -> tuple[list[Any], dict[str, Any]]:
    """Load the IFT data and apply filtering then augmentation; returns ``(examples, summary)``.

    With ``out_dir=None`` the score table of filtering is not written but returned in
    ``summary["_scores"]`` (``run_finetune`` writes it once training starts, so that a failed
    command writes nothing). Filtering with ``filter_method: loss`` and no ``filter_scores``
    scores every example with the base ``model`` here (moved to ``device`` first; in a
    multi-process launch every process scores, so prefer ``cpi data
    score-context`` once and pass its table as ``filter_scores``).
    """
    from fullscale.ift_data import load_ift_data

    examples = load_ift_data(config.data, config.data_format, config.data_split, config.max_examples)
    summary: dict[str, Any] = {"n_loaded": len(examples), "n_filtered_out": 0, "n_augmented": 0}
    if config.filter_fraction > 0:
        from fullscale.curation import filter_examples, lexical_overlap_scores, read_scores, score_context_criticality

        if config.filter_scores:
            scores = read_scores(config.filter_scores)
        elif config.filter_method == "lexical":
            scores = lexical_overlap_scores(examples)
        else:
            if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
                raise CpiError("filter_method 'loss' without filter_scores cannot run under FSDP (the base model "
                               "is not materialised on every rank yet); run `cpi data score-context` once and "
                               "set filter_scores to its scores.csv")
            if device is not None:
                model.to(device)
            scores = score_context_criticality(model, tokenizer, examples, template=config.template,
                                               max_length=config.max_seq_length)
        if is_main and out_dir is not None:
            from cpi.io import atomic_write_table

            atomic_write_table(scores, out_dir / "curation_scores.csv")
        elif out_dir is None:
            summary["_scores"] = scores  # the caller writes it (run_finetune: once training starts)
        criterion = config.filter_criterion if config.filter_method == "loss" or config.filter_scores else "gap"
        kept, dropped = filter_examples(examples, scores, config.filter_fraction, criterion=criterion,
                                        source=str(config.filter_scores or "computed scores"))
        summary["n_filtered_out"] = len(dropped)
        examples = kept
    if config.augment_fraction > 0:
        from fullscale.augment import augment_data

        exclude = list(config.augment_exclude) + (list(config.tracking.conflicts) if config.tracking else [])
        examples, n_aug = augment_data(examples, config.augment_sources, exclude, config.augment_fraction,
                                       seed=config.seed)
        summary["n_augmented"] = n_aug
    return examples, summary


def _tracking_items(config: FinetuneConfig) -> list[Any]:
    import random

    from fullscale.conflicts import load_conflicts

    items = [it for src in config.tracking.conflicts for it in load_conflicts(src)]
    if len(items) > config.tracking.n_items:
        rng = random.Random(config.seed)
        items = sorted(rng.sample(items, config.tracking.n_items), key=lambda it: (it.dataset, it.id))
    return items


#: Fields that may change between the segments of a resumed run: they change no number.
_FREE_FIELDS = frozenset({"output_dir", "logging_steps", "report_to", "dataloader_num_workers", "save_total_limit",
                          "keep_optimizer_states", "resume", "force_resume", "save_steps", "tracking"})
#: Fields that set the run's length: free to change only with a constant schedule.
_LENGTH_FIELDS = frozenset({"max_steps", "num_epochs"})


def input_fingerprints(config: FinetuneConfig) -> dict[str, Any]:
    """Content fingerprints of every input that changes the trained numbers (local files and folders;
    a hub name stands for itself): base model, tokenizer, data, filter scores, augmentation sets."""
    from cpi.fingerprint import checkpoint_fingerprint, source_fingerprint

    def one(source: str | None) -> str | None:
        if not source:
            return None
        if Path(source).is_dir() and not (Path(source) / "config.json").is_file() and \
                not (Path(source) / "adapter_config.json").is_file():
            return source_fingerprint(source)
        if Path(source).is_dir():
            return checkpoint_fingerprint(source)
        return source_fingerprint(source) or source

    def conflict(source: str) -> str | None:
        from fullscale.conflicts import SHIPPED_DATASETS, shipped_path

        return one(str(shipped_path(source)) if source in SHIPPED_DATASETS else source)

    fps: dict[str, Any] = {"base_model": one(config.base_model), "tokenizer": one(config.tokenizer),
                           "data": one(config.data), "filter_scores": one(config.filter_scores)}
    if config.augment_fraction > 0:
        exclude = list(config.augment_exclude) + (list(config.tracking.conflicts) if config.tracking else [])
        fps["augment_sources"] = {src: conflict(src) for src in config.augment_sources}
        fps["augment_exclude"] = {src: conflict(src) for src in exclude}
    return fps


def _read_record(out: Path) -> dict[str, Any] | None:
    path = out / CONFIG_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CpiError(f"{path}: unreadable ({exc}); it records the run's segments: restore it or use another "
                       "output_dir") from exc
    return record if isinstance(record, dict) else None


def recorded_dtype(segment: dict[str, Any]) -> str:
    """The resolved dtype a recorded segment trained in: its ``dtype``, or for a record written before
    it existed, what its ``precision`` meant (``auto`` was float32 without a GPU)."""
    if segment.get("dtype"):
        return str(segment["dtype"])
    old = segment.get("config") or {}
    return {"bf16": "bfloat16", "fp16": "float16"}.get(old.get("precision"), "float32")


def resume_differences(previous: dict[str, Any], config: FinetuneConfig, inputs: dict[str, Any],
                       dtype: str | None = None) -> list[str]:
    """What differs between the last segment (``{"config", "inputs", "dtype"}``) and this one, in
    settings, the resolved dtype (``dtype``, default :func:`resolved_dtype` here) or input contents
    that change the trained numbers (see :data:`_FREE_FIELDS`)."""
    from fullscale.precision import dtype_name

    old, new = previous.get("config") or {}, config.to_dict()
    diffs = [k for k in sorted(set(old) & set(new)) if k not in _FREE_FIELDS and old[k] != new[k]]
    if old.get("lr_scheduler") == new["lr_scheduler"] == "constant":
        diffs = [k for k in diffs if k not in _LENGTH_FIELDS]
    details = [f"{k} ({old[k]!r} -> {new[k]!r})" for k in diffs]
    was, now = recorded_dtype(previous), dtype or dtype_name(resolved_dtype(config))
    if was != now and "dtype" not in diffs:
        details.append(f"resolved dtype ({was!r} -> {now!r})")
    old_inputs = previous.get("inputs")
    if isinstance(old_inputs, dict):
        for name, fp in inputs.items():
            if name in old_inputs and old_inputs[name] != fp and name not in diffs:
                details.append(f"contents of {name}")
    return details


def _check_inputs(config: FinetuneConfig) -> None:
    """One-line errors for inputs that cannot work, before anything is loaded or written."""
    from cpi.io import check_input_file

    for name in ("base_model", "tokenizer"):
        value = getattr(config, name)
        if not value:
            continue
        looks_local = value.startswith((".", "/", "~")) or os.sep in value.rstrip(os.sep) and value.count("/") != 1
        if looks_local and not Path(value).expanduser().exists():
            raise CpiError(f"{name} {value!r}: no such folder (give a model folder or a hub name 'org/name')")
        if Path(value).is_file():
            raise CpiError(f"{name} {value!r}: is a file; give the model folder that holds it")
    data = Path(config.data)
    if data.exists() and data.suffix != ".parquet":
        check_input_file(data, "data")
    if config.filter_scores:
        check_input_file(config.filter_scores, "filter_scores")


def _segment_start(checkpoint: Path | None) -> int:
    if checkpoint is None:
        return 0
    try:
        return int(json.loads((checkpoint / "trainer_state.json").read_text()).get("global_step", 0))
    except (OSError, ValueError):
        return 0


def _already_complete(checkpoint: Path | None, config: FinetuneConfig, differences: list[str]) -> int | None:
    """The step a finished run reached if this config would train nothing more, else None."""
    if checkpoint is None:
        return None
    try:
        state = json.loads((checkpoint / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return None
    step, planned = int(state.get("global_step", 0)), int(state.get("max_steps", 0) or 0)
    if config.max_steps > 0:
        return step if step >= config.max_steps else None
    if planned and step >= planned and not any(d.startswith(("num_epochs", "max_steps")) for d in differences):
        return step
    return None


def run_finetune(config: FinetuneConfig, callbacks: Sequence[Any] = ()) -> Path:
    """Instruction-finetune ``config.base_model`` on ``config.data``; returns ``config.output_dir``.

    Resumes from the last complete ``checkpoint-<step>/`` (or a newer interrupt resume
    point) when ``config.resume``; a resume whose number-changing settings or input contents
    differ from the last segment is refused unless ``config.force_resume``
    (:func:`resume_differences`). Bad input raises :class:`CpiError` before anything is
    written into ``output_dir``, which is locked (:class:`cpi.lock.FolderLock`) while the run
    writes. ``callbacks``: extra ``transformers.TrainerCallback`` objects (run before the
    guard, so its stop decisions win). Raises :class:`NonFiniteLossError` (a ``CpiError``) or
    :class:`FinetuneInterrupted` (exit code 130 in the CLI) after saving what can be saved.
    """
    import contextlib

    import transformers
    from transformers import TrainingArguments

    from cpi.io import check_out_dir
    from cpi.lock import FolderLock
    from cpi.progress import progress_enabled

    import torch

    if not progress_enabled():
        transformers.utils.logging.disable_progress_bar()
    out = check_out_dir(config.output_dir, "output_dir")
    _check_inputs(config)
    inputs = input_fingerprints(config)
    dtype = resolved_dtype(config)
    args = TrainingArguments(
        output_dir=str(out),
        per_device_train_batch_size=config.per_device_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_steps if config.warmup_steps > 0 else config.warmup_ratio,
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        optim=config.optim,
        num_train_epochs=config.num_epochs,
        max_steps=config.max_steps if config.max_steps > 0 else -1,  # 0 means "use num_epochs" too
        bf16=dtype == torch.bfloat16,
        fp16=dtype == torch.float16,
        activation_checkpointing=config.gradient_checkpointing,
        dataloader_pin_memory=torch.cuda.is_available(),
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        logging_strategy="steps",
        logging_steps=config.logging_steps,
        logging_first_step=True,
        seed=config.seed,
        data_seed=config.seed,
        report_to=list(config.report_to) or "none",
        disable_tqdm=not progress_enabled(),
        dataloader_num_workers=config.dataloader_num_workers,
        remove_unused_columns=False,
        label_names=["labels"],
        ddp_find_unused_parameters=False,
        # without an accelerator, tell Accelerate to use the CPU: then `torchrun --nproc_per_node N` on a
        # CPU-only machine runs real multi-process DDP (gloo) instead of N independent single-process runs
        use_cpu=not _has_accelerator(),
    )
    is_main = args.process_index == 0
    lock = FolderLock(out, "cpi finetune") if is_main else contextlib.nullcontext()
    with lock:
        return _run_locked(config, args, out, inputs, is_main, callbacks, dtype)


def _run_locked(config: FinetuneConfig, args: Any, out: Path, inputs: dict[str, Any], is_main: bool,
                callbacks: Sequence[Any], dtype: Any) -> Path:
    import datetime

    import transformers
    from fullscale.collate import ResponseLogitsCollator, accepts_logits_to_keep
    from transformers.trainer_callback import PrinterCallback

    from cpi.io import atomic_write_json, atomic_write_table, run_metadata
    from fullscale.ift_data import tokenize_examples
    from fullscale.precision import dtype_name

    import torch

    # output folder: resume point and its compatibility; nothing is written before training starts
    with args.main_process_first(desc="prepare output folder"):
        resume_from = resume_point(out)
        if resume_from is not None and not config.resume:
            raise CpiError(f"{out}: already holds checkpoints (last: {resume_from.name}); set resume: true to "
                           "continue, or choose another output_dir")
        record = _read_record(out) if resume_from is not None else None
        segments = list(record.get("segments") or []) if record else []
        if record and not segments and "config" in record:  # written before segments were recorded
            segments = [{"start_step": None, "config": record["config"], "inputs": None}]
        differences = resume_differences(segments[-1], config, inputs, dtype_name(dtype)) if segments else []
        if differences and not config.force_resume:
            raise CpiError(f"{out}: resuming with changed {', '.join(differences)}; a trajectory must not mix "
                           "them: restore them, use another output_dir, or set force_resume: true")
        done_step = _already_complete(resume_from, config, differences)
        if done_step is not None:
            log.warning("%s: already trained to step %d (nothing to do); skipped", out, done_step)
            if is_main and _INTERRUPTED_RE.match(resume_from.name) and done_step == config.max_steps:
                # an interrupt landed on the final step: an uninterrupted run saves its final step as a
                # checkpoint, so the resume point becomes that checkpoint
                publish_checkpoint(resume_from, out / f"{CHECKPOINT_PREFIX}-{done_step}")
            return out
        if is_main:
            remove_stale_staging(out)

    transformers.set_seed(config.seed)
    model, tokenizer = load_base(config, dtype)
    examples, summary = prepare_examples(config, model, tokenizer, None, is_main, device=args.device)
    scores = summary.pop("_scores", None)
    model, no_decay = prepare_model(config, model)
    if dtype != torch.float32:
        hold_frozen_in(model, dtype)
        if config.lora is not None:
            _skip_adapter_input_casts(model)
    features, dropped = tokenize_examples(examples, tokenizer, config.template, config.max_seq_length,
                                          config.response_only_loss, config.add_eos)
    if not features:
        raise CpiError(f"{config.data}: no example has a response token within max_seq_length={config.max_seq_length}")
    summary.update(n_dropped_too_long=len(dropped), n_train=len(features),
                   n_trainable_params=sum(p.numel() for p in model.parameters() if p.requires_grad))
    start = _segment_start(resume_from)
    if is_main:  # everything checked and loaded: record this segment, then train
        out.mkdir(parents=True, exist_ok=True)
        segments.append({"start_step": start, "config": config.to_dict(), "inputs": inputs, "dtype": dtype_name(dtype),
                         "forced_changes": differences,
                         "started_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")})
        atomic_write_json(out / CONFIG_FILE, {"config": config.to_dict(), "dtype": dtype_name(dtype), "inputs": inputs,
                                              "segments": segments,
                                              "meta": run_metadata(resumed_from=resume_from.name if resume_from
                                                                   else None, transformers=transformers.__version__)})
        if scores is not None:
            atomic_write_table(scores, out / "curation_scores.csv")
        atomic_write_json(out / "data_summary.json", summary)
    if differences:
        log.warning("%s: resuming at step %d with changed %s (force_resume: recorded as a new segment)", out, start,
                    ", ".join(differences))
    log.info("training on %d examples (%s)", len(features), summary)

    from fullscale.trainer import CpiTrainer, RelianceTracker, RunComplete, TrainingGuard

    guard = TrainingGuard()
    cbs: list[Any] = []
    if config.tracking is not None:
        cbs.append(RelianceTracker(config.tracking, _tracking_items(config), tokenizer,
                                   config.tracking.template or config.template, out))
    cbs += list(callbacks) + [guard]
    collator = ResponseLogitsCollator(tokenizer, response_logits_only=accepts_logits_to_keep(model),
                                      pad_to_multiple_of=8 if torch.cuda.is_available() else None)
    trainer = CpiTrainer(model=model, args=args, train_dataset=features, data_collator=collator,
                         processing_class=tokenizer, callbacks=cbs, guard=guard, no_decay=no_decay,
                         prune_optimizer_states=config.keep_optimizer_states == "last")
    trainer.remove_callback(PrinterCallback)  # it prints log dicts to stdout; the guard logs them instead
    try:
        trainer.train(resume_from_checkpoint=str(resume_from) if resume_from is not None else None)
    except RunComplete as done:
        log.info("%s: already trained to step %s (max_steps reached); nothing to do", out, done.args[0])
    finally:
        guard.restore_signal_handlers()
        if is_main and trainer.state.log_history:
            import pandas as pd

            atomic_write_table(pd.DataFrame(trainer.state.log_history), out / "train_log.csv")
    interrupted = guard.signal_received is not None and trainer.state.global_step < trainer.state.max_steps
    step = trainer.state.global_step
    if is_main and interrupted and step % config.save_steps != 0:
        # an off-cadence save is a resume point only: the trajectory keeps its save_steps cadence
        saved = out / f"{CHECKPOINT_PREFIX}-{step}"
        if saved.is_dir() and trainer.state.best_model_checkpoint != str(saved):
            publish_checkpoint(saved, out / f"{INTERRUPTED_PREFIX}-{step}")
    if is_main:
        remove_superseded_interrupts(out)
    if args.world_size > 1:
        trainer.accelerator.wait_for_everyone()
    last = resume_point(out)
    if guard.nonfinite_step is not None:
        raise NonFiniteLossError(
            f"non-finite {guard.nonfinite_what} at step {guard.nonfinite_step} (lr={config.learning_rate}); training "
            f"stopped and nothing was saved after it; last good checkpoint: {last if last else 'none'}"
        )
    if interrupted:
        raise FinetuneInterrupted(
            f"interrupted by {signal.Signals(guard.signal_received).name} at step {step}; "
            f"saved {last if last else 'nothing'}; run the same command again to resume", signum=guard.signal_received
        )
    return out


def read_train_log(output_dir: str | Path) -> "pd.DataFrame":
    """The run's ``train_log.csv`` (one row per logged step: ``step, loss, learning_rate, grad_norm, epoch``)."""
    import pandas as pd

    path = Path(output_dir) / "train_log.csv"
    if not path.is_file():
        raise CpiError(f"{path}: no training log (has the run started?)")
    return pd.read_csv(path)
