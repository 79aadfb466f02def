"""`cpi evaluate`'s two passes on a real model against a bare `transformers` loop over the same prompts.

    python benchmarks/real_evaluate.py [--model smollm2-135m-instruct] [--items 32] [--batch-size 16]
                                       [--new-tokens 24] [--threads 2] [--repeats 3]

Both sides get the same items (the first ``--items`` of CF_World_Facts, chat template), the same batch
size, dtype (float32) and number of new tokens, in one run, alternated ``--repeats`` times (medians):

- **generation**: ours is ``score_generation`` (formatting, length-sorted left-padded batches, greedy
  ``generate``, decoding, stop strings, answer matching); the bare loop gets the already tokenized prompts
  and only left-pads them and calls ``model.generate`` with the same settings, then decodes.
- **log-prob**: ours is ``score_logprob`` (formatting, answer tokenization, one prompt pass per item and the
  four answer forms on its KV cache); the bare loop gets the already built (prompt + answer) token sequences
  (four per item) and runs them right-padded through the model, summing the answer tokens' log-probs.

Prints seconds, tokens/s and the ratio ours / bare (goal <= 1.1), and checks that both sides agree
(identical generations; log-probs to 1e-3).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("CPI_PROGRESS", "0")


def bare_generate(model, tok, prompt_ids, batch_size, new_tokens):
    """Left-padded greedy generation over pre-tokenized prompts, length-sorted batches; returns texts."""
    import torch

    from fullscale.batching import pad_batch, pad_token_id

    pad = pad_token_id(tok)
    order = sorted(range(len(prompt_ids)), key=lambda i: len(prompt_ids[i]))
    out = [""] * len(prompt_ids)
    n_new = 0
    for k in range(0, len(order), batch_size):
        batch = order[k:k + batch_size]
        ids, mask = pad_batch([prompt_ids[i] for i in batch], pad, side="left")  # [batch pos]
        with torch.no_grad():
            gen = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens, do_sample=False,
                                 num_beams=1, pad_token_id=pad, eos_token_id=tok.eos_token_id)
        new = gen[:, ids.shape[1]:].tolist()  # [batch new_pos]
        for r, i in enumerate(batch):
            toks = new[r]
            if tok.eos_token_id in toks:
                toks = toks[: toks.index(tok.eos_token_id)]
            n_new += len(toks)
            out[i] = tok.decode(toks, skip_special_tokens=True)
    return out, n_new


def bare_logprob(model, seqs, pad, batch_size):
    """Sum of answer-token log-probs of full (prompt + answer) sequences, right-padded batches."""
    import torch

    from fullscale.batching import pad_batch

    res = [0.0] * len(seqs)
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i][0]))
    for k in range(0, len(order), batch_size):
        batch = order[k:k + batch_size]
        ids, mask = pad_batch([seqs[i][0] for i in batch], pad, side="right")  # [batch pos]
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), -1)  # [batch pos d_vocab]
        for r, i in enumerate(batch):
            full, start = seqs[i]
            tgt = torch.tensor(full[start:])
            res[i] = float(logp[r, start - 1:len(full) - 1].gather(-1, tgt[:, None]).sum())
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct", help="registry name or checkpoint folder")
    ap.add_argument("--items", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--new-tokens", type=int, default=24)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--template", default="chat")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from fullscale.batching import pad_token_id
    from fullscale.checkpoints import load_checkpoint
    from fullscale.conflicts import load_conflicts
    from fullscale.prompts import format_prompts
    from fullscale.scoring import answer_sequence, score_generation, score_logprob

    model, tok = load_checkpoint(args.model, device="cpu")
    items = load_conflicts("CF_World_Facts")[: args.items]
    prompts = format_prompts(items, tok, template=args.template)
    prompt_ids = [list(fp.input_ids) for fp in prompts]
    add_special = args.template != "chat"
    seqs = []
    for it, fp in zip(items, prompts):
        for ans in (it.context_answer, it.parametric_answer):
            for form in (ans, " " + ans):
                s = answer_sequence(tok, fp, form, add_special)
                seqs.append((list(s.ids), s.start))
    n_params = sum(p.numel() for p in model.parameters())
    cap = torch.backends.cpu.get_cpu_capability()
    print(f"model {args.model}: {n_params / 1e6:.1f}M parameters, float32, {torch.get_num_threads()} thread(s), "
          f"CPU capability {cap}; {len(items)} items, template {args.template}, batch {args.batch_size}, "
          f"{args.new_tokens} new tokens; load average {os.getloadavg()[0]:.1f}")
    prompt_tokens = sum(map(len, prompt_ids))
    seq_tokens = sum(len(s[0]) for s in seqs)

    # warm-up of both paths (first-call allocations would otherwise count against whichever runs first)
    score_generation(model, tok, items[:2], args.template, args.batch_size, max_new_tokens=2)
    bare_generate(model, tok, prompt_ids[:2], args.batch_size, 2)
    times = {"gen_ours": [], "gen_bare": [], "lp_ours": [], "lp_bare": []}
    for _ in range(args.repeats):
        t = time.perf_counter()
        ours_gen = score_generation(model, tok, items, args.template, args.batch_size, max_new_tokens=args.new_tokens)
        times["gen_ours"].append(time.perf_counter() - t)
        t = time.perf_counter()
        bare_gen, n_new = bare_generate(model, tok, prompt_ids, args.batch_size, args.new_tokens)
        times["gen_bare"].append(time.perf_counter() - t)
        t = time.perf_counter()
        ours_lp = score_logprob(model, tok, items, args.template, args.batch_size)
        times["lp_ours"].append(time.perf_counter() - t)
        t = time.perf_counter()
        bare_lp = bare_logprob(model, seqs, pad_token_id(tok), args.batch_size)
        times["lp_bare"].append(time.perf_counter() - t)

    same = sum(a == b for a, b in zip(ours_gen["output"], bare_gen))
    cols = [f"logp_{side}_{form}" for side in ("context", "parametric") for form in ("nospace", "space")]
    ours_flat = [row[c] for _, row in ours_lp.iterrows() for c in cols]
    lp_err = max(abs(a - b) for a, b in zip(ours_flat, bare_lp))
    med = {k: statistics.median(v) for k, v in times.items()}
    gen_ratio, lp_ratio = med["gen_ours"] / med["gen_bare"], med["lp_ours"] / med["lp_bare"]
    print(f"generation  ours {med['gen_ours']:7.2f} s  bare {med['gen_bare']:7.2f} s  ratio {gen_ratio:.2f}x   "
          f"{n_new / med['gen_ours']:.1f} new tokens/s (ours), "
          f"{(prompt_tokens + n_new) / med['gen_ours']:.0f} tokens/s incl. prompts; identical outputs {same}/{len(items)}")
    print(f"log-prob    ours {med['lp_ours']:7.2f} s  bare {med['lp_bare']:7.2f} s  ratio {lp_ratio:.2f}x   "
          f"bare reads {seq_tokens / med['lp_bare']:.0f} tokens/s over {len(seqs)} sequences; "
          f"max |ours - bare| log-prob {lp_err:.1e}")
    print("all runs (s): " + "; ".join(f"{k} " + ", ".join(f"{x:.2f}" for x in v) for k, v in times.items()))
    if lp_err > 1e-3 or same < len(items):
        print("FAIL: ours and the bare loop disagree")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
