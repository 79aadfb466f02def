"""The ``transformers.Trainer`` subclass and callbacks behind :func:`fullscale.finetune.run_finetune`.

- :class:`CpiTrainer`: atomic checkpoints (written into ``.tmp-checkpoint-<step>/``, renamed to
  ``checkpoint-<step>/`` once complete), records non-finite micro-batch losses for the guard, and
  keeps partially-frozen (QK-only fused QKV) matrices out of weight decay.
- :class:`TrainingGuard`: stops on a non-finite loss or gradient before the optimizer step (nothing
  saved) and on SIGINT/SIGTERM after the current step (a checkpoint saved); all-reduced across ranks.
- :class:`SaveSchedule`: checkpoints on the run's save schedule (every ``save_steps``, or ``save_schedule: log``).
- :class:`RelianceTracker`: scores a small knowledge-conflict subset every N steps into
  ``reliance.csv`` / ``reliance_items.csv`` and optionally keeps the best-reliance checkpoint.

This module imports torch and transformers at the top; only the runner
(:func:`fullscale.finetune.run_finetune`) imports it, so ``import fullscale`` stays light.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import threading
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
import torch
from transformers import Trainer, TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

from cpi.io import atomic_write_json, atomic_write_table
from fullscale.finetune_config import TrackingSettings
from fullscale.run_folder import STAGING_PREFIX, checkpoint_dir_name, prune_optimizer_states, publish_checkpoint
from fullscale.scoring import score_logprob, summarize_reliance

log = logging.getLogger("fullscale.finetune")  # the run's log lines keep the runner's logger name

__all__ = ["CpiTrainer", "RelianceTracker", "RunComplete", "SaveSchedule", "TrainingGuard"]


class RunComplete(Exception):
    """Raised at train begin when the resumed checkpoint already reached max_steps (nothing to do)."""


class CpiTrainer(Trainer):
    """``transformers.Trainer`` with atomic checkpoints, loss observation and a weight-decay exclusion.

    ``guard``: the :class:`TrainingGuard` told about every micro-batch loss; ``no_decay``: parameter
    names kept out of weight decay (partially-frozen matrices); ``prune_optimizer_states``: keep
    optimizer/scheduler state only in the newest checkpoint.

    Public hooks used: :meth:`training_step` and :meth:`get_decay_parameter_names` (both documented
    for subclassing). Two private methods are overridden because Trainer has no public hook for
    *where* a checkpoint is written: callbacks' ``on_save`` runs only after the files are already in
    their final ``checkpoint-<step>/`` folder, so a crash mid-save would leave a folder that
    ``get_last_checkpoint`` (and a resume) takes for complete.
    """

    def __init__(self, *args: Any, guard: "TrainingGuard | None" = None, no_decay: set[str] | None = None,
                 prune_optimizer_states: bool = False, **kwargs: Any) -> None:
        self._cpi_staging: str | None = None
        self._cpi_prune = prune_optimizer_states
        self._cpi_guard = guard
        self._cpi_no_decay = set(no_decay or ())
        super().__init__(*args, **kwargs)

    def _get_output_dir(self, trial: Any) -> str:
        # private override (see class docstring): while saving, Trainer's own _save_checkpoint writes
        # every file into the staging folder instead of the final one
        if self._cpi_staging is not None:
            return self._cpi_staging
        return super()._get_output_dir(trial)

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        # private override (see class docstring): stage, let Trainer write, then publish by rename
        run_dir = super()._get_output_dir(trial)
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        staging = os.path.join(run_dir, f"{STAGING_PREFIX}-{self.state.global_step}")
        if self.args.should_save:
            shutil.rmtree(staging, ignore_errors=True)
            os.makedirs(staging, exist_ok=True)
        self.accelerator.wait_for_everyone()
        self._cpi_staging = staging
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._cpi_staging = None
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            publish_checkpoint(Path(staging) / name, Path(run_dir) / name)
            shutil.rmtree(staging, ignore_errors=True)
            rotate_checkpoints(output_dir=run_dir, save_total_limit=self.args.save_total_limit,
                               best_model_checkpoint=self.state.best_model_checkpoint)
            if self._cpi_prune:
                prune_optimizer_states(run_dir, keep=Path(run_dir) / name)
            log.info("saved %s", Path(run_dir) / name)
        self.accelerator.wait_for_everyone()

    def training_step(self, model: Any, inputs: Any, num_items_in_batch: Any = None) -> torch.Tensor:
        loss = super().training_step(model, inputs, num_items_in_batch)
        if self._cpi_guard is not None:
            self._cpi_guard.observe_loss(loss)
        return loss

    def get_decay_parameter_names(self, model: Any) -> list[str]:
        names = super().get_decay_parameter_names(model)
        if not self._cpi_no_decay:
            return names
        return [n for n in names if not any(n == m or n.endswith("." + m) or m.endswith("." + n)
                                            for m in self._cpi_no_decay)]


class TrainingGuard(TrainerCallback):
    """Stops on a non-finite loss/gradient (before the optimizer step, saving nothing)
    and on SIGINT/SIGTERM (after the current step, saving a checkpoint)."""

    def __init__(self, check_grads: bool = True, handle_signals: bool = True) -> None:
        self.check_grads = check_grads
        self.handle_signals = handle_signals
        self.signal_received: int | None = None
        self.nonfinite_step: int | None = None
        self.nonfinite_what = ""
        self._loss_bad: torch.Tensor | None = None
        self._old_handlers: dict[int, Any] = {}

    # -- signals ------------------------------------------------------
    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.signal_received is not None:
            self.restore_signal_handlers()
            raise KeyboardInterrupt
        self.signal_received = signum
        log.warning("received %s: finishing the current step, saving a checkpoint and stopping "
                    "(send it again to abort at once)", signal.Signals(signum).name)

    def install_signal_handlers(self) -> None:
        if not self.handle_signals or threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old_handlers[sig] = signal.signal(sig, self._on_signal)

    def restore_signal_handlers(self) -> None:
        for sig, handler in self._old_handlers.items():
            signal.signal(sig, handler)
        self._old_handlers = {}

    # -- non-finite loss ----------------------------------------------
    def observe_loss(self, loss: torch.Tensor) -> None:
        bad = ~torch.isfinite(loss.detach()).all()
        self._loss_bad = bad if self._loss_bad is None else (self._loss_bad | bad)

    def _flags(self, args: Any, model: Any) -> tuple[bool, bool, bool]:
        loss_bad = self._loss_bad if self._loss_bad is not None else torch.tensor(False)
        self._loss_bad = None
        grad_bad = torch.tensor(False)
        if self.check_grads and not args.fp16 and model is not None:
            grads = [p.grad for p in model.parameters() if p.grad is not None]
            if grads:
                grad_bad = ~torch.isfinite(torch.nn.utils.get_total_norm(grads, norm_type=2.0))
        flags = torch.stack([loss_bad.to(args.device), grad_bad.to(args.device),
                             torch.tensor(self.signal_received is not None, device=args.device)]).to(torch.int32)
        if torch.distributed.is_available() and torch.distributed.is_initialized() \
                and torch.distributed.get_world_size() > 1:
            torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
        a, b, c = (bool(x) for x in flags.tolist())
        return a, b, c

    # -- Trainer events -----------------------------------------------
    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.max_steps > 0 and state.global_step >= state.max_steps:
            # Trainer would run one more step before checking (resuming a run that ended mid-epoch)
            raise RunComplete(state.global_step)
        self.install_signal_handlers()

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, model: Any = None,
                              optimizer: Any = None, **kwargs: Any) -> None:
        loss_bad, grad_bad, sig = self._flags(args, model)
        if sig and self.signal_received is None:
            self.signal_received = int(signal.SIGTERM)  # another rank got it
        if loss_bad or grad_bad:
            self.nonfinite_step = state.global_step + 1
            self.nonfinite_what = "loss" if loss_bad else "gradient"
            if optimizer is not None and not args.fp16:
                optimizer.zero_grad(set_to_none=True)  # the optimizer step becomes a no-op
            log.error("non-finite %s at step %d: stopping without saving", self.nonfinite_what,
                      self.nonfinite_step)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if self.nonfinite_step is not None:
            control.should_save = False
            control.should_training_stop = True
        elif self.signal_received is not None:
            control.should_save = True
            control.should_training_stop = True
        return control

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if self.nonfinite_step is not None:
            control.should_save = False
        return control

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
        if logs and state.is_world_process_zero:
            log.info("step %d: %s", state.global_step,
                     ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in logs.items()))

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.restore_signal_handlers()


class SaveSchedule(TrainerCallback):
    """Saves at the steps ``is_save_step`` accepts (:meth:`FinetuneConfig.is_save_step`, linear or log) and at
    the final step, in place of the Trainer's every-``save_steps`` rule. Placed before every other callback:
    it decides the schedule only, and a later one may still ask for a save (the best-reliance checkpoint,
    the guard's save on a signal)."""

    def __init__(self, is_save_step: Any) -> None:
        self.is_save_step = is_save_step

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        control.should_save = self.is_save_step(state.global_step) or state.global_step >= state.max_steps
        return control


class RelianceTracker(TrainerCallback):
    """Scores a conflict subset every N steps (see :class:`TrackingSettings`)."""

    def __init__(self, settings: TrackingSettings, items: Sequence[Any], tokenizer: Any, template: str,
                 output_dir: Path) -> None:
        self.settings = settings
        self.items = list(items)
        self.tokenizer = tokenizer
        self.template = template
        self.output_dir = Path(output_dir)
        self.rows: list[dict[str, Any]] = []
        self.item_rows: list[pd.DataFrame] = []
        self.best: tuple[float, int] | None = None
        self._pending_best: int | None = None

    def _restore(self, step: int) -> None:
        summ = self.output_dir / "reliance.csv"
        items = self.output_dir / "reliance_items.csv"
        if summ.is_file():
            t = pd.read_csv(summ)
            t = t[t["step"] <= step]
            self.rows = t.to_dict(orient="records")
        if items.is_file():
            t = pd.read_csv(items)
            self.item_rows = [t[t["step"] <= step]]
        best_file = self.output_dir / "best_reliance.json"
        if best_file.is_file():
            b = json.loads(best_file.read_text())
            if b.get("step", step + 1) <= step:
                self.best = (float(b["value"]), int(b["step"]))

    def measure(self, model: Any, step: int, is_main: bool) -> float:
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                table = score_logprob(model, self.tokenizer, self.items, template=self.template,
                                      batch_size=self.settings.batch_size)
        finally:
            model.train(was_training)
        summary = summarize_reliance(table)
        row = {"step": step, "datasets": "+".join(self.settings.conflicts),
               **{k: (float(v) if isinstance(v, (int, float)) else v) for k, v in summary.items()}}
        self.rows = [r for r in self.rows if r["step"] != step] + [row]
        table = table.drop(columns=[c for c in ("prompt",) if c in table.columns])
        table.insert(0, "step", step)
        self.item_rows.append(table)
        if is_main:
            atomic_write_table(pd.DataFrame(self.rows), self.output_dir / "reliance.csv")
            atomic_write_table(pd.concat(self.item_rows, ignore_index=True), self.output_dir / "reliance_items.csv")
        value = float(summary[self.settings.metric])
        log.info("step %d: context reliance %s=%.4f (n=%s)", step, self.settings.metric, value, summary.get("n"))
        return value

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        self._restore(state.global_step)
        if state.global_step == 0 and not any(r["step"] == 0 for r in self.rows):
            self.measure(model, 0, state.is_world_process_zero)

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> Any:
        if state.global_step % self.settings.every_steps != 0:
            return control
        value = self.measure(model, state.global_step, state.is_world_process_zero)
        if self.settings.keep_best and (self.best is None or value > self.best[0]):
            self.best = (value, state.global_step)
            self._pending_best = state.global_step
            control.should_save = True
        return control

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._pending_best is None or self._pending_best != state.global_step:
            return
        path = self.output_dir / checkpoint_dir_name(state.global_step)
        state.best_model_checkpoint = str(path)
        if state.is_world_process_zero:
            atomic_write_json(self.output_dir / "best_reliance.json", {
                "step": state.global_step, "checkpoint": path.name, "metric": self.settings.metric,
                "value": self.best[0] if self.best else None})
        self._pending_best = None
