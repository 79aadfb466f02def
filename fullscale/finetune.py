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

The run is split along its concerns: the settings (:mod:`fullscale.finetune_config`), the run
folder protocol (:mod:`fullscale.run_folder`), model loading and precision
(:mod:`fullscale.finetune_model`), the examples (:mod:`fullscale.finetune_data`) and the resume
checks (:mod:`fullscale.finetune_resume`); their public names are importable from here too.

Output folder layout (``output_dir``): ``checkpoint-<step>/`` (Trainer layout:
a reloadable model or LoRA-adapter folder with tokenizer, optimizer, scheduler,
RNG and ``trainer_state.json``), ``finetune_config.json`` (config + run
metadata), ``train_log.csv`` (one row per logged step), ``data_summary.json``,
and with tracking ``reliance.csv``, ``reliance_items.csv``,
``best_reliance.json``.
"""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from typing import Any, Sequence

from cpi.errors import CpiError, Interrupted
from fullscale.finetune_config import FinetuneConfig, LoraSettings, TrackingSettings
from fullscale.finetune_data import prepare_examples, tracking_items
from fullscale.finetune_model import hold_frozen_in, hold_frozen_weights, load_base, prepare_model, resolved_dtype
from fullscale.finetune_resume import (already_complete, check_inputs, input_fingerprints, recorded_dtype,
                                       resume_differences)
from fullscale.run_folder import (CHECKPOINT_PREFIX, CONFIG_FILE, INTERRUPTED_PREFIX, STAGING_PREFIX, checkpoint_dir_name,
                                  checkpoint_step, finished, is_complete_checkpoint, last_complete_checkpoint, list_checkpoints,
                                  list_interrupted, prune_optimizer_states, publish_checkpoint, read_record,
                                  read_train_log, remove_stale_staging, remove_superseded_interrupts, resume_point,
                                  segment_start)

log = logging.getLogger(__name__)

__all__ = [
    "CHECKPOINT_PREFIX", "CONFIG_FILE", "INTERRUPTED_PREFIX", "STAGING_PREFIX", "FinetuneConfig", "FinetuneInterrupted",
    "LoraSettings", "NonFiniteLossError", "TrackingSettings", "checkpoint_step", "finished", "hold_frozen_in",
    "hold_frozen_weights", "input_fingerprints", "is_complete_checkpoint", "last_complete_checkpoint", "list_checkpoints",
    "list_interrupted", "load_base", "prepare_examples", "prepare_model", "prune_optimizer_states",
    "publish_checkpoint", "read_record", "read_train_log", "recorded_dtype", "remove_stale_staging",
    "remove_superseded_interrupts", "resolved_dtype", "resume_differences", "resume_point", "run_finetune",
]


class FinetuneInterrupted(Interrupted):
    """SIGINT/SIGTERM stopped the run after finishing a step; a resume point of that step was saved.

    An off-cadence step is saved as ``interrupted-checkpoint-<step>/`` (not ``checkpoint-<step>``),
    so that the trajectory later stages read keeps the ``save_steps`` cadence; the next run
    resumes from it and deletes it once a later checkpoint exists.
    """


class NonFiniteLossError(CpiError):
    """A non-finite loss or gradient stopped the run; nothing was saved after the last good checkpoint."""


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

    from fullscale.finetune_model import has_accelerator
    from fullscale.preflight import check_finetune_settings

    if not progress_enabled():
        transformers.utils.logging.disable_progress_bar()
    out = check_out_dir(config.output_dir, "output_dir")
    dtype = resolved_dtype(config)  # the precision first: a setting, refused before any file is read
    check_inputs(config)
    check_finetune_settings(config)  # every setting, before any model load, scoring or writing
    inputs = input_fingerprints(config)
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
        train_sampling_strategy="sequential" if config.data_order == "sequential" else "random",
        report_to=list(config.report_to) or "none",
        disable_tqdm=not progress_enabled(),
        dataloader_num_workers=config.dataloader_num_workers,
        remove_unused_columns=False,
        label_names=["labels"],
        ddp_find_unused_parameters=False,
        # without an accelerator, tell Accelerate to use the CPU: then `torchrun --nproc_per_node N` on a
        # CPU-only machine runs real multi-process DDP (gloo) instead of N independent single-process runs
        use_cpu=not has_accelerator(),
    )
    is_main = args.process_index == 0
    lock = FolderLock(out, "cpi finetune") if is_main else contextlib.nullcontext()
    with lock:
        return _run_locked(config, args, out, inputs, is_main, callbacks, dtype)


def _resume_plan(config: FinetuneConfig, out: Path, inputs: dict[str, Any], is_main: bool, dtype: Any
                 ) -> tuple[Path | None, list[dict[str, Any]], list[str]] | None:
    """``(resume point, recorded segments, forced differences)``, or None when the folder already holds
    the finished run (nothing to do). CpiError for a folder this config must not continue."""
    from fullscale.precision import dtype_name

    resume_from = resume_point(out)
    if resume_from is not None and not config.resume:
        raise CpiError(f"{out}: already holds checkpoints (last: {resume_from.name}); set resume: true to "
                       "continue, or choose another output_dir")
    record = read_record(out) if resume_from is not None else None
    segments = list(record.get("segments") or []) if record else []
    if record and not segments and "config" in record:  # written before segments were recorded
        segments = [{"start_step": None, "config": record["config"], "inputs": None}]
    differences = resume_differences(segments[-1], config, inputs, dtype_name(dtype)) if segments else []
    if differences and not config.force_resume:
        raise CpiError(f"{out}: resuming with changed {', '.join(differences)}; a trajectory must not mix "
                       "them: restore them, use another output_dir, or set force_resume: true")
    done_step = already_complete(resume_from, config, differences)
    if done_step is not None:
        log.warning("%s: already trained to step %d (nothing to do); skipped", out, done_step)
        if is_main and resume_from.name.startswith(INTERRUPTED_PREFIX) and done_step == config.max_steps:
            # an interrupt landed on the final step: an uninterrupted run saves its final step as a
            # checkpoint, so the resume point becomes that checkpoint
            publish_checkpoint(resume_from, out / checkpoint_dir_name(done_step))
        return None
    if is_main:
        remove_stale_staging(out)
    return resume_from, segments, differences


def _run_locked(config: FinetuneConfig, args: Any, out: Path, inputs: dict[str, Any], is_main: bool,
                callbacks: Sequence[Any], dtype: Any) -> Path:
    import torch
    import transformers

    from fullscale.collate import ResponseLogitsCollator, accepts_logits_to_keep
    from fullscale.ift_data import tokenize_examples

    # output folder: resume point and its compatibility; nothing is written before training starts
    with args.main_process_first(desc="prepare output folder"):
        plan = _resume_plan(config, out, inputs, is_main, dtype)
    if plan is None:
        return out
    resume_from, segments, differences = plan
    transformers.set_seed(config.seed)
    model, tokenizer = load_base(config, dtype)
    examples, summary = prepare_examples(config, model, tokenizer, None, is_main, device=args.device)
    scores = summary.pop("_scores", None)
    model, no_decay = prepare_model(config, model)
    hold_frozen_weights(config, model, dtype)
    features, dropped = tokenize_examples(examples, tokenizer, config.template, config.max_seq_length,
                                          config.response_only_loss, config.add_eos)
    if not features:
        raise CpiError(f"{config.data}: no example has a response token within max_seq_length={config.max_seq_length}")
    summary.update(n_dropped_too_long=len(dropped), n_train=len(features),
                   n_trainable_params=sum(p.numel() for p in model.parameters() if p.requires_grad))
    start = segment_start(resume_from)
    if is_main:  # everything checked and loaded: record this segment, then train
        import datetime

        from cpi.io import atomic_write_json, atomic_write_table, run_metadata
        from fullscale.precision import dtype_name

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

    from transformers.trainer_callback import PrinterCallback

    from fullscale.trainer import CpiTrainer, RelianceTracker, RunComplete, SaveSchedule, TrainingGuard

    guard = TrainingGuard()
    # the schedule first: it replaces the Trainer's every-save_steps rule; later callbacks may add saves
    cbs: list[Any] = [SaveSchedule(config.is_save_step)]
    if config.tracking is not None:
        cbs.append(RelianceTracker(config.tracking, tracking_items(config), tokenizer,
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

            from cpi.io import atomic_write_table

            atomic_write_table(pd.DataFrame(trainer.state.log_history), out / "train_log.csv")
    interrupted = guard.signal_received is not None and trainer.state.global_step < trainer.state.max_steps
    step = trainer.state.global_step
    if is_main and interrupted and not config.is_save_step(step):
        # an off-schedule save is a resume point only: the trajectory keeps its save schedule
        saved = out / checkpoint_dir_name(step)
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
