"""Finetuning tokens/s in float32 against bfloat16, and the machine's matmul peaks, in one run.

    python benchmarks/finetune_bf16.py [--models smollm2-135m-instruct,gemma-3-270m] [--methods lora,qk_only,full]
                                       [--steps 4] [--batch-size 8] [--records 32] [--threads 1] [--repeats 1]

For each model and method, ``fullscale.finetune.run_finetune`` trains the same records of the controlled
mixture (``benchmarks/finetune_real.py``: CF_World_Facts facts, Alpaca template, response-only loss) with
the settings of ``ControlledConfig.finetune_config`` twice, ``dtype: float32`` and ``dtype: bfloat16``
(same seed, so the same batches), alternating the two ``--repeats`` times. A callback times each
optimizer step; the first step (warm-up: autocast caches, allocator) is left out, so the figure is the
steady training rate (load and the one save are reported separately as the end-to-end seconds).

Before the runs, the same script measures ``torch.matmul`` at the model's shapes (256 tokens x d_model x
{d_model, d_mlp, 4 * d_model}) in both dtypes at the same thread count: the ceiling each precision can
reach here. Tokens/s counts the non-pad tokens of the records (mean per record x batch size).
Prints one line per (model, method, dtype) and the ratio bf16 / float32 (goal >= 2.5).
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
os.environ.setdefault("CPI_CPU_BF16", "1")  # measure bf16 even on a CPU that would fall back (it is emulated there)


def matmul_rate(m: int, k: int, n: int, dtype, seconds: float = 1.0) -> float:
    """GFLOP/s of ``(m x k) @ (k x n)`` in ``dtype`` (best of repeated timings over about ``seconds``)."""
    import torch

    a, b = torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype)
    for _ in range(3):
        a @ b
    best, end = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * m * k * n / best / 1e9


class StepTimer:
    """A ``TrainerCallback`` (duck-typed) that times each optimizer step."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._t0 = 0.0

    def on_step_begin(self, *args, **kwargs):
        self._t0 = time.perf_counter()

    def on_step_end(self, *args, **kwargs):
        self.times.append(time.perf_counter() - self._t0)

    def __getattr__(self, name):  # every other Trainer event: nothing to do
        if name.startswith("on_"):
            return lambda *args, **kwargs: None
        raise AttributeError(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="smollm2-135m-instruct,gemma-3-270m")
    parser.add_argument("--methods", default="lora,qk_only,full")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--records", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--gradient-checkpointing", action="store_true")
    a = parser.parse_args()

    import statistics

    import torch
    import transformers

    from benchmarks.finetune_real import mixture_records
    from experiments.controlled.experiment import ControlledConfig
    from experiments.controlled.mixture import write_records
    from fullscale.finetune import run_finetune
    from fullscale.ift_data import load_ift_data, tokenize_examples
    from fullscale.models import resolve_model

    torch.set_num_threads(a.threads)
    transformers.utils.logging.set_verbosity_error()
    root = Path(tempfile.mkdtemp(prefix="ftbf16-"))
    data = write_records(mixture_records(a.records), root / "ift.jsonl")
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {a.threads} thread(s), "
          f"cpu capability {torch.backends.cpu.get_cpu_capability()}, {os.cpu_count()} CPUs (shared); "
          f"{a.records} records, batch {a.batch_size}, {a.steps} steps (first left out), repeats {a.repeats}")
    for name in a.models.split(","):
        model_dir = Path(resolve_model(name))
        mcfg = transformers.AutoConfig.from_pretrained(model_dir)
        mcfg = getattr(mcfg, "text_config", mcfg)
        d, f = mcfg.hidden_size, mcfg.intermediate_size
        rates = {dt: [matmul_rate(256, d, n, getattr(torch, dt)) for n in (d, f, 4 * d)]
                 for dt in ("float32", "bfloat16")}
        print(f"\n{name}: matmul GFLOP/s at 256 x {d} x ({d}, {f}, {4 * d}): "
              + "; ".join(f"{dt} " + ", ".join(f"{r:.0f}" for r in v) for dt, v in rates.items())
              + f"; ratio " + ", ".join(f"{b / f32:.1f}" for b, f32 in zip(rates["bfloat16"], rates["float32"])))
        tok = transformers.AutoTokenizer.from_pretrained(model_dir)
        feats, _ = tokenize_examples(load_ift_data(data), tok, "alpaca", 256)
        tokens_per_step = a.batch_size * statistics.mean(len(x["input_ids"]) for x in feats)
        for method in a.methods.split(","):
            cfg = ControlledConfig().replace(**{
                "finetune.method": method, "finetune.steps": a.steps, "finetune.save_steps": a.steps,
                "finetune.batch_size": a.batch_size, "finetune.gradient_checkpointing": a.gradient_checkpointing})
            step_s: dict[str, list[float]] = {"float32": [], "bfloat16": []}
            total_s: dict[str, list[float]] = {"float32": [], "bfloat16": []}
            for r in range(a.repeats):
                for dt in ("float32", "bfloat16"):
                    ft = cfg.finetune_config(str(model_dir), data, root / f"{name}-{method}-{dt}-{r}", seed=0)
                    timer = StepTimer()
                    t0 = time.perf_counter()
                    run_finetune(ft.replace(dtype=dt), callbacks=[timer])
                    total_s[dt].append(time.perf_counter() - t0)
                    step_s[dt].append(statistics.mean(timer.times[1:]) if len(timer.times) > 1 else timer.times[0])
            best = {dt: min(v) for dt, v in step_s.items()}
            for dt in ("float32", "bfloat16"):
                print(f"  {method:8s} {dt:9s} {best[dt]:6.2f} s/step  {tokens_per_step / best[dt]:7.0f} tok/s  "
                      f"(end to end {min(total_s[dt]):6.1f} s)", flush=True)
            print(f"  {method:8s} ratio bf16/fp32 tokens/s: {best['float32'] / best['bfloat16']:.2f}", flush=True)


if __name__ == "__main__":
    main()
