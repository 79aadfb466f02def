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

The scorer is split along its concerns: answer matching in :mod:`fullscale.matching`, answer
log-probabilities in :mod:`fullscale.logprobs`, bootstrap intervals and per-group summaries in
:mod:`fullscale.stats`; their public names are re-exported here. Only pandas is imported at module
level; torch is imported in the functions.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any, Sequence

from cpi.errors import CpiError
from cpi.progress import progress
from fullscale.batching import pad_batch, pad_token_id
from fullscale.logprobs import (  # noqa: F401  (re-exported: the scorer's public names stay importable from here)
    AnswerSequence,
    _batches,
    _device_of,
    answer_sequence,
    logsumexp,
    sequence_logprobs,
    shared_prefix_logprobs,
)
from fullscale.matching import (  # noqa: F401
    DEFAULT_STOPS,
    OUTCOMES,
    classify_ending,
    classify_output,
    cut_at_stops,
    find_answer,
    match_answer,
    normalize_text,
)
from fullscale.prompts import MODES, FormattedPrompt, format_prompts, model_max_length
from fullscale.stats import bootstrap_ci, memorization_ratio, summarize_items, summarize_reliance  # noqa: F401

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from fullscale.conflicts import ConflictItem

log = logging.getLogger(__name__)

#: Bumped whenever the scorer gives other rows for the same model and items (2: quote items scored by
#: their ending, alias tables, length-robust margin columns; 3: generation stops once the answer has
#: ended, so the raw ``output`` column ends there -- every scored column is as in 2). Part of
#: :func:`scorer_fingerprint`.
SCORER_VERSION = "3"


def scorer_fingerprint() -> str:
    """``SCORER_VERSION`` plus a hash of the alias tables: what a resume key needs besides the items.

    Results scored by another scorer version, or with other alias tables, are other results.
    """
    import hashlib

    from fullscale.aliases import DATA

    h = hashlib.sha256()
    for name in ("aliases.csv", "titles.csv"):
        h.update((DATA / name).read_bytes())
    return f"{SCORER_VERSION}-{h.hexdigest()[:12]}"


def _prompts_for(items: Sequence[Any], tokenizer: Any, template: str, with_context: bool,
                 max_length: int | None) -> list[FormattedPrompt]:
    return format_prompts(items, tokenizer, template=template, with_context=with_context, max_length=max_length)


# ---------------------------------------------------------------------------
# generation


class _NanGuard:
    """A logits processor that only records whether any next-token score was NaN (greedy picks are unchanged)."""

    def __init__(self) -> None:
        self.nan = False

    def __call__(self, input_ids: "torch.Tensor", scores: "torch.Tensor") -> "torch.Tensor":
        import torch

        if not self.nan and bool(torch.isnan(scores).any()):
            self.nan = True
        return scores

    def as_list(self):
        from transformers import LogitsProcessorList

        return LogitsProcessorList([self])


def answer_ended(text: str, stops: Sequence[str]) -> bool:
    """Whether ``text`` already holds one of ``stops`` after its leading whitespace (past its first
    character), i.e. :func:`fullscale.matching.cut_at_stops` would cut it: more text cannot change the answer."""
    stripped = text.lstrip()
    return any(stripped.find(s, 1) != -1 for s in stops)


class _StopAtAnswerEnd:
    """A stopping criterion: a row is finished once its new text ends the answer (:func:`answer_ended`)
    or holds EOS; ``kept[row]`` is the number of new tokens to keep (up to and including the token that
    completed the stop string, or up to EOS). A batch stops when every row has finished.

    input_ids: [batch pos] (the prompt's ``width`` positions, then the new tokens)."""

    def __init__(self, tokenizer: Any, width: int, stops: Sequence[str], eos: int | None) -> None:
        self.tokenizer, self.width, self.stops, self.eos = tokenizer, width, tuple(stops), eos
        self.kept: dict[int, int] = {}

    def __call__(self, input_ids: "torch.Tensor", scores: Any = None, **kwargs: Any) -> "torch.Tensor":
        import torch

        new = input_ids[:, self.width:].tolist()  # batch new_pos
        rows = [r for r in range(len(new)) if r not in self.kept]
        for r in rows:
            if self.eos is not None and self.eos in new[r]:
                self.kept[r] = new[r].index(self.eos)
        rows = [r for r in rows if r not in self.kept]
        if rows:
            texts = self.tokenizer.batch_decode([new[r] for r in rows], skip_special_tokens=True)
            for r, text in zip(rows, texts):
                if answer_ended(text, self.stops):
                    self.kept[r] = len(new[r])
        done = [r in self.kept for r in range(len(new))]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


def generate_outputs(model: Any, tokenizer: Any, prompts: Sequence[FormattedPrompt], batch_size: int = 16,
                     max_new_tokens: int = 24, desc: str = "generate", stops: Sequence[str] = ()) -> list[str]:
    """Greedy continuations of ``prompts`` (decoded, special tokens dropped), batched with LEFT padding.

    Prompts are grouped by length to limit padding; the returned list is in
    the input order. input_ids: [batch pos] left-padded with the pad token and
    a matching attention mask, so every prompt's last token sits at the same
    position and the new tokens start together. Each row stops at EOS, at ``max_new_tokens``, or (with
    ``stops``) once its text holds a stop string after its leading whitespace: the continuation ends
    with the token that completed it, so :func:`fullscale.matching.cut_at_stops` with the same ``stops``
    gives the same answer as an unstopped continuation would, and a batch stops when all its rows have.
    """
    import torch
    from transformers import StoppingCriteriaList

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
        guard = _NanGuard()
        stop = _StopAtAnswerEnd(tokenizer, width, stops, eos) if stops else None
        with torch.no_grad():
            out = model.generate(
                input_ids=ids.to(dev), attention_mask=mask.to(dev), max_new_tokens=max_new_tokens,
                do_sample=False, num_beams=1, pad_token_id=pad, eos_token_id=eos,
                logits_processor=guard.as_list(),
                **({"stopping_criteria": StoppingCriteriaList([stop])} if stop is not None else {}),
            )
        if guard.nan:
            raise CpiError(f"item {prompts[batch[0]].item_id}: the model's next-token scores are NaN (non-finite "
                           "weights?); refusing to score its text")
        new = out[:, width:].tolist()
        for r, i in enumerate(batch):
            toks = new[r][: stop.kept[r]] if stop is not None and r in stop.kept else new[r]
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
    decoded continuation; generation stops once the answer has ended, so it ends with the first stop
    string after the answer, or at EOS / ``max_new_tokens``), ``answer_text`` (output cut at the first stop
    string; this is what is matched), ``cf_correct, param_correct, outcome,
    matched_context, matched_parametric``, ``scored_by`` (``containment`` for QA
    items, ``ending`` for quote items: how the text ends the quote, see
    :func:`score_output`), ``ending`` (quote items: the words read as the ending),
    ``matched_alias`` (each matched form that is not the main answer, as
    ``side:form (item|table)``), and the containment outcome for every item in
    ``cf_contains, param_contains, outcome_contains``. ``max_length`` (default: the
    model's context length) bounds prompt + new tokens; longer prompts have
    their context truncated from the left (``truncated``; ``answer_cut`` when
    that removed the context answer, see :class:`FormattedPrompt`).
    """
    import pandas as pd

    limit = _gen_limit(model, tokenizer, max_new_tokens, max_length)
    prompts = _prompts_for(items, tokenizer, template, with_context, limit)
    outs = generate_outputs(model, tokenizer, prompts, batch_size, max_new_tokens,
                            desc="generate" if with_context else "generate (closed book)", stops=stops)
    rows = []
    for it, fp, out in zip(items, prompts, outs):
        answer_text = cut_at_stops(out, stops)
        rows.append({
            "item_id": it.id, "dataset": it.dataset, "category": it.category,
            "prompt": fp.text, "truncated": fp.truncated, "answer_cut": fp.answer_cut, "output": out,
            "answer_text": answer_text, **score_output(it, answer_text),
        })
    return pd.DataFrame(rows)


def score_output(item: Any, answer_text: str) -> dict[str, Any]:
    """The outcome columns of one generated answer (see :func:`score_generation`).

    Accepted forms are the item's answers and aliases plus the alias tables' forms
    (:func:`fullscale.aliases.accepted_forms`). QA items are scored by containment; quote items
    by how the text ends the quote (:func:`fullscale.matching.classify_ending`), with containment
    kept in ``cf_contains``, ``param_contains``, ``outcome_contains`` for every item.
    """
    from fullscale.aliases import accepted_forms

    forms = accepted_forms(item)
    ctx, par = tuple(forms["context"]), tuple(forms["parametric"])
    contained = classify_output(answer_text, ctx, par)
    if getattr(item, "task", "qa") == "quote":
        res, scored_by = classify_ending(answer_text, item.question, ctx, par), "ending"
    else:
        res, scored_by = {**contained, "ending": ""}, "containment"
    aliases = [f"{side}:{f} ({forms[side][f]})" for side in ("context", "parametric")
               for f in res[f"matched_{side}"].split("|") if f and forms[side].get(f) != "answer"]
    return {**res, "scored_by": scored_by, "matched_alias": "|".join(aliases), "cf_contains": contained["cf_correct"],
            "param_contains": contained["param_correct"], "outcome_contains": contained["outcome"]}



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
    (any form did). Every form is conditioned on the prompt's own tokens. Length-robust columns beside
    the summed ``margin`` (:func:`length_robust_margins`): ``margin_first_token``, ``margin_per_token``,
    ``ntok_diff``, ``answer_is_prefix``, ``decided_by_length``.

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
                    desc="log-prob" if with_context else "log-prob (closed book)", per_token=True)
    per: dict[int, dict[str, Any]] = {}
    seen: dict[tuple[int, str], set] = {}
    best: dict[tuple[int, str], tuple[float, tuple[int, ...], tuple[float, ...]]] = {}
    for (k, side, form), seq, (lp, n, toks) in zip(keys, seqs, scores):
        if math.isnan(lp):
            raise CpiError(f"item {items[k].id}: the log-probability of the {side} answer is NaN (non-finite model "
                           "weights?); refusing to average it")
        if (k, side) not in best or lp > best[(k, side)][0]:  # the side's dominant surface form
            best[(k, side)] = (lp, seq.ids[seq.start:], toks)
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
            **length_robust_margins(best[(k, "context")], best[(k, "parametric")], margin),
        })
    return pd.DataFrame(rows)


def length_robust_margins(ctx: tuple[float, Sequence[int], Sequence[float]],
                          par: tuple[float, Sequence[int], Sequence[float]], margin: float) -> dict[str, Any]:
    """Margins that do not grow with the answers' token counts, from each side's dominant surface form.

    ``ctx`` / ``par``: ``(summed log-prob, token ids, per-token log-probs)`` of the form (no space /
    space) with the larger log-prob. Returns ``margin_first_token``: the log-prob difference at the
    first token where the two answers' tokens differ (the tokens before it are shared, so their
    log-probs are equal and cancel; if one answer's tokens are a prefix of the other's, the summed
    ``margin`` is used and ``answer_is_prefix`` is set); ``margin_per_token``: the difference of
    the two mean per-token log-probs; ``ntok_diff``: context minus parametric token count;
    ``decided_by_length``: the summed margin and the first-token margin disagree in sign.
    """
    (_, ids_c, lp_c), (_, ids_p, lp_p) = ctx, par
    j = next((i for i, (a, b) in enumerate(zip(ids_c, ids_p)) if a != b), None)
    prefix = j is None
    first = margin if prefix else float(lp_c[j] - lp_p[j])
    per_token = float(sum(lp_c) / len(lp_c) - sum(lp_p) / len(lp_p))
    return {"margin_first_token": first, "margin_per_token": per_token, "ntok_diff": len(ids_c) - len(ids_p),
            "answer_is_prefix": prefix, "decided_by_length": bool((margin > 0) != (first > 0))}


def score_items(model: Any, tokenizer: Any, items: Sequence["ConflictItem"], template: str = "alpaca",
                modes: Sequence[str] = ("generate", "logprob", "closed_book"), batch_size: int = 16,
                max_new_tokens: int = 24, max_length: int | None = None,
                stops: Sequence[str] = DEFAULT_STOPS) -> "pd.DataFrame":
    """All requested modes on ``items`` merged into one row per item (the per-item table of :mod:`fullscale.evaluate`).

    ``stops``: where a generated answer ends (:func:`score_generation`; generation stops there too).

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
                                              max_length, stops))
    if "logprob" in modes:
        table = merge(table, score_logprob(model, tokenizer, items, template, batch_size, True, max_length))
    if "closed_book" in modes:
        if "generate" in modes:
            cb = score_generation(model, tokenizer, items, template, batch_size, False, max_new_tokens, max_length,
                                  stops)
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

