"""Finetuning speed on a real model: the ``cpi finetune`` driver against a bare ``transformers`` loop.

    python benchmarks/finetune_real.py [--model smollm2-135m-instruct] [--methods lora,full,qk_only]
                                       [--steps 6] [--batch-size 8] [--threads 2] [--records 64] [--dtype float32]

Both sides train the same model (CPU; float32, or bf16 mixed precision with ``--dtype bfloat16``) on the
same records of the controlled mixture
(``experiments.controlled``: CF_World_Facts facts in varied instructions and layouts, Alpaca
template, response-only loss) with the same batch size, number of optimizer steps and settings as
:meth:`ControlledConfig.finetune_config` (LoRA rank 16 on every linear layer / full / QK-only,
AdamW, constant learning rate, gradient clipping at 1), in one run:

- **ours**: ``fullscale.finetune.run_finetune`` end to end: it loads the model, reads and tokenizes
  the records itself, trains with its Trainer subclass, and saves one checkpoint at the last step;
- **bare**: ``AutoModelForCausalLM.from_pretrained``, the same PEFT ``LoraConfig`` (or
  ``requires_grad`` on ``q_proj``/``k_proj`` only), a plain ``torch.optim.AdamW`` loop over
  ``DataCollatorForSeq2Seq`` batches of the already tokenized features, and one ``save_pretrained``.

Prints, per method: seconds of each side (load + train + save), the training tokens/s (non-pad tokens
of the batches seen / seconds) and the ratio ours / bare (goal <= 1.1). The machine may be shared:
run both sides alternately (``--repeats``) and read the ratio, not the absolute speed.
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


def mixture_records(n: int, seed: int = 0) -> list[dict]:
    """``n`` records of the controlled mixture from CF_World_Facts (half the facts marked known)."""
    import pandas as pd

    from experiments.controlled.mixture import MixtureConfig, build_mixture
    from fullscale.conflicts import load_conflicts

    items = [it for it in load_conflicts("CF_World_Facts") if it.task == "qa"]
    known = pd.DataFrame({"item_id": [it.id for it in items], "known": [i % 2 == 0 for i in range(len(items))]})
    return build_mixture(items, known, MixtureConfig(n_examples=n, rho=0.5, min_heldout=4, seed=seed)).records


def bare_loop(model_dir: Path, features: list, method: str, steps: int, batch_size: int, lr: float,
              out: Path, seed: int = 0, dtype: str = "float32") -> tuple[float, int]:
    """Load, train ``steps`` AdamW steps over ``features`` in seeded shuffled batches, save; (seconds, tokens).

    ``dtype="bfloat16"``: the textbook mixed-precision loop: LoRA's base loaded in bf16, under QK-only the
    frozen weights cast to bf16, trainable weights float32, the forward and backward under bf16 autocast."""
    import contextlib

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq

    bf16 = dtype == "bfloat16"
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16 if bf16 and method == "lora"
                                                 else torch.float32)
    if method == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32.0, lora_dropout=0.0,
                                                 target_modules="all-linear", task_type="CAUSAL_LM"))
    elif method == "qk_only":
        for name, p in model.named_parameters():
            p.requires_grad = name.endswith(("q_proj.weight", "k_proj.weight"))
    if bf16:
        for p in model.parameters():
            p.data = p.data.to(torch.float32 if p.requires_grad else torch.bfloat16)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    collate = DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100)
    g = torch.Generator().manual_seed(seed)
    model.train()
    tokens, step = 0, 0
    while step < steps:
        order = torch.randperm(len(features), generator=g).tolist()
        for i in range(0, len(order) - batch_size + 1, batch_size):
            batch = collate([features[j] for j in order[i:i + batch_size]])
            with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
                loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            tokens += int(batch["attention_mask"].sum())
            step += 1
            if step == steps:
                break
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return time.perf_counter() - t0, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--methods", default="lora,full,qk_only")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--records", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                        help="both sides in this precision (the driver's dtype setting; the bare loop's autocast)")
    a = parser.parse_args()

    import torch
    import transformers

    from experiments.controlled.experiment import ControlledConfig
    from experiments.controlled.mixture import write_records
    from fullscale.finetune import run_finetune
    from fullscale.ift_data import load_ift_data, tokenize_examples
    from fullscale.models import resolve_model

    torch.set_num_threads(a.threads)
    transformers.utils.logging.set_verbosity_error()
    model_dir = Path(resolve_model(a.model))
    root = Path(tempfile.mkdtemp(prefix="ftreal-"))
    data = write_records(mixture_records(a.records), root / "ift.jsonl")
    tok = transformers.AutoTokenizer.from_pretrained(model_dir)
    features, _ = tokenize_examples(load_ift_data(data), tok, "alpaca", 256)
    lengths = [len(f["input_ids"]) for f in features]
    print(f"model {a.model}: {len(features)} records, tokens per record mean {sum(lengths) / len(lengths):.0f} "
          f"(min {min(lengths)}, max {max(lengths)}); batch {a.batch_size}, {a.steps} steps, {a.threads} threads, {a.dtype}, "
          f"torch {torch.__version__}, transformers {transformers.__version__}, {os.cpu_count()} CPUs (shared)")
    for method in a.methods.split(","):
        cfg = ControlledConfig().replace(**{"finetune.method": method, "finetune.steps": a.steps,
                                            "finetune.save_steps": a.steps, "finetune.batch_size": a.batch_size})
        ours_s, bare_s, bare_tok = [], [], 0
        for r in range(a.repeats):
            t0 = time.perf_counter()
            out = run_finetune(cfg.finetune_config(str(model_dir), data, root / f"ours-{method}-{r}", seed=0)
                               .replace(dtype=a.dtype))
            ours_s.append(time.perf_counter() - t0)
            s, bare_tok = bare_loop(model_dir, features, method, a.steps, a.batch_size,
                                    cfg.finetune.learning_rate, root / f"bare-{method}-{r}", dtype=a.dtype)
            bare_s.append(s)
        import pandas as pd

        log = pd.read_csv(Path(out) / "train_log.csv")
        loss = log["loss"].dropna()
        o, b = min(ours_s), min(bare_s)
        print(f"{method:8s} ours {o:7.1f} s ({bare_tok / o:6.0f} tok/s)   bare {b:7.1f} s ({bare_tok / b:6.0f} tok/s)   "
              f"ratio ours/bare {o / b:.2f}   (best of {a.repeats}; {bare_tok} tokens; ours' last logged loss "
              f"{loss.iloc[-1] if len(loss) else float('nan'):.3f})", flush=True)


if __name__ == "__main__":
    main()
