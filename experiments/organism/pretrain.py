"""Pretraining the organism: a small Llama-style decoder learns the world's facts from scratch.

The corpus is a stream of short "documents", each a few statements of known
facts in randomly chosen surface forms (:data:`world.PRETRAIN_TEMPLATES`).
A fraction ``copy_fraction`` of documents instead states a *random* fact
about a throw-away subject twice (in the same or two surface forms, with up to
``copy_filler`` unrelated statements between), and ``qa_fraction`` are short
question-answer documents ("q : birthplace of X ? a : Y"), half answered from a
throw-away fact stated just before, half closed-book about a known fact. These
teach the model to read facts from its input (a base model's in-context
ability) without giving throw-away subjects any fact it could memorise.
Measured: with fillers between the two mentions (``copy_filler=2``) the model
never learned to copy within 1500 steps; without them it copies 94-99 %.

The loop is a plain tight loop (AdamW, warm-up + cosine, full batches of
padded documents): at this size (~1M parameters) it is several times faster
than ``transformers.Trainer`` on CPU. Closed-book recall of the known facts is
measured at the end (:func:`closed_book_recall`), greedy next token after a
recall prefix such as ``"the capital of X is"``.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from cpi.config import Config, check_at_least, check_fits_memory, check_in_interval
from cpi.errors import ConfigError
from cpi.progress import progress
from experiments.organism.world import Fact, PRETRAIN_QUESTIONS, PRETRAIN_TEMPLATES, RECALL_TEMPLATES, RELATIONS, World


@dataclass(frozen=True)
class PretrainConfig(Config):
    """Model shape and pretraining schedule of the organism (the defaults are ``cpi run``'s)."""
    n_layers: int = 4
    d_model: int = 128
    n_heads: int = 4
    n_kv_heads: int = 4
    d_mlp: int = 512
    max_positions: int = 256
    tie_embeddings: bool = False
    steps: int = 1500
    batch_size: int = 32
    lr: float = 3e-3
    warmup: int = 100
    weight_decay: float = 0.01
    facts_per_doc: int = 4
    copy_fraction: float = 0.3
    qa_fraction: float = 0.3
    copy_filler: int = 0  # at most this many unrelated statements between the two mentions
    seed: int = 0
    threads: int = 0  # 0 = leave torch's default

    def validate(self) -> None:
        check_at_least(self, n_layers=1, d_model=1, n_heads=1, n_kv_heads=1, d_mlp=1, steps=1, batch_size=1,
                       facts_per_doc=1)
        if self.d_model % self.n_heads:
            raise ConfigError(f"field 'n_heads': must divide d_model={self.d_model}, got {self.n_heads}")
        if self.n_heads % self.n_kv_heads:
            raise ConfigError(f"field 'n_kv_heads': must divide n_heads={self.n_heads}, got {self.n_kv_heads}")
        check_in_interval(self, copy_fraction="[0, 1)")
        if not 0.0 <= self.qa_fraction < 1.0 or self.qa_fraction + self.copy_fraction >= 1.0:
            raise ConfigError(f"field 'qa_fraction': must be in [0, 1 - copy_fraction), got {self.qa_fraction}")
        if self.lr <= 0:
            raise ConfigError(f"field 'lr': must be > 0, got {self.lr}")
        check_fits_memory(self.training_bytes(), "pretrain (n_layers, d_model, d_mlp, batch_size, max_positions)")

    def training_bytes(self, vocab_size: int = 5000) -> float:
        """A rough lower bound of pretraining's memory in bytes: fp32 weights, gradients and two Adam
        moments (16 bytes a parameter) plus the activations kept for backward (~16 floats per
        position, layer and width, and the logits). ``vocab_size``: the world's words (a few thousand)."""
        kv = self.d_model * self.n_kv_heads // self.n_heads
        per_layer = 2 * self.d_model * self.d_model + 2 * self.d_model * kv + 3 * self.d_model * self.d_mlp
        params = self.n_layers * per_layer + (1 if self.tie_embeddings else 2) * vocab_size * self.d_model
        tokens = self.batch_size * self.max_positions
        acts = tokens * (16 * self.n_layers * max(self.d_model, self.d_mlp) + 2 * vocab_size)
        return 16.0 * params + 4.0 * acts


def statement(fact: Fact, rng: random.Random) -> str:
    return rng.choice(PRETRAIN_TEMPLATES[fact.relation]).format(s=fact.subject, o=fact.obj)


def make_document(world: World, rng: random.Random, cfg: PretrainConfig, throwaway: Sequence[str]) -> str:
    """One pretraining document (see the module docstring)."""
    u = rng.random()
    if throwaway and u < cfg.qa_fraction:
        # a short reading-comprehension document: a throw-away fact, then a question answered from it;
        # or (half the time) a closed-book question about a known fact
        rel = rng.choice(tuple(RELATIONS))
        q = PRETRAIN_QUESTIONS[rel][0]
        if rng.random() < 0.5:
            fact = Fact(rng.choice(throwaway), rel, rng.choice(world.objects(rel)))
            return f"{statement(fact, rng)} {q.format(s=fact.subject)} {fact.obj} ."
        fact = rng.choice([f for f in world.known_facts if f.relation == rel])
        return f"{q.format(s=fact.subject)} {fact.obj} ."
    if throwaway and u < cfg.qa_fraction + cfg.copy_fraction:
        rel = rng.choice(tuple(RELATIONS))
        fact = Fact(rng.choice(throwaway), rel, rng.choice(world.objects(rel)))
        # half the time the same surface form twice (plain induction), else two different forms
        if rng.random() < 0.5:
            first = second = rng.choice(PRETRAIN_TEMPLATES[rel])
        else:
            first, second = rng.sample(PRETRAIN_TEMPLATES[rel], 2)
        filler = [statement(rng.choice(world.known_facts), rng) for _ in range(rng.randint(0, cfg.copy_filler))]
        return " ".join([first.format(s=fact.subject, o=fact.obj), *filler, second.format(s=fact.subject, o=fact.obj)])
    facts = rng.sample(world.known_facts, cfg.facts_per_doc)
    return " ".join(statement(f, rng) for f in facts)


def build_model(cfg: PretrainConfig, vocab_size: int, tokenizer: Any = None):
    """A fresh ``LlamaForCausalLM`` of the configured shape (seeded by ``cfg.seed``)."""
    hf = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=cfg.d_model,
        intermediate_size=cfg.d_mlp,
        num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.n_kv_heads,
        max_position_embeddings=cfg.max_positions,
        tie_word_embeddings=cfg.tie_embeddings,
        pad_token_id=getattr(tokenizer, "pad_token_id", 0),
        bos_token_id=getattr(tokenizer, "bos_token_id", 2),
        eos_token_id=getattr(tokenizer, "eos_token_id", 3),
        attn_implementation="eager",
    )
    torch.manual_seed(cfg.seed)
    return LlamaForCausalLM(hf)


def _batch(tokenizer, texts: Sequence[str]):
    enc = tokenizer(list(texts), return_tensors="pt", padding=True, padding_side="right")
    labels = enc["input_ids"].clone()
    labels[enc["attention_mask"] == 0] = -100
    return enc["input_ids"], enc["attention_mask"], labels


@dataclass
class PretrainResult:
    model: Any
    tokenizer: Any
    losses: list[float]
    tokens: int
    seconds: float

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / max(self.seconds, 1e-9)


def pretrain_organism(world: World, tokenizer, cfg: PretrainConfig, desc: str = "pretrain") -> PretrainResult:
    """Train a fresh model on the world's known facts; return it with its loss curve and speed."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    model = build_model(cfg, len(tokenizer), tokenizer)
    model.train()
    rng = random.Random(cfg.seed)
    throwaway = list(world.throwaway) if cfg.copy_fraction > 0 else []
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embed" not in n)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.98),
    )

    def lr_at(step: int) -> float:
        if step < cfg.warmup:
            return (step + 1) / cfg.warmup
        frac = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    losses: list[float] = []
    tokens = 0
    t0 = time.perf_counter()
    for _ in progress(range(cfg.steps), desc=desc):
        docs = [make_document(world, rng, cfg, throwaway) for _ in range(cfg.batch_size)]
        ids, mask, labels = _batch(tokenizer, docs)
        out = model(input_ids=ids, attention_mask=mask, labels=labels)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(out.loss.detach()))
        tokens += int(mask.sum())
    seconds = time.perf_counter() - t0
    model.eval()
    return PretrainResult(model=model, tokenizer=tokenizer, losses=losses, tokens=tokens, seconds=seconds)


def _next_token(model, tokenizer, prompts: Sequence[str], batch_size: int = 64) -> tuple[list[str], "torch.Tensor"]:
    """Greedy next word after each prompt and the next-token distribution ``[batch d_vocab]``."""
    words, probs = [], []
    model.eval()
    with torch.inference_mode():
        for i in range(0, len(prompts), batch_size):
            enc = tokenizer(list(prompts[i : i + batch_size]), return_tensors="pt", padding=True, padding_side="left")
            p = torch.softmax(model(**enc).logits[:, -1, :].float(), dim=-1)
            words += tokenizer.convert_ids_to_tokens(p.argmax(-1).tolist())
            probs.append(p)
    return words, torch.cat(probs) if probs else torch.empty(0)


def closed_book_recall(model, tokenizer, facts: Sequence[Fact], batch_size: int = 64) -> "pd.DataFrame":
    """Greedy next-token recall of each fact after its recall prefix (one row per fact).

    Columns: ``subject, relation, object, predicted, correct, p_object`` where
    ``p_object`` is the model's probability of the true object as next token.
    """
    words, probs = _next_token(model, tokenizer, [RECALL_TEMPLATES[f.relation].format(s=f.subject) for f in facts],
                               batch_size)
    obj_ids = tokenizer.convert_tokens_to_ids([f.obj for f in facts])
    return pd.DataFrame([
        {"subject": f.subject, "relation": f.relation, "object": f.obj, "predicted": w, "correct": w == f.obj,
         "p_object": float(probs[i, obj_ids[i]])}
        for i, (f, w) in enumerate(zip(facts, words))
    ], columns=["subject", "relation", "object", "predicted", "correct", "p_object"])


def context_reading(model, tokenizer, world: World, seed: int = 0, batch_size: int = 64) -> "pd.DataFrame":
    """The base model's in-context reading, in its own pretraining format (no instruction template).

    Each prompt states one fact and asks for it as in the question-answer pretraining documents
    (``"<statement> q : capital of X ? a :"``); the greedy next word is the answer.
    ``kind="novel"``: a subject never seen in pretraining (``world.new_facts``), so only the
    context can answer; ``kind="conflict"``: a held-out known subject (``world.eval_facts``) with
    a different object stated, so context and memory disagree. This is the base's
    knowledge-conflict behaviour before any finetuning: which of the two paths already wins.
    Only meaningful for a base that saw QA documents (``qa_fraction > 0``); the ``--quick``
    base did not and answers neither.

    Columns: ``kind, subject, relation, context_answer, parametric_answer`` (empty for novel),
    ``predicted, follows_context, follows_memory``.
    """
    rng = random.Random(f"context-reading-{seed}")
    rows = []
    for kind, facts in (("novel", world.new_facts), ("conflict", world.eval_facts)):
        for f in facts:
            ctx_obj = f.obj if kind == "novel" else rng.choice([o for o in world.objects(f.relation) if o != f.obj])
            rows.append({"kind": kind, "subject": f.subject, "relation": f.relation, "context_answer": ctx_obj,
                         "parametric_answer": f.obj if kind == "conflict" else "",
                         "prompt": f"{statement(Fact(f.subject, f.relation, ctx_obj), rng)} "
                                   f"{PRETRAIN_QUESTIONS[f.relation][0].format(s=f.subject)}"})
    words, _ = _next_token(model, tokenizer, [r.pop("prompt") for r in rows], batch_size)
    for r, w in zip(rows, words):
        r.update(predicted=w, follows_context=w == r["context_answer"],
                 follows_memory=bool(r["parametric_answer"]) and w == r["parametric_answer"])
    return pd.DataFrame(rows, columns=["kind", "subject", "relation", "context_answer", "parametric_answer",
                                       "predicted", "follows_context", "follows_memory"])


def save_model(model, tokenizer, path: str | Path) -> Path:
    """Save a reloadable HF model folder (safetensors + tokenizer)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


__all__ = ["PretrainConfig", "PretrainResult", "pretrain_organism", "closed_book_recall", "context_reading", "build_model",
           "save_model"]
