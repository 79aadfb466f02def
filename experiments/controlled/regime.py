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
from typing import TYPE_CHECKING, Any, Mapping, Sequence

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


def replace_subject(text: str, subject: str, nonce: str, keep: Sequence[str] = ()) -> str:
    """``text`` with every whole-word occurrence of ``subject`` (and its possessive) replaced by ``nonce``,
    except inside an occurrence of a phrase of ``keep`` (the answers: "Mexico" in "Mexico City" stays)."""
    kept = [span for phrase in keep for span in find_word_spans(text, phrase)]
    for start, end in reversed(find_word_spans(text, subject)):
        if not any(a <= start and end <= b and (a, b) != (start, end) for a, b in kept):
            text = text[:start] + nonce + text[end:]
    return text


def probe_prompts(probe: Probe, nonce: str) -> dict[str, tuple[str, str]]:
    """The three (instruction, input) pairs of a probe: ``closed``, ``nonce`` and ``full``."""
    return {"closed": (CLOSED_INSTRUCTION, probe.question),
            "nonce": (probe.instruction, replace_subject(probe.input, probe.subject, nonce, probe.candidates)),
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


def regime_prompts(probes: Sequence[Probe], seed: int = 0
                   ) -> "tuple[list[str], list[tuple[str, str]], list[tuple[str, ...]]]":
    """The nonce names (one per probe, drawn from ``seed`` and the probe's own id and text, so the same
    probe gets the same name in every arm and its prompts are computed once; never its subject or a word
    of its text) and the three prompts of every probe with its candidates, in probe order."""
    if not probes:
        raise CpiError("no records or held-out conflicts to measure")
    names = [nonce_names(1, _stable_rng(str(seed), p.source, p.id, p.input), avoid=[p.subject, p.input])[0]
             for p in probes]
    prompts: list[tuple[str, str]] = []
    cands: list[tuple[str, ...]] = []
    for p, name in zip(probes, names):
        for pr in probe_prompts(p, name).values():
            prompts.append(pr)
            cands.append(p.candidates)
    return names, prompts, cands


def regime_rows(probes: Sequence[Probe], names: Sequence[str], lps: Sequence[Sequence[float]]) -> "pd.DataFrame":
    """:func:`measure_regime`'s table from the candidates' log-probs of :func:`regime_prompts`' prompts."""
    import pandas as pd

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


def measure_regime(model: Any, tokenizer: Any, probes: Sequence[Probe], batch_size: int = 16,
                   seed: int = 0) -> "pd.DataFrame":
    """One row per probe: ``id, source, kind, item_id, category, subject, nonce, answer, n_candidates,
    delta_m, delta_c, p_full, m, theory_class`` (nonce names as :func:`regime_prompts` draws them)."""
    names, prompts, cands = regime_prompts(probes, seed)
    return regime_rows(probes, names, candidate_logprobs(model, tokenizer, prompts, cands, batch_size))


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



# ---------------------------------------------------------------------------------------------
# the theory's prediction at the measured parameters


def theory_prediction(table: "pd.DataFrame", by: str = "arm", steps: int = 500, lr: float = 2.0,
                      seed: int = 0) -> "tuple[pd.DataFrame, list[str]]":
    """Per arm (``by``): the records' theory classes and the simulator run at their measured parameters.

    Proposition 1: at the start the shared attention on the context moves with ``sum(m)`` over the
    mixture (``m_sum`` > 0: up); the fall needs C+S records inside the regime (``m < 0``, delta_M >
    2 delta_C) pulling it back once the C records are fitted. The simulator (:func:`theory.simulate`,
    full-batch gradient descent, ``steps`` steps of ``lr``, W_V frozen) runs with ``n_C`` = the arm's C
    records, ``n_CS`` = its C+S records inside the regime, ``delta_C`` / ``delta_M`` = their medians (the
    simulator has one delta_C for every point; the C+S records outside the regime are left out: with
    ``delta_M <= 2 delta_C`` the theory's assumptions do not hold for them), ``K_A`` its smallest
    vocabulary. An arm with no record inside the regime is not simulated: the theory predicts no fall.

    Returns the table (one row per arm: counts, medians, ``m_sum``, the simulated start / peak / final
    M_C, ``t_peak``, ``inversion`` and ``regime``, ``prediction``) and one sentence per arm."""
    import pandas as pd

    from cpi.errors import ConfigError

    rows, lines = [], []
    recs = table[table["source"] == "record"]
    for arm, g in recs.groupby(by, sort=False):
        inside = g[g["theory_class"] == "C+S inside"]
        row: dict[str, Any] = {by: arm, "n_records": len(g), "n_C": int((g["theory_class"] == "C").sum()),
                               "n_CS_inside": len(inside), "n_CS_outside": int((g["theory_class"] == "C+S outside").sum()),
                               "m_sum": float(g["m"].sum()), "delta_c_inside": float("nan"), "delta_m_inside": float("nan")}
        if row["n_C"] == 0:
            row["prediction"] = "no rise (no context-critical record)"
        elif inside.empty:
            row["prediction"] = "rise, no fall (no C+S record inside the regime)"
        else:
            d_c, d_m = float(inside["delta_c"].median()), float(inside["delta_m"].median())
            row.update(delta_c_inside=d_c, delta_m_inside=d_m)
            try:
                sim = _simulate(row["n_C"], len(inside), d_c, d_m, steps, lr, seed)
            except ConfigError as exc:
                row["prediction"] = f"not simulable at these parameters ({exc})"
            else:
                row.update(sim)
                row["prediction"] = sim["regime"]
        rows.append(row)
        lines.append(prediction_line(row, by))
    return pd.DataFrame(rows), lines


def _simulate(n_c: int, n_cs: int, delta_c: float, delta_m: float, steps: int, lr: float, seed: int) -> dict[str, Any]:
    from theory.config import SimConfig
    from theory.simulator import simulate
    from theory.sweep import summarize

    cfg = SimConfig(n_C=n_c, n_CS=n_cs, delta_C=delta_c, delta_M=delta_m, steps=steps, lr=lr)
    s = summarize(simulate(cfg, seeds=(seed,))).iloc[0]
    return {"sim_start": float(s["start"]), "sim_peak": float(s["peak"]), "sim_t_peak": int(s["t_peak"]),
            "sim_final": float(s["final"]), "sim_inversion": float(s["inversion"]), "regime": str(s["regime"]),
            "sim_K_A": int(cfg.k_a), "sim_steps": steps, "sim_lr": lr}


def prediction_line(row: Mapping[str, Any], by: str = "arm") -> str:
    """One printed sentence for a row of :func:`theory_prediction`."""
    head = (f"[{row[by]}] {row['n_records']} records: {row['n_C']} C, {row['n_CS_inside']} C+S inside the regime, "
            f"{row['n_CS_outside']} C+S outside; sum of m {row['m_sum']:+.1f}")
    if "sim_peak" in row and row.get("sim_peak") == row.get("sim_peak"):
        return (f"{head}; simulated at delta_C {row['delta_c_inside']:.2f}, delta_M {row['delta_m_inside']:.2f} "
                f"(n_C {row['n_C']}, n_CS {row['n_CS_inside']}, K_A {row['sim_K_A']}, {row['sim_steps']} GD steps of "
                f"{row['sim_lr']:g}): M_C {row['sim_start']:.2f} -> peak {row['sim_peak']:.2f} (step {row['sim_t_peak']}) "
                f"-> {row['sim_final']:.2f}: the theory predicts {row['prediction']}")
    return f"{head}: the theory predicts {row['prediction']}"


__all__ = ["CLOSED_INSTRUCTION", "Probe", "THEORY_CLASSES", "candidate_logprobs", "heldout_probes", "measure_regime",
           "prediction_line", "probe_prompts", "record_probes", "regime_prompts", "regime_rows", "regime_summary",
           "replace_subject", "softmax_at", "theory_class", "theory_m", "theory_prediction"]
