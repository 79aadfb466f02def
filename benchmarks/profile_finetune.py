"""Where one finetuning step's time goes, float32 against bfloat16 (``torch.profiler``, one process).

    python benchmarks/profile_finetune.py [--model smollm2-135m-instruct] [--method lora] [--dtypes float32,bfloat16]
                                          [--batch-size 8] [--records 16] [--threads 1] [--top 25]

Runs ``fullscale.finetune.run_finetune`` (the controlled experiment's settings) for 3 optimizer steps and
profiles the third (steps 1-2 warm the caches) from ``on_step_begin`` to ``on_step_end``: the forward,
backward, clipping and optimizer step of the Trainer, plus whatever the callbacks do. Prints the step's
wall time, the share of the profiled CPU time per op class (matmul, attention, norms/elementwise, casts,
optimizer, other) and the top ops by self CPU time.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("CPI_PROGRESS", "0")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("CPI_CPU_BF16", "1")

#: op-name fragments -> class (first match wins)
CLASSES = (
    ("attention", ("scaled_dot_product", "flash_attention", "_efficient_attention", "softmax")),
    ("matmul", ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear", "aten::baddbmm")),
    ("casts", ("aten::to", "aten::_to_copy", "aten::copy_", "aten::type_as")),
    ("optimizer", ("Optimizer.step", "_foreach", "aten::lerp", "aten::addcdiv", "aten::addcmul")),
    ("loss", ("cross_entropy", "nll_loss", "log_softmax")),
    ("embedding", ("embedding",)),
    ("norms/elementwise", ("aten::mul", "aten::add", "aten::pow", "aten::mean", "aten::rsqrt", "aten::silu",
                           "aten::gelu", "aten::tanh", "aten::div", "aten::sub", "aten::neg", "aten::cat",
                           "aten::sum", "aten::where", "aten::fill_", "aten::zero_", "aten::clone", "aten::sigmoid",
                           "aten::exp", "aten::sqrt", "aten::norm", "aten::linalg_vector_norm", "aten::index")),
)


def classify(name: str) -> str:
    for cls, parts in CLASSES:
        if any(p in name for p in parts):
            return cls
    return "other"


class ProfileStep:
    """Profiles optimizer step ``which`` (1-based) of the Trainer."""

    def __init__(self, which: int = 3) -> None:
        self.which, self.prof, self.wall = which, None, 0.0
        self._n, self._t0 = 0, 0.0

    def on_step_begin(self, *args, **kwargs):
        self._n += 1
        if self._n == self.which:
            import torch.profiler

            self.prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
            self.prof.__enter__()
            self._t0 = time.perf_counter()

    def on_step_end(self, *args, **kwargs):
        if self._n == self.which and self.prof is not None:
            self.wall = time.perf_counter() - self._t0
            self.prof.__exit__(None, None, None)

    def __getattr__(self, name):
        if name.startswith("on_"):
            return lambda *args, **kwargs: None
        raise AttributeError(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--method", default="lora")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--records", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--gradient-checkpointing", action="store_true")
    a = parser.parse_args()

    import torch
    import transformers

    from benchmarks.finetune_real import mixture_records
    from experiments.controlled.experiment import ControlledConfig
    from experiments.controlled.mixture import write_records
    from fullscale.finetune import run_finetune
    from fullscale.models import resolve_model

    torch.set_num_threads(a.threads)
    transformers.utils.logging.set_verbosity_error()
    root = Path(tempfile.mkdtemp(prefix="ftprof-"))
    data = write_records(mixture_records(a.records), root / "ift.jsonl")
    model_dir = str(resolve_model(a.model))
    cfg = ControlledConfig().replace(**{"finetune.method": a.method, "finetune.steps": 3, "finetune.save_steps": 3,
                                        "finetune.batch_size": a.batch_size,
                                        "finetune.gradient_checkpointing": a.gradient_checkpointing})
    for dt in a.dtypes.split(","):
        prof = ProfileStep(3)
        run_finetune(cfg.finetune_config(model_dir, data, root / dt, seed=0).replace(dtype=dt), callbacks=[prof])
        events = prof.prof.key_averages()
        total = sum(e.self_cpu_time_total for e in events)
        shares: dict[str, float] = {}
        for e in events:
            shares[classify(e.key)] = shares.get(classify(e.key), 0.0) + e.self_cpu_time_total
        print(f"\n{a.model} {a.method} {dt}: step {prof.wall:.2f} s wall, profiled self CPU {total / 1e6:.2f} s; "
              + ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in sorted(shares.items(), key=lambda kv: -kv[1])))
        top = sorted(events, key=lambda e: -e.self_cpu_time_total)[: a.top]
        for e in top:
            print(f"  {e.key[:60]:60s} {e.self_cpu_time_total / 1e3:9.1f} ms  {e.count:6d} calls  [{classify(e.key)}]")


if __name__ == "__main__":
    main()
