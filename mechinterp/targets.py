"""Which tokens the probe compares, and the items it reads: answer targets and :class:`ProbeItem`.

The probe reads ``logit(context answer) − logit(parametric answer)`` at the first token where the two
answers differ (:func:`answer_target`; their shared prefix is appended to the prompt), so no item has
a structural zero. :func:`prepare_items` turns conflict items into :class:`ProbeItem` s (prompt tokens,
spans, the two compared tokens); :func:`targets_table` records, per item, what was compared or why the
item was dropped.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from cpi.errors import CpiError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

log = logging.getLogger(__name__)

#: The four disjoint spans, in table order.
SPANS: tuple[str, ...] = ("context", "question", "bos", "other")
#: Columns of :func:`targets_table` (which tokens the logit difference compares, per item).
TARGET_COLUMNS: tuple[str, ...] = (
    "item_id", "dataset", "category", "status", "reason", "shared_prefix_len", "shared_prefix", "context_token",
    "context_piece", "parametric_token", "parametric_piece", "answer_forms",
)


@dataclasses.dataclass(frozen=True)
class ProbeItem:
    """One tokenised prompt with its spans and the two answer tokens the probe compares.

    ``input_ids``: what the model reads — the prompt tokens (incl. BOS if any) followed by the
    ``shared_prefix_len`` tokens that both answers start with (see :func:`answer_target`);
    ``spans``: half-open token ranges for ``"context"`` and ``"question"`` in the prompt (others
    are derived; the shared-prefix tokens are ``other``); ``context_token``/``parametric_token``:
    the first token where the two answers' tokenizations (as continuations of the prompt)
    differ — the logit difference is read at the last position of ``input_ids``.
    """

    item_id: str
    input_ids: tuple[int, ...]
    spans: Mapping[str, tuple[int, int]]
    context_token: int
    parametric_token: int
    has_bos: bool = False
    dataset: str = ""
    category: str = ""
    shared_prefix_len: int = 0
    answer_forms: str = ""  # "joint,joint" etc.: how each answer's tokens were found (answer_continuation)

    def span_mask(self) -> list[str]:
        """Per-token span label (``SPANS`` names) for this prompt."""
        n = len(self.input_ids)
        labels = ["other"] * n
        if self.has_bos and n:
            labels[0] = "bos"
        for name in ("question", "context"):  # context wins on (unexpected) overlap
            lo, hi = self.spans.get(name, (0, 0))
            for j in range(max(lo, 0), min(hi, n)):
                labels[j] = name
        return labels


class UndefinedTargetError(CpiError):
    """The two answers have no token at which they differ (identical tokenizations, or one is a
    prefix of the other): the item has no logit-difference target and is dropped."""


@dataclasses.dataclass(frozen=True)
class AnswerTarget:
    """Where the probe reads an item's logit difference.

    ``shared``: the tokens both answers start with (appended to the prompt), ``context_token`` /
    ``parametric_token``: the first differing tokens, ``context_form`` / ``parametric_form``:
    ``"joint"`` (tokens of prompt + answer past the prompt) or ``"alone"`` (the prompt's tokens
    merge with the answer, so the answer was tokenized on its own).
    """

    shared: tuple[int, ...]
    context_token: int
    parametric_token: int
    context_form: str
    parametric_form: str


# --------------------------------------------------------------------------------------------
# items
# --------------------------------------------------------------------------------------------
def answer_continuation(tokenizer: Any, prompt_text: str, prompt_ids: Sequence[int], answer: str,
                        item_id: str) -> tuple[list[int], str]:
    """The tokens of ``answer`` when generated right after the prompt, and how they were found.

    Tokenises ``prompt + sep + answer`` (``sep`` = one space unless the prompt ends in
    whitespace) and keeps the tokens past the prompt (``"joint"``), so the tokenizer's
    leading-space convention is respected. If the prompt's own tokens merge with the answer,
    the answer is tokenized on its own (``sep + answer``, special and leading whitespace-only
    tokens removed; ``"alone"``). An answer that tokenizes to nothing raises CpiError naming
    the item.
    """
    if not answer or not answer.strip():
        raise CpiError(f"item {item_id!r}: answer {answer!r} tokenizes to nothing")
    sep = "" if (not prompt_text or prompt_text[-1].isspace()) else " "
    n = len(prompt_ids)
    for special in (True, False):
        full = list(tokenizer(prompt_text + sep + answer, add_special_tokens=special)["input_ids"])
        if len(full) > n and full[:n] == list(prompt_ids):
            return [int(t) for t in full[n:]], "joint"
    specials = set(getattr(tokenizer, "all_special_ids", []) or [])
    alone = [int(t) for t in tokenizer(sep + answer, add_special_tokens=False)["input_ids"] if t not in specials]
    while alone and not tokenizer.decode([alone[0]]).strip():
        alone = alone[1:]
    if not alone:
        raise CpiError(f"item {item_id!r}: answer {answer!r} tokenizes to nothing")
    return alone, "alone"


def answer_target(tokenizer: Any, prompt_text: str, prompt_ids: Sequence[int], context_answer: str,
                  parametric_answer: str, item_id: str) -> AnswerTarget:
    """The first token where the two answers' continuations of the prompt differ.

    Both answers are tokenized as continuations of the prompt (:func:`answer_continuation`);
    their longest common prefix (e.g. ``" "``, ``"1"``, ``"8"`` for ``1867`` vs ``1871``, or
    ``"K"`` for ``Kharkiv`` vs ``Kyiv``) is appended to the prompt and the two tokens right
    after it are compared. Why this target: with a shared prefix ``s``,
    ``log P(c | prompt) − log P(p | prompt) = [logit(c_k) − logit(p_k)] at prompt+s + (terms of
    the answers' remaining tokens)`` — the prefix's own terms are identical and cancel, so the
    logit difference at the divergence position is the first non-zero term of the full-answer
    log-prob difference, and it is still one residual stream at one position (the
    decomposition stays exact and linear). Raises :class:`UndefinedTargetError` when the
    answers never differ (identical tokenizations, or one is a prefix of the other).
    """
    c_seq, c_form = answer_continuation(tokenizer, prompt_text, prompt_ids, context_answer, item_id)
    p_seq, p_form = answer_continuation(tokenizer, prompt_text, prompt_ids, parametric_answer, item_id)
    k = 0
    while k < min(len(c_seq), len(p_seq)) and c_seq[k] == p_seq[k]:
        k += 1
    if k == len(c_seq) or k == len(p_seq):
        what = "tokenize identically" if len(c_seq) == len(p_seq) else "are prefixes of one another"
        raise UndefinedTargetError(f"item {item_id!r}: answers {context_answer!r} and {parametric_answer!r} {what} "
                                   f"(tokens {c_seq} / {p_seq}); no token tells them apart")
    return AnswerTarget(tuple(c_seq[:k]), c_seq[k], p_seq[k], c_form, p_form)


def prepare_items(items: Iterable[Any], tokenizer: Any, template: str = "alpaca",
                  max_length: int | None = None) -> list[ProbeItem]:
    """Turn :class:`fullscale.conflicts.ConflictItem`s (or ready ``ProbeItem``s) into ``ProbeItem``s.

    Prompts come from :func:`fullscale.prompts.format_prompt` (same templates as the
    evaluation); the answers' shared prefix is appended (:func:`answer_target`). Items whose
    answers have no differing token are dropped, with a WARNING giving their count (see
    :func:`targets_table` for the per-item record). A prompt whose context span cannot be
    located raises CpiError naming the item.
    """
    out, dropped = _prepare(items, tokenizer, template, max_length)
    if dropped:
        log.warning("probe: dropped %d of %d items whose two answers have no differing token (%s%s)",
                    len(dropped), len(out) + len(dropped), ", ".join(d[0].id for d in dropped[:5]),
                    ", ..." if len(dropped) > 5 else "")
    return out


def _prepare(items: Iterable[Any], tokenizer: Any, template: str, max_length: int | None
             ) -> tuple[list[ProbeItem], list[tuple[Any, str]]]:
    """(probe items, [(dropped ConflictItem, reason)])."""
    out: list[ProbeItem] = []
    dropped: list[tuple[Any, str]] = []
    for item in items:
        if isinstance(item, ProbeItem):
            out.append(item)
            continue
        try:
            out.append(_probe_item(item, tokenizer, template, max_length))
        except UndefinedTargetError as exc:
            dropped.append((item, str(exc)))
    for it in out:
        _check_item(it)
    return out, dropped


def _probe_item(item: Any, tokenizer: Any, template: str, max_length: int | None) -> ProbeItem:
    """Format one ConflictItem, locate its spans, append the answers' shared prefix."""
    from fullscale.prompts import format_prompt

    fp = format_prompt(item, tokenizer, template=template, with_context=True, max_length=max_length)
    ctx = fp.spans.get("context")
    if ctx is None or ctx[1] <= ctx[0]:
        raise CpiError(f"item {item.id!r}: context span could not be located in the prompt's tokens")
    spans = {"context": tuple(ctx)}
    if "question" in fp.spans:
        spans["question"] = tuple(fp.spans["question"])
    tg = answer_target(tokenizer, fp.text, fp.input_ids, item.context_answer, item.parametric_answer, item.id)
    return ProbeItem(item_id=item.id, input_ids=tuple(fp.input_ids) + tg.shared, spans=spans,
                     context_token=tg.context_token, parametric_token=tg.parametric_token, has_bos=bool(fp.has_bos),
                     dataset=item.dataset, category=item.category, shared_prefix_len=len(tg.shared),
                     answer_forms=f"{tg.context_form},{tg.parametric_form}")


def targets_table(items: Iterable[Any], tokenizer: Any, template: str = "alpaca",
                  max_length: int | None = None) -> "pd.DataFrame":
    """Per item, which tokens the probe compares: ``item_id, dataset, category, status`` (``used`` /
    ``dropped``), ``reason``, ``shared_prefix_len``, ``shared_prefix`` (decoded), ``context_token``,
    ``context_piece``, ``parametric_token``, ``parametric_piece`` (ids and decoded strings; -1 / ""
    for dropped items), ``answer_forms`` (``joint`` / ``alone`` per answer, see
    :func:`answer_continuation`)."""
    import pandas as pd

    used, dropped = _prepare(items, tokenizer, template, max_length)
    rows = []
    for it in used:
        shared = it.input_ids[len(it.input_ids) - it.shared_prefix_len:] if it.shared_prefix_len else ()
        rows.append({"item_id": it.item_id, "dataset": it.dataset, "category": it.category, "status": "used",
                     "reason": "", "shared_prefix_len": it.shared_prefix_len,
                     "shared_prefix": tokenizer.decode(list(shared)) if shared else "",
                     "context_token": it.context_token, "context_piece": tokenizer.decode([it.context_token]),
                     "parametric_token": it.parametric_token,
                     "parametric_piece": tokenizer.decode([it.parametric_token]), "answer_forms": it.answer_forms})
    for item, reason in dropped:
        rows.append({"item_id": item.id, "dataset": item.dataset, "category": item.category, "status": "dropped",
                     "reason": reason, "shared_prefix_len": -1, "shared_prefix": "", "context_token": -1,
                     "context_piece": "", "parametric_token": -1, "parametric_piece": "", "answer_forms": ""})
    return pd.DataFrame(rows, columns=TARGET_COLUMNS)


def _check_item(it: ProbeItem) -> None:
    n = len(it.input_ids)
    if n == 0:
        raise CpiError(f"item {it.item_id!r}: empty prompt")
    ctx = it.spans.get("context")
    if ctx is None or not (0 <= ctx[0] < ctx[1] <= n):
        raise CpiError(f"item {it.item_id!r}: context span {ctx} could not be located in the {n} prompt tokens")
    for name, (lo, hi) in it.spans.items():
        if not (0 <= lo <= hi <= n):
            raise CpiError(f"item {it.item_id!r}: {name} span ({lo}, {hi}) outside the {n} prompt tokens")
