"""An auditable context-reliance scorer for knowledge-conflict items.

Three modes, each giving one row per item (all kept in the results folder):

1. **Generation + containment** (:func:`score_generation`, the paper's metric).
   Greedy decoding in batches with *left* padding; the generated text is cut
   at the first stop string (``"\\n\\n"``, ``"###"``...) and searched for every
   accepted surface form of the context answer and of the parametric answer
   with :func:`find_answer`: both texts are normalised (Unicode NFKD, accents
   dropped, lower case, punctuation -> space, whitespace collapsed) and an
   answer counts only as a run of *whole words* — ``"Rome"`` is not found in
   ``"Romeo"``. When a match of one side lies inside a longer match of the
   other side (context ``"York"``, parametric ``"New York"``, output
   ``"New York"``) only the longer one counts. Outcome: ``context``,
   ``parametric``, ``both`` or ``neither``.
2. **Log-probability** (:func:`score_logprob`). For each candidate answer the
   log-probability of its *full* token sequence after the prompt, summed over
   its tokens, for two surface forms: directly after the prompt and after a
   leading space. The answer tokens are found by tokenizing ``prompt + answer``
   **together** and taking the tokens whose character offsets lie after the
   prompt, never by tokenizing the answer alone: alone, a sentencepiece
   tokenizer would prepend ``"▁"`` (and a BOS) and a byte-level BPE would miss
   the space-merged token ``"Ġ..."``, so the scored tokens would not be the ones
   the model would actually produce after this prompt. Every form is
   conditioned on the prompt's *own* tokens: if tokenizing prompt and answer
   together changes the prompt's tokens (``"than"`` + ``"thunder"`` ->
   ``"▁th" "anth" "under"``), the answer is tokenized as a fresh continuation
   and appended to them (``merge_<side>_<form>`` flags it). The two forms are
   distinct texts after the same prompt, so their probabilities add:
   ``logp_* = logsumexp(nospace, space)``. Then
   ``margin = logp_context - logp_parametric``, ``reliance = sigmoid(margin)``
   (= p_ctx / (p_ctx + p_par) restricted to the two answers) and
   ``mem_ratio_lp = 1 - reliance``. Scores use *right* padding, so batched
   and one-at-a-time scores agree (tested to 1e-4).
3. **Closed book**: the same two modes on the prompt without the context;
   ``knows_parametric`` says whether the model produces (generation) or prefers
   (log-prob, when generation was not run) the parametric answer with no
   context, so that items the model never knew can be reported apart.

Only pandas is imported at module level; torch is imported in the functions.
"""

from __future__ import annotations

import logging
import math
import unicodedata
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from cpi.errors import CpiError
from cpi.progress import progress
from fullscale.batching import pad_batch, pad_token_id
from fullscale.prompts import MODES, FormattedPrompt, format_prompts, model_max_length

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    import torch

    from fullscale.conflicts import ConflictItem

log = logging.getLogger(__name__)

OUTCOMES = ("context", "parametric", "both", "neither")
DEFAULT_STOPS = ("\n\n", "###", "\nQuestion:", "\nBackground:", "<|")

# ---------------------------------------------------------------------------
# 1. normalised, alias-aware, word-boundary containment


def normalize_text(text: str) -> str:
    """Lower-case, accent-free, punctuation-free text with single spaces between words.

    ``"  São-Paulo!"`` -> ``"sao paulo"``. Used on both the output and the
    answers, so matching ignores case, accents and punctuation.
    """
    text = unicodedata.normalize("NFKD", str(text))
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    text = text.lower()
    text = "".join(ch if (ch.isalnum() or ch.isspace()) else " " for ch in text)
    return " ".join(text.split())


def _word_matches(words: Sequence[str], answer_words: Sequence[str]) -> list[tuple[int, int]]:
    n = len(answer_words)
    if n == 0:
        return []
    return [(i, i + n) for i in range(len(words) - n + 1) if list(words[i:i + n]) == list(answer_words)]


def find_answer(output: str, answers: Iterable[str]) -> list[tuple[int, int, str]]:
    """Every occurrence ``(start_word, end_word, answer)`` of any accepted answer as whole words of ``output``."""
    words = normalize_text(output).split()
    found = []
    for ans in answers:
        aw = normalize_text(ans).split()
        found.extend((a, b, ans) for a, b in _word_matches(words, aw))
    return found


def match_answer(output: str, answers: Iterable[str] | str) -> bool:
    """True if any accepted answer occurs in ``output`` as whole words (normalised)."""
    if isinstance(answers, str):
        answers = (answers,)
    return bool(find_answer(output, answers))


def _strictly_inside(m: tuple[int, int, str], others: Sequence[tuple[int, int, str]]) -> bool:
    return any(o[0] <= m[0] and m[1] <= o[1] and (o[1] - o[0]) > (m[1] - m[0]) for o in others)


def classify_output(output: str, context_answers: Sequence[str], parametric_answers: Sequence[str]) -> dict[str, Any]:
    """Match both answer sets in ``output``; returns ``cf_correct``, ``param_correct``, ``outcome``, ``matched_*``.

    A match of one side that lies strictly inside a longer match of the other
    side is dropped (the output names the longer answer, not the shorter).
    """
    ctx = find_answer(output, context_answers)
    par = find_answer(output, parametric_answers)
    ctx_kept = [m for m in ctx if not _strictly_inside(m, par)]
    par_kept = [m for m in par if not _strictly_inside(m, ctx)]
    cf, pa = bool(ctx_kept), bool(par_kept)
    outcome = "both" if cf and pa else "context" if cf else "parametric" if pa else "neither"
    return {
        "cf_correct": cf,
        "param_correct": pa,
        "outcome": outcome,
        "matched_context": "|".join(sorted({m[2] for m in ctx_kept})),
        "matched_parametric": "|".join(sorted({m[2] for m in par_kept})),
    }


def cut_at_stops(text: str, stops: Sequence[str] = DEFAULT_STOPS) -> str:
    """``text`` up to the first stop string that is not at its very start (leading whitespace ignored)."""
    stripped = text.lstrip()
    offset = len(text) - len(stripped)
    cut = len(stripped)
    for s in stops:
        i = stripped.find(s, 1)
        if i != -1:
            cut = min(cut, i)
    return text[: offset + cut].strip()


# ---------------------------------------------------------------------------
# helpers


def _accepted(item: Any, side: str) -> tuple[str, ...]:
    prop = getattr(item, f"accepted_{side}", None)
    if prop is not None:
        return tuple(a for a in prop if a)
    main = getattr(item, f"{side}_answer")
    return tuple(a for a in (main, *getattr(item, f"{side}_aliases", ())) if a)


def _device_of(model: Any):
    import torch

    try:
        return next(model.parameters()).device
    except StopIteration:  # pragma: no cover
        return torch.device("cpu")


def _batches(order: Sequence[int], size: int) -> list[list[int]]:
    return [list(order[i:i + size]) for i in range(0, len(order), size)]


def _prompts_for(items: Sequence[Any], tokenizer: Any, template: str, with_context: bool,
                 max_length: int | None) -> list[FormattedPrompt]:
    return format_prompts(items, tokenizer, template=template, with_context=with_context, max_length=max_length)


# ---------------------------------------------------------------------------
# generation


def generate_outputs(model: Any, tokenizer: Any, prompts: Sequence[FormattedPrompt], batch_size: int = 16,
                     max_new_tokens: int = 24, desc: str = "generate") -> list[str]:
    """Greedy continuations of ``prompts`` (decoded, special tokens dropped), batched with LEFT padding.

    Prompts are grouped by length to limit padding; the returned list is in
    the input order. input_ids: [batch pos] left-padded with the pad token and
    a matching attention mask, so every prompt's last token sits at the same
    position and the new tokens start together.
    """
    import torch

    if batch_size < 1:
        raise CpiError(f"batch_size must be >= 1, got {batch_size}")
    dev = _device_of(model)
    pad = pad_token_id(tokenizer)
    eos = tokenizer.eos_token_id
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i].input_ids))
    outputs: list[str] = [""] * len(prompts)
    for batch in progress(_batches(order, batch_size), desc=desc):
        ids, mask = pad_batch([prompts[i].input_ids for i in batch], pad, side="left")
        width = ids.shape[1]
        with torch.no_grad():
            out = model.generate(
                input_ids=ids.to(dev), attention_mask=mask.to(dev), max_new_tokens=max_new_tokens,
                do_sample=False, num_beams=1, pad_token_id=pad, eos_token_id=eos,
            )
        new = out[:, width:].tolist()
        for r, i in enumerate(batch):
            toks = new[r]
            if eos is not None and eos in toks:
                toks = toks[: toks.index(eos)]
            outputs[i] = tokenizer.decode(toks, skip_special_tokens=True)
    return outputs


def _gen_limit(model: Any, tokenizer: Any, max_new_tokens: int, max_length: int | None) -> int | None:
    limit = max_length if max_length is not None else model_max_length(model, tokenizer)
    if limit is None:
        return None
    if limit - max_new_tokens < 1:
        raise CpiError(f"max_new_tokens={max_new_tokens} leaves no room for a prompt in {limit} positions")
    return limit - max_new_tokens


def score_generation(model: Any, tokenizer: Any, items: Sequence["ConflictItem"], template: str = "alpaca",
                     batch_size: int = 16, with_context: bool = True, max_new_tokens: int = 24,
                     max_length: int | None = None, stops: Sequence[str] = DEFAULT_STOPS) -> "pd.DataFrame":
    """Greedy generation + containment: one row per item.

    Columns: ``item_id, dataset, category, prompt, truncated, answer_cut, output`` (raw
    decoded continuation), ``answer_text`` (output cut at the first stop
    string; this is what is matched), ``cf_correct, param_correct, outcome,
    matched_context, matched_parametric``. ``max_length`` (default: the
    model's context length) bounds prompt + new tokens; longer prompts have
    their context truncated from the left (``truncated``; ``answer_cut`` when
    that removed the context answer, see :class:`FormattedPrompt`).
    """
    import pandas as pd

    limit = _gen_limit(model, tokenizer, max_new_tokens, max_length)
    prompts = _prompts_for(items, tokenizer, template, with_context, limit)
    outs = generate_outputs(model, tokenizer, prompts, batch_size, max_new_tokens,
                            desc="generate" if with_context else "generate (closed book)")
    rows = []
    for it, fp, out in zip(items, prompts, outs):
        answer_text = cut_at_stops(out, stops)
        rows.append({
            "item_id": it.id, "dataset": it.dataset, "category": it.category,
            "prompt": fp.text, "truncated": fp.truncated, "answer_cut": fp.answer_cut, "output": out,
            "answer_text": answer_text,
            **classify_output(answer_text, _accepted(it, "context"), _accepted(it, "parametric")),
        })
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------
# log-probabilities of answers


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
                      desc: str = "log-prob") -> list[tuple[float, int]]:
    """``(sum log p(answer tokens | preceding tokens), n_answer_tokens)`` for each sequence.

    Batches are RIGHT-padded (input_ids [batch pos], attention mask 1 on real
    tokens): with causal attention and positions counted from 0 the real
    tokens see exactly what they see unbatched, so scores do not depend on the
    batch. Log-softmax is taken in float32 on the answer positions only.
    """
    import torch

    dev = _device_of(model)
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i].ids))
    res: list[tuple[float, int]] = [(float("nan"), 0)] * len(seqs)
    for batch in progress(_batches(order, batch_size), desc=desc):
        ids, mask = pad_batch([seqs[i].ids for i in batch], pad_id, side="right")
        with torch.no_grad():
            logits = model(input_ids=ids.to(dev), attention_mask=mask.to(dev)).logits  # [batch pos d_vocab]
        for r, i in enumerate(batch):
            s = seqs[i]
            pos = torch.arange(s.start - 1, len(s.ids) - 1, device=logits.device)  # positions predicting the answer
            targets = torch.tensor(s.ids[s.start:], device=logits.device)
            lp = torch.log_softmax(logits[r, pos].float(), dim=-1).gather(-1, targets[:, None]).sum()
            res[i] = (float(lp), len(targets))
    return res


def shared_prefix_logprobs(model: Any, seqs: Sequence[AnswerSequence], pad_id: int, batch_size: int = 16,
                           desc: str = "log-prob") -> list[tuple[float, int]]:
    """Same result as :func:`sequence_logprobs`, computing each distinct prompt only once.

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
    res: list[tuple[float, int]] = [(float("nan"), 0)] * len(seqs)
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
        longest = max(len(c) for c in conts)
        if longest > 1:
            cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
            if cache is None or not hasattr(cache, "batch_select_indices"):  # no usable KV cache: full sequences
                full = sequence_logprobs(model, [seqs[i] for _, i in rows], pad_id, batch_size, desc=desc)
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
                    lp = torch.log_softmax(logits[k, : len(c) - 1].float(), dim=-1).gather(-1, tgt[:, None]).sum()
                    totals[k] += float(lp)
        for (_, i), c, t in zip(rows, conts, totals):
            res[i] = (t, len(c))
    return res


def logsumexp(values: Sequence[float]) -> float:
    m = max(values)
    if m == -math.inf:
        return m
    return m + math.log(sum(math.exp(v - m) for v in values))


def _answer_room(tokenizer: Any, items: Sequence[Any]) -> int:
    n = 0
    for it in items:
        for ans in (it.context_answer, it.parametric_answer):
            n = max(n, len(tokenizer(" " + ans, add_special_tokens=False)["input_ids"]))
    return n + 2


def score_logprob(model: Any, tokenizer: Any, items: Sequence["ConflictItem"], template: str = "alpaca",
                  batch_size: int = 16, with_context: bool = True, max_length: int | None = None,
                  prompts: Sequence[FormattedPrompt] | None = None, share_prefix: bool = True) -> "pd.DataFrame":
    """Log-probability of the context and the parametric answer: one row per item.

    Columns: ``item_id, dataset, category, prompt, truncated, answer_cut``;
    ``logp_{context,parametric}_{nospace,space}`` (summed log-prob of the
    answer's tokens after the prompt, without / with a leading space),
    ``ntok_*`` (their token counts), ``logp_context``, ``logp_parametric``
    (logsumexp over the two forms), ``margin`` (context − parametric),
    ``reliance`` (sigmoid(margin) in [0, 1]), ``mem_ratio_lp`` (1 − reliance),
    ``prefers_context`` (margin > 0); ``merge_{context,parametric}_{nospace,space}`` (that form merged
    across the prompt boundary when tokenized with the prompt, so its tokens are the answer tokenized as a
    fresh continuation of the prompt's own tokens, see :func:`answer_sequence`) and ``boundary_merge``
    (any form did). Every form is conditioned on the prompt's own tokens.

    ``share_prefix`` (default) runs each prompt once and its four answer
    continuations on its KV cache (:func:`shared_prefix_logprobs`); ``False``
    runs the four full sequences (:func:`sequence_logprobs`). Both give the
    same numbers (tested); ``batch_size`` counts prompts resp. sequences.
    """
    import pandas as pd

    if batch_size < 1:
        raise CpiError(f"batch_size must be >= 1, got {batch_size}")
    if prompts is None:
        limit = max_length if max_length is not None else model_max_length(model, tokenizer)
        if limit is not None:
            limit -= _answer_room(tokenizer, items)
            if limit < 1:
                raise CpiError(f"max_length {max_length} leaves no room for the prompt")
        prompts = _prompts_for(items, tokenizer, template, with_context, limit)
    add_special = (prompts[0].template != "chat") if prompts else True
    seqs: list[AnswerSequence] = []
    keys: list[tuple[int, str, str]] = []
    for k, (it, fp) in enumerate(zip(items, prompts)):
        for side, ans in (("context", it.context_answer), ("parametric", it.parametric_answer)):
            for form, prefix in (("nospace", ""), ("space", " ")):
                seqs.append(answer_sequence(tokenizer, fp, prefix + ans.strip(), add_special))
                keys.append((k, side, form))
    scorer = shared_prefix_logprobs if share_prefix else sequence_logprobs
    scores = scorer(model, seqs, pad_token_id(tokenizer), batch_size,
                    desc="log-prob" if with_context else "log-prob (closed book)")
    per: dict[int, dict[str, Any]] = {}
    seen: dict[tuple[int, str], set] = {}
    for (k, side, form), seq, (lp, n) in zip(keys, seqs, scores):
        row = per.setdefault(k, {"_forms": {"context": [], "parametric": []}, "boundary_merge": False})
        row[f"logp_{side}_{form}"] = lp
        row[f"ntok_{side}_{form}"] = n
        row[f"merge_{side}_{form}"] = seq.boundary_merge
        row["boundary_merge"] = row["boundary_merge"] or seq.boundary_merge
        sig = (seq.ids[: seq.start], seq.ids[seq.start:])
        if sig not in seen.setdefault((k, side), set()):  # identical token sequences are one event
            seen[(k, side)].add(sig)
            row["_forms"][side].append(lp)
    rows = []
    for k, (it, fp) in enumerate(zip(items, prompts)):
        r = per[k]
        forms = r.pop("_forms")
        lc, lp_ = logsumexp(forms["context"]), logsumexp(forms["parametric"])
        margin = lc - lp_
        reliance = 1.0 / (1.0 + math.exp(-margin)) if margin > -700 else 0.0
        rows.append({
            "item_id": it.id, "dataset": it.dataset, "category": it.category,
            "prompt": fp.text, "truncated": fp.truncated, "answer_cut": fp.answer_cut, **r,
            "logp_context": lc, "logp_parametric": lp_, "margin": margin, "reliance": reliance,
            "mem_ratio_lp": 1.0 - reliance, "prefers_context": bool(margin > 0),
        })
    return pd.DataFrame(rows)


def summarize_reliance(df: "pd.DataFrame") -> dict[str, float]:
    """``mean_reliance``, ``mean_margin``, ``context_pref_rate``, ``mean_mem_ratio_lp``, ``n`` of a score_logprob table."""
    n = int(len(df))
    if n == 0:
        return {"n": 0, "mean_reliance": float("nan"), "mean_margin": float("nan"),
                "context_pref_rate": float("nan"), "mean_mem_ratio_lp": float("nan")}
    return {
        "n": n,
        "mean_reliance": float(df["reliance"].mean()),
        "mean_margin": float(df["margin"].mean()),
        "context_pref_rate": float(df["prefers_context"].astype(float).mean()),
        "mean_mem_ratio_lp": float((1.0 - df["reliance"]).mean()),
    }


def memorization_ratio(outcomes: Iterable[str]) -> float:
    """Parametric / (parametric + context) over exclusive generation outcomes (``both``/``neither`` excluded)."""
    outs = list(outcomes)
    p, c = outs.count("parametric"), outs.count("context")
    return p / (p + c) if p + c else float("nan")


# ---------------------------------------------------------------------------
# bootstrap and summaries


def bootstrap_ci(values: Sequence[float], n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean of ``values`` (resampling items, fixed seed)."""
    import numpy as np

    x = np.asarray(list(values), dtype=float)
    x = x[~np.isnan(x)]
    if len(x) == 0:
        return float("nan"), float("nan")
    if n_boot <= 0 or len(x) == 1:
        return float(x.mean()), float(x.mean())
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(x), size=(n_boot, len(x)))
    means = x[idx].mean(axis=1)
    alpha = (1 - level) / 2
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


def summarize_items(items: "pd.DataFrame", by: Sequence[str] = ("checkpoint", "step", "dataset", "category"),
                    n_boot: int = 1000, seed: int = 0, add_all_category: bool = True) -> "pd.DataFrame":
    """Per-group accuracy/reliance table from an items table (one row per group).

    Columns (those whose inputs exist): ``n``, ``n_truncated`` and ``n_answer_cut``
    (items whose context was truncated, and those whose context answer it removed), ``cf_acc``, ``param_acc``,
    ``both_rate``, ``neither_rate``, ``memorization_ratio``, with bootstrap
    ``*_lo``/``*_hi`` for ``cf_acc`` and ``param_acc``; ``mean_margin``,
    ``mean_reliance``, ``context_pref_rate``; closed-book ``cb_param_acc``,
    ``known_rate``, and ``cf_acc_known``/``param_acc_known`` (only items the
    model knows closed-book). With ``add_all_category`` each
    checkpoint × dataset also gets a ``category == "ALL"`` row.
    """
    import pandas as pd

    by = [c for c in by if c in items.columns]
    frames = [items]
    if add_all_category and "category" in by:
        frames.append(items.assign(category="ALL"))
    data = pd.concat(frames, ignore_index=True)
    rows = []
    for key, g in data.groupby(by, sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        row: dict[str, Any] = dict(zip(by, key))
        row["n"] = len(g)
        for flag in ("truncated", "answer_cut"):
            if flag in g:
                row[f"n_{flag}"] = int(g[flag].astype(bool).sum())
        if "cf_correct" in g:
            for col, name in (("cf_correct", "cf_acc"), ("param_correct", "param_acc")):
                v = g[col].astype(float)
                row[name] = float(v.mean())
                row[f"{name}_lo"], row[f"{name}_hi"] = bootstrap_ci(v, n_boot=n_boot, seed=seed)
            row["both_rate"] = float((g["outcome"] == "both").mean())
            row["neither_rate"] = float((g["outcome"] == "neither").mean())
            row["memorization_ratio"] = memorization_ratio(g["outcome"])
        if "margin" in g:
            row["mean_margin"] = float(g["margin"].mean())
            row["mean_margin_lo"], row["mean_margin_hi"] = bootstrap_ci(g["margin"], n_boot=n_boot, seed=seed)
            row["mean_reliance"] = float(g["reliance"].mean())
            row["context_pref_rate"] = float(g["prefers_context"].astype(float).mean())
        if "knows_parametric" in g:
            known = g["knows_parametric"].astype(bool)
            row["known_rate"] = float(known.mean())
            if "cb_param_correct" in g:
                row["cb_param_acc"] = float(g["cb_param_correct"].astype(float).mean())
            if "cf_correct" in g:
                gk = g[known]
                row["n_known"] = int(known.sum())
                row["cf_acc_known"] = float(gk["cf_correct"].astype(float).mean()) if len(gk) else float("nan")
                row["param_acc_known"] = float(gk["param_correct"].astype(float).mean()) if len(gk) else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


def score_items(model: Any, tokenizer: Any, items: Sequence["ConflictItem"], template: str = "alpaca",
                modes: Sequence[str] = ("generate", "logprob", "closed_book"), batch_size: int = 16,
                max_new_tokens: int = 24, max_length: int | None = None) -> "pd.DataFrame":
    """All requested modes on ``items`` merged into one row per item (the per-item table of :mod:`fullscale.evaluate`).

    Closed-book columns carry a ``cb_`` prefix. ``knows_parametric``: the
    closed-book output contains the parametric answer (if generation ran),
    else the closed-book log-prob prefers it over the context answer.
    """
    import pandas as pd

    modes = tuple(modes)
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise CpiError(f"unknown mode {bad[0] if bad else '(none)'!r} (choose from: {', '.join(MODES)})")
    keys = ["item_id", "dataset", "category"]
    seen_ids: set[tuple[str, str]] = set()
    for it in items:
        if (it.dataset, it.id) in seen_ids:
            raise CpiError(f"dataset {it.dataset}: duplicate item id {it.id!r}")
        seen_ids.add((it.dataset, it.id))
    table = pd.DataFrame({"item_id": [i.id for i in items], "dataset": [i.dataset for i in items],
                          "category": [i.category for i in items],
                          "task": [getattr(i, "task", "qa") for i in items],
                          "context_answer": [i.context_answer for i in items],
                          "parametric_answer": [i.parametric_answer for i in items]})

    def merge(table, part, prefix=""):
        part = part.rename(columns={c: prefix + c for c in part.columns if c not in keys})
        dup = [c for c in part.columns if c in table.columns and c not in keys]
        return table.merge(part.drop(columns=dup), on=keys, how="left", validate="one_to_one")

    if "generate" in modes:
        table = merge(table, score_generation(model, tokenizer, items, template, batch_size, True, max_new_tokens,
                                              max_length))
    if "logprob" in modes:
        table = merge(table, score_logprob(model, tokenizer, items, template, batch_size, True, max_length))
    if "closed_book" in modes:
        if "generate" in modes:
            cb = score_generation(model, tokenizer, items, template, batch_size, False, max_new_tokens, max_length)
            table = merge(table, cb.drop(columns=["truncated", "answer_cut"]), "cb_")
        cbl = score_logprob(model, tokenizer, items, template, batch_size, False, max_length)
        cbl = cbl[keys + ["prompt", "logp_context", "logp_parametric", "margin"]]
        if "generate" in modes:
            cbl = cbl.drop(columns=["prompt"])
        table = merge(table, cbl, "cb_")
        if "cb_param_correct" in table:
            table["knows_parametric"] = table["cb_param_correct"].astype(bool)
        else:
            table["knows_parametric"] = table["cb_margin"] < 0
    return table

