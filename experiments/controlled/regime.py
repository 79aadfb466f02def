"""The theory's parameters measured on a real base: delta_M, delta_C, m and the theory's class per record.

The theory (``docs/theory.md``) describes each finetuning point by two probabilities at the pretrained
start: ``delta_M``, how well the subject alone predicts the answer, and ``delta_C``, how well the
context alone does. Its fall needs non-context-critical (C+S) points with ``delta_M > 2 delta_C``.
On a real base both are measured as the theory defines them, over an answer set of ``K`` candidates
of the answer's relation (the theory's ``K_A``), in the **training template** (the Alpaca prompt the
finetuning driver renders, :func:`fullscale.ift_data.render_segments`):

* ``delta_m``: closed book. The softmax over the candidates' summed log-probs, in the answer's own
  surface form as the training target writes it, with instruction ``"Answer the question."`` and the
  record's question (subject included) as the input, no passage;
* ``delta_c``: the record's own instruction and input (passage + question) with every whole-word
  occurrence of the subject replaced by a nonce name, so that only the passage can point to the answer;
* ``p_full``: the record as trained (passage and real subject);
* ``m``: the theory's per-point gradient factor, ``m = <v0(c) - v0(s), e_c - softmax(z)>``. With the
  theory's value table (``v0(c,c) = logit(delta_C) + log Z``, ``v0(c,s) = logit(delta_M) + log Z``)
  it is ``(1 - softmax(z)_c) * (logit(delta_C) - logit(delta_M))``: ``m_{C+S}`` exactly, and ``m_C``
  when the subject's distribution is uniform (``logit(1/K) + log Z = o_c`` for ``Z = (K-1) e^{o_c}``).
  Operationally ``m = (1 - p_full) * (logit(delta_c) - logit(delta_m))`` with each delta clipped to
  ``[1e-6, 1 - 1e-6]``: positive pushes attention toward the context, negative toward the subject;
* ``theory_class``: ``C`` when the subject predicts no better than twice chance (``delta_m < 2/K``),
  else ``C+S inside`` when ``delta_m > 2 delta_c`` (the theory's regime), else ``C+S outside``.

Held-out conflicts get the same columns, read in the evaluation's own prompt shape (instruction
"Answer the question based on the background.", input "Background: <passage>\\nQuestion: <question>"):
``delta_m`` of the **parametric** answer closed book, ``delta_c`` of the **context** answer with the
nonce subject, ``p_full`` of the context answer (the base's M_C-like preference), candidates
``[context answer, parametric answer, K-2 others]``.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

from cpi.errors import CpiError
from experiments.controlled.designs import answer_pools, nonce_names, subject_of
from fullscale.conflicts import ConflictItem, find_word_spans

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

#: Instruction of the closed-book form (the evaluation's closed-book instruction).
CLOSED_INSTRUCTION = "Answer the question."
#: Clip of the deltas before their logit (the theory's deltas are strictly inside (0, 1)).
CLIP = 1e-6
THEORY_CLASSES = ("C", "C+S inside", "C+S outside")


@dataclass(frozen=True)
class Probe:
    """One record or held-out conflict to measure: its prompt parts, the target and the candidates.

    ``answer_m`` is the answer whose closed-book probability is ``delta_m`` (the target for a record,
    the parametric answer for a held-out conflict); ``answer_c`` the one whose probability with the
    passage is ``delta_c`` and ``p_full`` (the target; the context answer for a held-out conflict).
    ``candidates`` holds both."""

    id: str
    source: str
    kind: str
    item_id: str
    category: str
    instruction: str
    context: str
    question: str
    input: str
    subject: str
    answer_m: str
    answer_c: str
    candidates: tuple[str, ...]


def _stable_rng(*parts: str) -> random.Random:
    return random.Random(int(hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:12], 16))


def _candidates(first: Sequence[str], pool: Sequence[str], exclude: Sequence[str], k: int,
                rng: random.Random) -> tuple[str, ...]:
    """``first`` (deduplicated), then answers of ``pool`` not among ``exclude`` or ``first``, up to ``k``."""
    out: list[str] = []
    for a in first:
        if a.casefold() not in {o.casefold() for o in out}:
            out.append(a)
    taken = {a.strip().casefold() for a in (*exclude, *out)}
    rest = [a for a in pool if a.strip().casefold() not in taken]
    return tuple(out + rng.sample(rest, max(0, min(k - len(out), len(rest)))))


def record_probes(records: Sequence[dict[str, Any]], items: Sequence[ConflictItem],
                  n_candidates: int = 8) -> list[Probe]:
    """Probes of mixture records (:func:`~experiments.controlled.mixture.build_mixture`'s dicts).

    Candidates: the target, the distractors its passage names, then other answers of its relation
    (from ``items``), ``n_candidates`` in all. Raises :class:`CpiError` naming the record and the field
    when the record has no subject, its question does not contain it, or its relation has fewer than
    two answers."""
    pools = answer_pools([it for it in items if it.task == "qa"])
    by_id = {it.id: it for it in items}
    probes = []
    for r in records:
        rid = r.get("id", r.get("item_id", "?"))
        for name in ("context", "question", "output", "instruction", "input"):
            if name not in r:
                raise CpiError(f"record {rid!r}: field {name!r} is missing (records need their context/question split)")
        subject = r.get("subject")
        if not subject or not find_word_spans(r["question"], subject):
            raise CpiError(f"record {rid!r}: field 'subject': cannot locate the subject "
                           f"{subject!r} in its question {r['question']!r}")
        it = by_id.get(r.get("item_id", ""))
        exclude = (*it.accepted_parametric, *it.accepted_context) if it else (r["output"],)
        cands = _candidates([r["output"], *r.get("distractors", [])], pools.get(r.get("category", ""), []), exclude,
                            n_candidates, _stable_rng(str(rid), r["output"]))
        if len(cands) < 2:
            raise CpiError(f"record {rid!r}: field 'category': no other answer of {r.get('category')!r} to rank against")
        probes.append(Probe(id=str(rid), source="record", kind=str(r.get("kind", "")), item_id=str(r.get("item_id", "")),
                            category=str(r.get("category", "")), instruction=r["instruction"], context=r["context"],
                            question=r["question"], input=r["input"], subject=subject, answer_m=r["output"],
                            answer_c=r["output"], candidates=cands))
    return probes


def heldout_probes(heldout: Sequence[ConflictItem], items: Sequence[ConflictItem], n_candidates: int = 8) -> list[Probe]:
    """Probes of held-out conflicts, in the evaluation's prompt shape (see the module docstring)."""
    from fullscale.prompts import QA_INSTRUCTION

    pools = answer_pools([it for it in items if it.task == "qa"])
    probes = []
    for it in heldout:
        subject = subject_of(it)
        cands = _candidates([it.context_answer, it.parametric_answer], pools.get(it.category, []),
                            (*it.accepted_parametric, *it.accepted_context), n_candidates, _stable_rng(it.id))
        probes.append(Probe(id=it.id, source="heldout", kind="heldout", item_id=it.id, category=it.category,
                            instruction=QA_INSTRUCTION, context=it.context, question=it.question,
                            input=f"Background: {it.context}\nQuestion: {it.question}", subject=subject,
                            answer_m=it.parametric_answer, answer_c=it.context_answer, candidates=cands))
    return probes


def replace_subject(text: str, subject: str, nonce: str) -> str:
    """``text`` with every whole-word occurrence of ``subject`` (and its possessive) replaced by ``nonce``."""
    for start, end in reversed(find_word_spans(text, subject)):
        text = text[:start] + nonce + text[end:]
    return text


def probe_prompts(probe: Probe, nonce: str) -> dict[str, tuple[str, str]]:
    """The three (instruction, input) pairs of a probe: ``closed``, ``nonce`` and ``full``."""
    return {"closed": (CLOSED_INSTRUCTION, probe.question),
            "nonce": (probe.instruction, replace_subject(probe.input, probe.subject, nonce)),
            "full": (probe.instruction, probe.input)}


def candidate_logprobs(model: Any, tokenizer: Any, prompts: Sequence[tuple[str, str]],
                       candidates: Sequence[Sequence[str]], batch_size: int = 16,
                       desc: str = "regime candidates") -> list[list[float]]:
    """Summed log-prob of every candidate after each (instruction, input) prompt in the Alpaca training
    template (the response starts right after ``### Response:\\n``, as the target does in training)."""
    from fullscale.batching import pad_token_id
    from fullscale.ift_data import IFTExample, render_segments
    from fullscale.prompts import FormattedPrompt
    from fullscale.scoring import answer_sequence, shared_prefix_logprobs

    seqs, keys = [], []
    for k, ((instruction, inp), cands) in enumerate(zip(prompts, candidates)):
        text = render_segments(IFTExample(str(k), instruction, inp, "x"), tokenizer, "alpaca")[0][0]
        ids = tokenizer(text, add_special_tokens=True)["input_ids"]
        fp = FormattedPrompt(item_id=str(k), text=text, input_ids=tuple(int(i) for i in ids), spans={}, char_spans={},
                             has_bos=False, template="alpaca")
        for c, ans in enumerate(cands):
            seqs.append(answer_sequence(tokenizer, fp, ans, True))
            keys.append((k, c))
    scores = shared_prefix_logprobs(model, seqs, pad_token_id(tokenizer), batch_size, desc=desc)
    out: list[list[float]] = [[0.0] * len(c) for c in candidates]
    for (k, c), (lp, _) in zip(keys, scores):
        out[k][c] = lp
    return out


def softmax_at(logps: Sequence[float], index: int) -> float:
    """``softmax(logps)[index]``, computed stably."""
    top = max(logps)
    z = sum(math.exp(v - top) for v in logps)
    return math.exp(logps[index] - top) / z


def _logit(p: float) -> float:
    p = min(max(p, CLIP), 1 - CLIP)
    return math.log(p / (1 - p))


def theory_m(delta_c: float, delta_m: float, p_full: float) -> float:
    """The theory's ``m`` at the measured parameters: ``(1 - p_full) (logit delta_c - logit delta_m)``."""
    return (1.0 - p_full) * (_logit(delta_c) - _logit(delta_m))


def theory_class(delta_c: float, delta_m: float, n_candidates: int) -> str:
    """``C`` (``delta_m < 2 / K``), ``C+S inside`` (``delta_m > 2 delta_c``) or ``C+S outside``."""
    if delta_m < 2.0 / n_candidates:
        return "C"
    return "C+S inside" if delta_m > 2 * delta_c else "C+S outside"


def measure_regime(model: Any, tokenizer: Any, probes: Sequence[Probe], batch_size: int = 16,
                   seed: int = 0) -> "pd.DataFrame":
    """One row per probe: ``id, source, kind, item_id, category, subject, nonce, answer, n_candidates,
    delta_m, delta_c, p_full, m, theory_class``. The nonce names are drawn with ``seed``, one per probe,
    none equal to a subject or contained in a probe's text."""
    import pandas as pd

    if not probes:
        raise CpiError("no records or held-out conflicts to measure")
    names = nonce_names(len(probes), random.Random(seed),
                        avoid=[p.subject for p in probes] + [p.input for p in probes])
    prompts: list[tuple[str, str]] = []
    cands: list[tuple[str, ...]] = []
    for p, name in zip(probes, names):
        for pr in probe_prompts(p, name).values():
            prompts.append(pr)
            cands.append(p.candidates)
    lps = candidate_logprobs(model, tokenizer, prompts, cands, batch_size)
    rows = []
    for i, (p, name) in enumerate(zip(probes, names)):
        closed, nonce, full = lps[3 * i: 3 * i + 3]
        im, ic = p.candidates.index(p.answer_m), p.candidates.index(p.answer_c)
        d_m, d_c, p_f = softmax_at(closed, im), softmax_at(nonce, ic), softmax_at(full, ic)
        k = len(p.candidates)
        rows.append({"id": p.id, "source": p.source, "kind": p.kind, "item_id": p.item_id, "category": p.category,
                     "subject": p.subject, "nonce": name, "answer": p.answer_c, "n_candidates": k,
                     "delta_m": d_m, "delta_c": d_c, "p_full": p_f, "m": theory_m(d_c, d_m, p_f),
                     "theory_class": theory_class(d_c, d_m, k)})
    return pd.DataFrame(rows)


def regime_summary(table: "pd.DataFrame", by: Sequence[str] = ("source", "kind")) -> "pd.DataFrame":
    """Per group: ``n``, median and quartiles of ``delta_m`` / ``delta_c``, the mean ``m``, and the count of
    each theory class (``n_C``, ``n_CS_inside``, ``n_CS_outside``)."""
    import pandas as pd

    rows = []
    for key, g in table.groupby(list(by), sort=True):
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(by, key), n=len(g))
        for col in ("delta_m", "delta_c", "p_full"):
            q = g[col].quantile([0.25, 0.5, 0.75])
            row.update({f"{col}_q1": float(q.iloc[0]), f"{col}_median": float(q.iloc[1]), f"{col}_q3": float(q.iloc[2])})
        row["m_mean"] = float(g["m"].mean())
        for cls, name in zip(THEORY_CLASSES, ("n_C", "n_CS_inside", "n_CS_outside")):
            row[name] = int((g["theory_class"] == cls).sum())
        rows.append(row)
    return pd.DataFrame(rows)


__all__ = ["CLOSED_INSTRUCTION", "Probe", "THEORY_CLASSES", "candidate_logprobs", "heldout_probes", "measure_regime",
           "probe_prompts", "record_probes", "regime_summary", "replace_subject", "softmax_at", "theory_class",
           "theory_m"]
