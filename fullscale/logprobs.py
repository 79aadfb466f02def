"""Log-probabilities of answer token sequences after a prompt (the engine of :func:`fullscale.scoring.score_logprob`).

The answer tokens are found by tokenizing ``prompt + answer`` **together** and taking the tokens
whose character offsets lie after the prompt, never by tokenizing the answer alone: alone, a
sentencepiece tokenizer would prepend ``"▁"`` (and a BOS) and a byte-level BPE would miss the
space-merged token ``"Ġ..."``. Every sequence is conditioned on the prompt's *own* tokens; an answer
that merges across the prompt boundary is tokenized as a fresh continuation (:func:`answer_sequence`).
Two runners give the same numbers: :func:`sequence_logprobs` (full sequences, right padding) and
:func:`shared_prefix_logprobs` (each prompt once, answers on its KV cache).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

from cpi.errors import CpiError
from cpi.progress import progress
from fullscale.batching import pad_batch
from fullscale.prompts import FormattedPrompt


def _device_of(model: Any):
    import torch

    try:
        return next(model.parameters()).device
    except StopIteration:  # pragma: no cover
        return torch.device("cpu")


def _batches(order: Sequence[int], size: int) -> list[list[int]]:
    return [list(order[i:i + size]) for i in range(0, len(order), size)]



@dataclass(frozen=True)
class AnswerSequence:
    """One (prompt, answer surface form) sequence to score: ``ids[start:]`` are the answer's tokens.

    ``ids[:start]`` are always the prompt's own tokens. ``boundary_merge``: tokenizing prompt and
    answer together changes the prompt's tokens, so the answer's tokens were taken from the answer
    tokenized as a fresh continuation instead (see :func:`answer_sequence`).
    """

    ids: tuple[int, ...]
    start: int
    boundary_merge: bool


#: Texts put before an answer to tokenize it as the start of a new token (the first whose tokens end
#: exactly where the answer begins is used).
_ANCHORS = ("\n", "\n\n", ".", "a")


def _continuation_ids(tokenizer: Any, answer: str) -> list[int] | None:
    """The answer's tokens when it starts right after a token boundary (no dummy prefix, no merge).

    Tokenizes ``anchor + answer`` and keeps the tokens past the anchor, for the first anchor whose
    tokens end exactly at the answer's first character; ``None`` if no anchor separates cleanly.
    """
    for anchor in _ANCHORS:
        enc = tokenizer(anchor + answer, add_special_tokens=False, return_offsets_mapping=True)
        ids, offs = list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]
        cut = len(anchor)
        if any(a < cut < b for a, b in offs):
            continue
        rest = [i for i, (a, b) in zip(ids, offs) if a >= cut and b > a]
        if rest and tokenizer.decode(rest) == answer:
            return rest
    return None


def answer_sequence(tokenizer: Any, fp: FormattedPrompt, answer: str, add_special: bool) -> AnswerSequence:
    """The prompt's own tokens followed by the tokens of ``answer`` as its continuation.

    ``prompt + answer`` is tokenized together, so the answer's tokens are those the tokenizer gives it
    after this prompt (a sentencepiece ``"▁Paris"``, a byte-level ``"ĠParis"``), never the answer
    tokenized alone (which would add a dummy-prefix ``"▁"`` or a BOS). When the joint tokenization
    does not begin with the prompt's own tokens (the answer merged across the boundary: ``"than"`` +
    ``"thunder"`` -> ``"▁th" "anth" "under"``), the answer is tokenized as a fresh continuation
    (:func:`_continuation_ids`) and appended to the prompt's tokens, so the log-prob is still
    conditioned on the prompt itself (``boundary_merge`` marks it).
    """
    prompt_ids = list(fp.input_ids)
    n = len(prompt_ids)
    if n == 0:
        raise CpiError(f"item {fp.item_id}: nothing to condition the answer on (empty prompt)")
    enc = tokenizer(fp.text + answer, add_special_tokens=add_special, return_offsets_mapping=True)
    ids, offs = list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]
    # drop trailing special tokens (e.g. an EOS added by a post-processor): they are not the answer
    while len(ids) > n and offs[-1][1] <= offs[-1][0]:
        ids.pop()
        offs.pop()
    if len(ids) > n and ids[:n] == prompt_ids:
        return AnswerSequence(ids=tuple(int(i) for i in ids), start=n, boundary_merge=False)
    cont = _continuation_ids(tokenizer, answer)
    if not cont:
        raise CpiError(f"item {fp.item_id}: answer {answer!r} cannot be tokenized as a continuation of the prompt")
    return AnswerSequence(ids=tuple(int(i) for i in prompt_ids + cont), start=n, boundary_merge=True)


def sequence_logprobs(model: Any, seqs: Sequence[AnswerSequence], pad_id: int, batch_size: int = 16,
                      desc: str = "log-prob", per_token: bool = False) -> list[tuple]:
    """``(sum log p(answer tokens | preceding tokens), n_answer_tokens)`` for each sequence.

    With ``per_token`` each entry gets a third element: the answer tokens' own log-probs (a tuple;
    the sum is still computed as without it, so totals are the same bits).

    Batches are RIGHT-padded (input_ids [batch pos], attention mask 1 on real
    tokens): with causal attention and positions counted from 0 the real
    tokens see exactly what they see unbatched, so scores do not depend on the
    batch. Log-softmax is taken in float32 on the answer positions only.
    """
    import torch

    dev = _device_of(model)
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i].ids))
    res: list[tuple] = [(float("nan"), 0)] * len(seqs)
    for batch in progress(_batches(order, batch_size), desc=desc):
        ids, mask = pad_batch([seqs[i].ids for i in batch], pad_id, side="right")
        with torch.no_grad():
            logits = model(input_ids=ids.to(dev), attention_mask=mask.to(dev)).logits  # [batch pos d_vocab]
        for r, i in enumerate(batch):
            s = seqs[i]
            pos = torch.arange(s.start - 1, len(s.ids) - 1, device=logits.device)  # positions predicting the answer
            targets = torch.tensor(s.ids[s.start:], device=logits.device)
            tok = torch.log_softmax(logits[r, pos].float(), dim=-1).gather(-1, targets[:, None])  # [answer_pos 1]
            lp = tok.sum()
            res[i] = (float(lp), len(targets), tuple(tok[:, 0].tolist())) if per_token else (float(lp), len(targets))
    return res


def shared_prefix_logprobs(model: Any, seqs: Sequence[AnswerSequence], pad_id: int, batch_size: int = 16,
                           desc: str = "log-prob", per_token: bool = False) -> list[tuple]:
    """Same result as :func:`sequence_logprobs` (``per_token`` too), computing each distinct prompt only once.

    The four scored sequences of an item (two answers × two surface forms)
    share their prompt. Prompts are grouped (``batch_size`` distinct prompts
    per batch), run once LEFT-padded with explicit ``position_ids`` (so each
    real token keeps the position it has unbatched) and ``use_cache=True``;
    the last prompt position gives every answer's first-token log-prob; the KV
    cache is then indexed out to one row per answer (``batch_select_indices``)
    and the remaining answer tokens are run on top of it, right-padded. Cost:
    one prompt pass per item instead of four.
    Shapes: prompt pass input_ids [batch pos]; answer pass [n_answers answer_pos].
    """
    import torch

    import inspect

    dev = _device_of(model)
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model  # PEFT wrappers pass kwargs on
    params = inspect.signature(inner.forward).parameters
    cache_kw = "cache" if "cache" in params else "past_key_values"
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, s in enumerate(seqs):
        groups.setdefault(s.ids[: s.start], []).append(i)
    prefixes = sorted(groups, key=len)
    res: list[tuple] = [(float("nan"), 0)] * len(seqs)
    for batch in progress(_batches(prefixes, batch_size), desc=desc):
        ids, mask = pad_batch(batch, pad_id, side="left")
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        extra = {"logits_to_keep": 1} if "logits_to_keep" in params else {}
        with torch.no_grad():
            out = model(input_ids=ids.to(dev), attention_mask=mask.to(dev), position_ids=pos.to(dev), use_cache=True,
                        **extra)
        first = torch.log_softmax(out.logits[:, -1].float(), dim=-1)  # [batch d_vocab]
        rows: list[tuple[int, int]] = [(r, i) for r, p in enumerate(batch) for i in groups[p]]
        conts = [seqs[i].ids[seqs[i].start:] for _, i in rows]
        totals = [float(first[r, c[0]]) for (r, _), c in zip(rows, conts)]
        tokens = [[t] for t in totals]
        longest = max(len(c) for c in conts)
        if longest > 1:
            cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
            if cache is None or not hasattr(cache, "batch_select_indices"):  # no usable KV cache: full sequences
                full = sequence_logprobs(model, [seqs[i] for _, i in rows], pad_id, batch_size, desc=desc,
                                         per_token=per_token)
                for (_, i), r in zip(rows, full):
                    res[i] = r
                continue
            sel = torch.tensor([r for r, _ in rows], device=dev)
            cache.batch_select_indices(sel)
            n_in = longest - 1
            cin, cmask = pad_batch([c[:-1] for c in conts], pad_id, side="right")  # [n_answers n_in]
            full_mask = torch.cat([mask[sel.cpu()], cmask], dim=1)
            real = mask.sum(-1)[sel.cpu()]  # [n_answers] prompt lengths
            cpos = real[:, None] + torch.arange(n_in)[None, :]
            with torch.no_grad():
                logits = model(input_ids=cin.to(dev), attention_mask=full_mask.to(dev), position_ids=cpos.to(dev),
                               use_cache=True, **{cache_kw: cache}).logits  # [n_answers answer_pos d_vocab]
            for k, c in enumerate(conts):
                if len(c) > 1:
                    tgt = torch.tensor(c[1:], device=logits.device)
                    tok = torch.log_softmax(logits[k, : len(c) - 1].float(), dim=-1).gather(-1, tgt[:, None])
                    totals[k] += float(tok.sum())
                    tokens[k].extend(tok[:, 0].tolist())
        for (_, i), c, t, tl in zip(rows, conts, totals, tokens):
            res[i] = (t, len(c), tuple(tl)) if per_token else (t, len(c))
    return res


def logsumexp(values: Sequence[float]) -> float:
    m = max(values)
    if m == -math.inf:
        return m
    return m + math.log(sum(math.exp(v - m) for v in values))

