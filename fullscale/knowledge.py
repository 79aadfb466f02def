"""What a model knows closed-book: the rank of the true answer among candidates of the same relation.

A knowledge-conflict item only tests a *conflict* if the model knows the fact that its context
contradicts. :func:`known_facts` asks the model each item's question **without** its context
(the closed-book prompt of :mod:`fullscale.prompts`) and scores the true (parametric) answer against
``n_candidates - 1`` other answers of the same relation: the parametric answers of other items of
the same dataset and category (other capitals for a capital question, other years for a birth
year...), drawn with a fixed seed, never an accepted form of the true answer. Each candidate's score
is the log-probability of its full token sequence after the prompt, summed over its tokens, in both
surface forms (directly after the prompt and after a space, added as in
:func:`fullscale.scoring.score_logprob`). A fact is **known** when the true answer ranks first.

Why a rank among candidates, not greedy generation: a base model (no instruction tuning) rarely
answers a bare question in the expected words, so containment in its output under-counts what it
knows; a rank against real alternatives of the same type asks only whether the model prefers the
truth, and chance is ``1 / n_candidates`` (reported beside the rates). Summed log-probs favour short
answers; candidates of the same relation have similar lengths, and ``length_normalise=True`` ranks
by mean log-prob per token instead.

Only pandas is imported at module level; torch comes in through the scorer.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any, Sequence

from cpi.errors import CpiError
from fullscale.prompts import format_prompts

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from fullscale.conflicts import ConflictItem

__all__ = ["candidate_answers", "known_facts", "known_rates"]


def candidate_answers(items: Sequence["ConflictItem"], n_candidates: int = 8, seed: int = 0) -> list[list[str]]:
    """For each item: its true answer first, then up to ``n_candidates - 1`` answers of the same relation.

    The distractors are other items' parametric answers from the same dataset and category, deduplicated
    case-insensitively, excluding every accepted form of the item's true answer, drawn with ``seed``.
    """
    if n_candidates < 2:
        raise CpiError(f"n_candidates must be >= 2, got {n_candidates}")
    pools: dict[tuple[str, str], list[str]] = {}
    for it in items:
        pool = pools.setdefault((it.dataset, it.category), [])
        if it.parametric_answer.casefold() not in {a.casefold() for a in pool}:
            pool.append(it.parametric_answer)
    rng = random.Random(seed)
    out = []
    for it in items:
        own = {a.strip().casefold() for a in it.accepted_parametric}
        others = [a for a in pools[(it.dataset, it.category)] if a.strip().casefold() not in own]
        if not others:
            raise CpiError(f"item {it.id!r}: no other answer of relation {it.category!r} in {it.dataset} to rank "
                           "the true answer against (a relation needs at least two distinct answers)")
        out.append([it.parametric_answer, *rng.sample(others, min(n_candidates - 1, len(others)))])
    return out


def known_facts(model: Any, tokenizer: Any, items: Sequence["ConflictItem"], template: str = "plain",
                n_candidates: int = 8, batch_size: int = 16, seed: int = 0,
                length_normalise: bool = False) -> "pd.DataFrame":
    """Closed-book rank of each item's true answer among candidates of its relation: one row per item.

    Columns: ``item_id, dataset, category, parametric_answer, n_candidates, rank`` (1 = the true answer
    scores highest), ``known`` (rank == 1), ``logp_true`` and ``logp_best_other`` (the score used:
    summed or, with ``length_normalise``, mean per-token log-prob over the two surface forms) and
    ``best_other`` (the highest-scoring wrong candidate). Prompts: the closed-book form of ``template``.
    """
    import pandas as pd

    from fullscale.batching import pad_token_id
    from fullscale.scoring import answer_sequence, logsumexp, shared_prefix_logprobs

    if batch_size < 1:
        raise CpiError(f"batch_size must be >= 1, got {batch_size}")
    if not items:
        raise CpiError("no items to score")
    cands = candidate_answers(items, n_candidates, seed)
    prompts = format_prompts(items, tokenizer, template=template, with_context=False)
    add_special = template != "chat"
    seqs, keys = [], []
    for k, (fp, answers) in enumerate(zip(prompts, cands)):
        for c, ans in enumerate(answers):
            for form in (ans.strip(), " " + ans.strip()):
                seqs.append(answer_sequence(tokenizer, fp, form, add_special))
                keys.append((k, c))
    scores = shared_prefix_logprobs(model, seqs, pad_token_id(tokenizer), batch_size, desc="closed-book candidates")
    forms: dict[tuple[int, int], list[float]] = {}
    for key, (lp, n) in zip(keys, scores):
        forms.setdefault(key, []).append(lp / n if length_normalise else lp)
    rows = []
    for k, (it, answers) in enumerate(zip(items, cands)):
        s = [logsumexp(forms[(k, c)]) for c in range(len(answers))]
        best = max(range(1, len(answers)), key=lambda c: s[c])
        rank = 1 + sum(v > s[0] for v in s[1:])
        rows.append({"item_id": it.id, "dataset": it.dataset, "category": it.category,
                     "parametric_answer": it.parametric_answer, "n_candidates": len(answers), "rank": rank,
                     "known": rank == 1, "logp_true": s[0], "logp_best_other": s[best],
                     "best_other": answers[best]})
    return pd.DataFrame(rows)


def known_rates(table: "pd.DataFrame", n_boot: int = 1000, seed: int = 0) -> "pd.DataFrame":
    """Known rate per dataset × relation (and ``ALL`` per dataset) with bootstrap intervals and chance level."""
    import pandas as pd

    from fullscale.scoring import bootstrap_ci

    frames = [table, table.assign(category="ALL")]
    rows = []
    for (ds, cat), g in pd.concat(frames, ignore_index=True).groupby(["dataset", "category"], sort=True):
        v = g["known"].astype(float)
        lo, hi = bootstrap_ci(v, n_boot=n_boot, seed=seed)
        rows.append({"dataset": ds, "category": cat, "n": len(g), "known_rate": float(v.mean()),
                     "known_rate_lo": lo, "known_rate_hi": hi, "chance": float((1.0 / g["n_candidates"]).mean())})
    return pd.DataFrame(rows)
