"""Shared helpers for the mechinterp tests: conflict items, tiny checkpoints, trajectories."""

from __future__ import annotations

from pathlib import Path

from fullscale.conflicts import ConflictItem

FACTS = [("Germany", "Lyon", "Berlin"), ("France", "Rome", "Paris"), ("Italy", "Paris", "Rome"),
         ("Poland", "Ulm", "Warsaw"), ("Spain", "Warsaw", "Madrid"), ("Austria", "Madrid", "Vienna")]


def conflict_items(n: int = 6, dataset: str = "CF_Test") -> list[ConflictItem]:
    """Capital-city conflicts with varying context lengths (so batches need padding)."""
    out = []
    for i in range(n):
        country, cf, par = FACTS[i % len(FACTS)]
        extra = " Everyone agrees." * (i % 3)
        out.append(ConflictItem(
            id=f"{dataset}-{i}", dataset=dataset, category="capital" if i % 2 == 0 else "city",
            context=f"In this story the capital of {country} is {cf}.{extra}",
            question=f"What is the capital of {country}?", context_answer=cf, parametric_answer=par))
    return out


def write_jsonl(items: list[ConflictItem], path: Path) -> Path:
    from fullscale.conflicts import items_to_jsonl

    items_to_jsonl(items, path)
    return path


def make_trajectory(root: Path, arch: str = "llama", steps=(10, 20, 30)) -> Path:
    """A Trainer-layout folder with checkpoint-<step>/ tiny models (different random weights)."""
    from tests.tiny_models import make_tiny_checkpoint, make_tokenizer

    tok = make_tokenizer("sp" if arch in ("llama", "mistral") else "bpe")
    for k, s in enumerate(steps):
        make_tiny_checkpoint(root / f"checkpoint-{s}", arch, tokenizer=tok, seed=k)
    return root


def load_tiny(path: Path):
    """(bridge, tokenizer) for a tiny checkpoint folder, float32 CPU."""
    from mechinterp.load import load_bridge

    return load_bridge(path, device="cpu", dtype="float32")


def make_tiny_extra(path: Path, arch: str, seed: int = 0) -> Path:
    """A tiny random checkpoint of an architecture ``tests.tiny_models`` does not build:
    ``"gpt2"`` (Conv1D weights stored [in, out], learned positions, LayerNorm, biases everywhere) or
    ``"gemma3"`` (``(1 + w)`` RMSNorm, post-attention and post-feedforward norms, scaled embeddings,
    QK-norm, sliding-window layers). Norm weights and biases are randomised so that none of them
    is the identity and a wrong reading of them shows."""
    import torch
    from transformers import AutoModelForCausalLM, Gemma3TextConfig, GPT2Config

    from tests.tiny_models import make_tokenizer

    tok = make_tokenizer("bpe" if arch == "gpt2" else "sp")
    ids = dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    if arch == "gpt2":
        cfg = GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=4, n_positions=256, **ids)
    elif arch == "gemma3":
        cfg = Gemma3TextConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                               num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=256,
                               sliding_window=6, layer_types=["sliding_attention", "sliding_attention", "full_attention"],
                               query_pre_attn_scalar=8, **ids)
    else:
        raise ValueError(f"unknown arch {arch!r} (use gpt2 or gemma3)")
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or "ln_" in name:
                p.uniform_(-0.5, 0.5) if arch == "gemma3" else p.uniform_(0.5, 1.5)
            elif name.endswith("bias"):
                p.normal_(0, 0.1)
    model.save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    return path


def hf_reference(model, items, arch: str) -> dict:
    """Recompute the probe's quantities from a plain ``transformers`` forward — no TransformerLens,
    no ``mechinterp`` code: one item at a time (no padding), eager attention with
    ``output_attentions=True``, forward hooks on every layer's attention output projection (its
    input: the heads' concatenated outputs at the final position), on the post-attention norms
    (Gemma-3) and on the final norm. The norm formulas are written out here per architecture
    (``arch``: ``llama`` — LlamaRMSNorm ``x / rms · w``; ``gemma3`` — ``x / rms · (1 + w)`` and a
    post-attention norm of the same kind; ``gpt2`` — LayerNorm, Conv1D ``c_proj``).

    Returns numpy arrays: ``attn`` [item layer head span] (mass of the final query row on each
    span), ``head_total`` [item layer head] (each head's contribution to the logit difference,
    the output projection applied to that head's slice alone, minus the projection of zero),
    ``logit_diff`` [item].
    """
    import numpy as np
    import torch

    from mechinterp.probe import SPANS

    if arch == "gpt2":
        layers, final = model.transformer.h, model.transformer.ln_f
        o_projs = [blk.attn.c_proj for blk in layers]
        posts = [None] * len(layers)
    else:
        layers, final = model.model.layers, model.model.norm
        o_projs = [blk.self_attn.o_proj for blk in layers]
        posts = [blk.post_attention_layernorm for blk in layers] if arch == "gemma3" else [None] * len(layers)
    cfg = model.config
    H = cfg.num_attention_heads if hasattr(cfg, "num_attention_heads") else cfg.n_head
    W_U = model.lm_head.weight.detach().float()
    out = {"attn": [], "head_total": [], "logit_diff": []}
    for it in items:
        grabbed: dict = {}
        handles = []
        for layer, o in enumerate(o_projs):
            handles.append(o.register_forward_hook(
                lambda mod, inp, outp, layer=layer: grabbed.__setitem__(("z", layer), inp[0][0, -1].detach().float())))
            handles.append(o.register_forward_hook(
                lambda mod, inp, outp, layer=layer: grabbed.__setitem__(("o", layer), outp[0, -1].detach().float())))
        handles.append(final.register_forward_hook(
            lambda mod, inp, outp: grabbed.__setitem__("final_in", inp[0][0, -1].detach().float())))
        try:
            with torch.no_grad():
                res = model(torch.tensor([list(it.input_ids)]), output_attentions=True)
        finally:
            for h in handles:
                h.remove()
        logits = res.logits[0, -1].float()
        du = W_U[it.context_token] - W_U[it.parametric_token]
        x = grabbed["final_in"]

        def rms(v, eps):
            return torch.sqrt(v.pow(2).mean() + eps)

        if arch == "gpt2":
            s = torch.sqrt(x.var(unbiased=False) + final.eps)

            def final_map(r):
                return (r - r.mean()) / s * final.weight.float()
        else:
            s = rms(x, final.eps if hasattr(final, "eps") else final.variance_epsilon)
            w = (1.0 + final.weight.float()) if arch == "gemma3" else final.weight.float()

            def final_map(r):
                return r / s * w
        labels = it.span_mask()
        masks = torch.tensor([[1.0 if lab == span else 0.0 for lab in labels] for span in SPANS])  # [span pos]
        attn = np.zeros((len(layers), H, len(SPANS)))
        heads = np.zeros((len(layers), H))
        for layer, o in enumerate(o_projs):
            _reference_heads(res, grabbed, layer, o, posts[layer], H, masks, final_map, du, attn, heads, rms)
        out["attn"].append(attn)
        out["head_total"].append(heads)
        out["logit_diff"].append(float(logits[it.context_token] - logits[it.parametric_token]))
    return {k: np.array(v) for k, v in out.items()}


def _reference_heads(res, grabbed, layer, o, post, H, masks, final_map, du, attn, heads, rms) -> None:
    """One layer of :func:`hf_reference`: masses from ``output_attentions``, per-head contributions by
    applying the output projection to one head's slice of its input."""
    import torch

    with torch.no_grad():
        attn[layer] = (res.attentions[layer][0, :, -1, :].float() @ masks.T).numpy()
        z = grabbed[("z", layer)]
        dh = z.shape[0] // H
        zero = o(torch.zeros_like(z)[None].to(o.weight.dtype))[0].float()
        for h in range(H):
            zh = torch.zeros_like(z)
            zh[h * dh:(h + 1) * dh] = z[h * dh:(h + 1) * dh]
            r = o(zh[None].to(o.weight.dtype))[0].float() - zero
            if post is not None:  # Gemma-3: post-attention norm, its scale frozen at the final position
                r = r / rms(grabbed[("o", layer)], post.eps) * (1.0 + post.weight.float())
            heads[layer, h] = float(final_map(r) @ du)
