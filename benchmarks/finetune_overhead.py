"""Overhead of ``run_finetune`` over a plain ``transformers.Trainer`` on a tiny model.

Both runs train the same tiny Llama on the same tokenized Alpaca-shaped data
with the same TrainingArguments (one CPU process), saving every ``--save-steps``.
The baseline is ``transformers.Trainer`` as shipped; ``run_finetune`` adds the
atomic checkpoint rename, the non-finite/signal guard (a gradient-norm check
per step) and config/log writing, and also loads + tokenizes the data itself
(the baseline is handed pre-tokenized features, so the ratio is an upper bound).

    python benchmarks/finetune_overhead.py --steps 200 --save-steps 50
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--save-steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    a = parser.parse_args()

    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq, Trainer, TrainingArguments

    from fullscale.finetune import run_finetune
    from fullscale.ift_data import load_ift_data, tokenize_examples
    from tests.fullscale.ft_helpers import alpaca_records, base_config, make_base, write_jsonl

    torch.set_num_threads(a.threads)
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    root = Path(tempfile.mkdtemp(prefix="ftbench-"))
    base = make_base(root, "llama")
    data = write_jsonl(root / "d.jsonl", alpaca_records(64))
    cfg = base_config(base, data, root / "x", max_steps=a.steps, save_steps=a.save_steps, logging_steps=10)

    def baseline(out: Path) -> float:
        tok = AutoTokenizer.from_pretrained(base)
        feats, _ = tokenize_examples(load_ift_data(data), tok, "alpaca", 256)
        t0 = time.perf_counter()
        transformers.set_seed(0)
        model = AutoModelForCausalLM.from_pretrained(base)
        args = TrainingArguments(output_dir=str(out), per_device_train_batch_size=4, gradient_accumulation_steps=1,
                                 learning_rate=3e-3, max_steps=a.steps, save_steps=a.save_steps, logging_steps=10,
                                 report_to="none", disable_tqdm=True, remove_unused_columns=False, seed=0,
                                 dataloader_pin_memory=False)
        Trainer(model=model, args=args, train_dataset=feats, processing_class=tok,
                data_collator=DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100)).train()
        return time.perf_counter() - t0

    def ours(out: Path) -> float:
        t0 = time.perf_counter()
        run_finetune(cfg.replace(output_dir=str(out)))
        return time.perf_counter() - t0

    tb, to = [], []
    for r in range(a.repeats):
        tb.append(baseline(root / f"base{r}"))
        to.append(ours(root / f"ours{r}"))
    b, o = min(tb), min(to)
    print(f"steps={a.steps} save_steps={a.save_steps} threads={a.threads} (best of {a.repeats})")
    print(f"plain transformers.Trainer: {b:.2f} s ({1000 * b / a.steps:.1f} ms/step)")
    print(f"run_finetune:               {o:.2f} s ({1000 * o / a.steps:.1f} ms/step)")
    print(f"ratio run_finetune / Trainer: {o / b:.2f}")


if __name__ == "__main__":
    main()
