"""Prompt templates for knowledge-conflict items, with token spans.

:func:`format_prompt` turns a :class:`~fullscale.conflicts.ConflictItem` into
the prompt text *and* the half-open token index ranges of the context, the
question and the final position. The spans are computed from the tokenizer's
offset mapping on the finished prompt (never by tokenizing the pieces apart),
so they are right for any Hugging Face *fast* tokenizer, with or without a
BOS token, byte-level BPE or sentencepiece-style. ``mechinterp`` reuses exactly
these spans.

Templates (``TEMPLATES``):

``plain``
    QA: ``Background: {context}\\nQuestion: {question}\\nAnswer:`` (closed
    book: ``Question: {question}\\nAnswer:``). Quotes: ``{context}\\n{question}``
    (closed book: ``{question}``).
``alpaca``
    The Alpaca format ("Below is an instruction ... ### Response:\\n") with the
    background and the question in ``### Input:`` (the paper's prompt shape).
    Closed book uses Alpaca's no-input form with the question in the
    instruction.
``chat``
    The tokenizer's own chat template: one user turn holding the same text as
    ``alpaca``'s instruction + input, then the start of an assistant turn
    exactly as the template renders it before a reply (see
    :func:`assistant_turn_start`; ``"<|im_start|>assistant\n"``,
    ``"<start_of_turn>model\n"``, ``" [/INST]"`` + the reply's leading space).

For quote items (``task == "quote"``) the quote prefix (``item.question``) is
always the *last* text of the prompt (after ``### Response:\\n`` or after the
chat generation prompt), so the next token the model writes is the quote's
ending; ``item.context`` is the instruction that forces the unusual ending.

Over-long prompts: with ``max_length`` set, a prompt longer than
``max_length`` tokens has its **context cut from the left** (whole tokens, at
the start of the passage) until it fits, and ``FormattedPrompt.truncated`` is
set. If the prompt does not fit even with an empty context (or has no context),
a :class:`~cpi.errors.CpiError` naming the item is raised.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from cpi.errors import CpiError
from fullscale.conflicts import contains_word

if TYPE_CHECKING:  # pragma: no cover
    from fullscale.conflicts import ConflictItem

log = logging.getLogger(__name__)

#: the prompt templates, one set for conflict items (:func:`format_prompt`) and finetuning examples
#: (:func:`fullscale.ift_data.render_segments`)
TEMPLATES = ("plain", "alpaca", "chat")
#: How :func:`fullscale.scoring.score_items` asks: the open-book prompt answered by generation or
#: scored by log-probability, and the closed-book form of the same question. Defined here, beside the
#: templates, so that configs validate against it without importing torch.
MODES = ("generate", "logprob", "closed_book")

ALPACA_HEADER_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
)
ALPACA_HEADER_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
)
QA_INSTRUCTION = "Answer the question based on the background."
QA_INSTRUCTION_CLOSED = "Answer the question."
QUOTE_INSTRUCTION_CLOSED = "Complete the quote."


def check_template(template: str) -> str:
    """``template`` if it is one of :data:`TEMPLATES`, else a one-line :class:`CpiError` listing them."""
    if template not in TEMPLATES:
        raise CpiError(f"unknown template {template!r} (known templates: {', '.join(TEMPLATES)})")
    return template


@dataclass(frozen=True)
class FormattedPrompt:
    """A prompt ready for a model, with the positions of its parts.

    ``spans`` are half-open *token* index ranges into ``input_ids``:
    ``"context"`` (absent when formatted without context), ``"question"`` and
    ``"final"`` (= ``(len - 1, len)``, the position whose logits predict the
    answer). ``truncated``: the context was cut to fit ``max_length``;
    ``answer_cut``: the cut removed every accepted form of the context answer
    from the context (the item no longer tests a conflict). ``char_spans``
    are the same parts as character ranges of ``text``.
    A token belongs to a part if its character offsets overlap the part's
    characters (so a byte-level BPE token ``" Paris"`` that carries the space
    before the context still counts as context).
    """

    item_id: str
    text: str
    input_ids: tuple[int, ...]
    spans: Mapping[str, tuple[int, int]]
    char_spans: Mapping[str, tuple[int, int]]
    has_bos: bool
    truncated: bool = False
    answer_cut: bool = False
    template: str = "alpaca"
    with_context: bool = True
    offsets: tuple[tuple[int, int], ...] = field(default=(), repr=False)

    @property
    def n_tokens(self) -> int:
        return len(self.input_ids)


# ---------------------------------------------------------------------------
# text assembly: a list of (piece, role) segments; role in {None, "context", "question"}


def _segments(item: Any, template: str, with_context: bool, context: str, tokenizer: Any) -> list[tuple[str, str | None]]:
    task = getattr(item, "task", "qa") or "qa"
    question = item.question
    if task == "quote":
        if template == "plain":
            if with_context:
                return [(context, "context"), ("\n", None), (question, "question")]
            return [(question, "question")]
        if template == "alpaca":
            if with_context:
                return [
                    (ALPACA_HEADER_NO_INPUT + "### Instruction:\n", None),
                    (context, "context"),
                    ("\n\n### Response:\n", None),
                    (question, "question"),
                ]
            return [
                (ALPACA_HEADER_NO_INPUT + "### Instruction:\n" + QUOTE_INSTRUCTION_CLOSED + "\n\n### Response:\n", None),
                (question, "question"),
            ]
        # chat
        user = [(context, "context")] if with_context else [(QUOTE_INSTRUCTION_CLOSED, None)]
        return _chat_segments(tokenizer, user, assistant_prefix=[(question, "question")], item_id=item.id)
    # QA
    if template == "plain":
        if with_context:
            return [("Background: ", None), (context, "context"), ("\nQuestion: ", None), (question, "question"),
                    ("\nAnswer:", None)]
        return [("Question: ", None), (question, "question"), ("\nAnswer:", None)]
    if template == "alpaca":
        if with_context:
            return [
                (ALPACA_HEADER_INPUT + "### Instruction:\n" + QA_INSTRUCTION + "\n\n### Input:\nBackground: ", None),
                (context, "context"),
                ("\nQuestion: ", None),
                (question, "question"),
                ("\n\n### Response:\n", None),
            ]
        return [
            (ALPACA_HEADER_NO_INPUT + "### Instruction:\n" + QA_INSTRUCTION_CLOSED + "\nQuestion: ", None),
            (question, "question"),
            ("\n\n### Response:\n", None),
        ]
    if with_context:
        user = [(QA_INSTRUCTION + "\nBackground: ", None), (context, "context"), ("\nQuestion: ", None),
                (question, "question")]
    else:
        user = [(QA_INSTRUCTION_CLOSED + "\nQuestion: ", None), (question, "question")]
    return _chat_segments(tokenizer, user, assistant_prefix=[], item_id=item.id)


_SENTINEL = "\x00CPI-USER-CONTENT\x00"
_SENTINEL_REPLY = "\x00CPI-ASSISTANT-CONTENT\x00"


def _render_chat(tokenizer: Any, messages: list[dict[str, str]], item_id: str, **kwargs: Any) -> str:
    try:
        rendered = tokenizer.apply_chat_template(messages, tokenize=False, **kwargs)
    except Exception as exc:  # jinja errors are of many kinds; re-raise as a user-facing error
        raise CpiError(f"item {item_id}: the tokenizer's chat template failed to render: {exc}") from exc
    if not isinstance(rendered, str):
        raise CpiError(f"item {item_id}: the tokenizer's chat template did not render to text")
    return rendered


def assistant_turn_start(tokenizer: Any, item_id: str = "?") -> tuple[str, str]:
    """``(before, start)``: the chat template's text before the user message, and between it and the reply.

    ``start`` is taken from the template's rendering of a *complete* exchange (a user message and an
    assistant reply, both sentinels), cut where the reply's content begins, so a prompt that ends with
    ``start`` ends exactly as the template renders the start of an assistant turn. Templates that refuse
    an assistant message fall back to ``add_generation_prompt=True``.
    """
    if not getattr(tokenizer, "chat_template", None):
        raise CpiError(
            f"item {item_id}: template 'chat' needs a tokenizer with a chat template, and this tokenizer "
            f"({type(tokenizer).__name__}) has none; use --template alpaca or plain"
        )
    generation = _render_chat(tokenizer, [{"role": "user", "content": _SENTINEL}], item_id, add_generation_prompt=True)
    if generation.count(_SENTINEL) != 1:
        raise CpiError(f"item {item_id}: cannot locate the user message in the rendered chat template")
    before, gen_start = generation.split(_SENTINEL)
    try:
        full = tokenizer.apply_chat_template(
            [{"role": "user", "content": _SENTINEL}, {"role": "assistant", "content": _SENTINEL_REPLY}],
            tokenize=False, add_generation_prompt=False,
        )
    except Exception:  # a template that only renders user turns: the generation prompt is all we have
        full = None
    start = gen_start
    if isinstance(full, str) and full.count(_SENTINEL) == 1 and full.count(_SENTINEL_REPLY) == 1:
        head, rest = full.split(_SENTINEL)
        if head == before:
            start = rest.split(_SENTINEL_REPLY)[0]
    return before, start


def _chat_segments(tokenizer: Any, user: list[tuple[str, str | None]], assistant_prefix: list[tuple[str, str | None]],
                   item_id: str) -> list[tuple[str, str | None]]:
    """Render the chat template around the user turn and split it back into segments.

    The template is rendered with sentinels as the user's message (and the assistant's reply, see
    :func:`assistant_turn_start`), and the real user text is put where the sentinel landed, so the
    positions of context and question in the final text are known exactly even when the template adds
    text before and after the message. ``assistant_prefix`` (a quote's opening words) follows the start
    of the assistant turn exactly as the template renders the start of a reply. Without one, a single
    trailing space of the turn's start (``"[/INST] "`` in Llama-2/Mistral templates) is left out of the
    prompt: the template puts it before the reply's first word, so it belongs to the answer (its
    ``space`` form, the tokenizer's ``"▁word"`` token), not to a prompt that would end in a lone space
    token that the model never sees there.
    """
    before, start = assistant_turn_start(tokenizer, item_id)
    if not assistant_prefix and start.endswith(" ") and not start.endswith("  "):
        start = start[:-1]
    return [(before, None), *user, (start, None), *assistant_prefix]


def _tokenize(tokenizer: Any, text: str, template: str) -> tuple[list[int], list[tuple[int, int]]]:
    if not getattr(tokenizer, "is_fast", False):
        raise CpiError(f"tokenizer {type(tokenizer).__name__} is not a fast tokenizer; token spans need offset mappings")
    # The chat template already renders BOS (as text) when the model wants one.
    enc = tokenizer(text, add_special_tokens=(template != "chat"), return_offsets_mapping=True)
    return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]


def _token_span(offsets: Sequence[tuple[int, int]], start: int, end: int) -> tuple[int, int] | None:
    """Half-open range of tokens whose (non-empty) character offsets overlap ``[start, end)``."""
    idx = [i for i, (a, b) in enumerate(offsets) if b > a and a < end and b > start]
    if not idx:
        return None
    return idx[0], idx[-1] + 1


def _build(item: Any, tokenizer: Any, template: str, with_context: bool, context: str):
    segs = _segments(item, template, with_context, context, tokenizer)
    text = ""
    char_spans: dict[str, tuple[int, int]] = {}
    for piece, role in segs:
        if role is not None:
            char_spans[role] = (len(text), len(text) + len(piece))
        text += piece
    ids, offsets = _tokenize(tokenizer, text, template)
    return text, ids, offsets, char_spans


def format_prompt(item: "ConflictItem", tokenizer: Any, template: str = "alpaca", with_context: bool = True,
                  max_length: int | None = None) -> FormattedPrompt:
    """Format one item with ``template`` and locate its parts in tokens.

    ``tokenizer`` is any Hugging Face fast tokenizer. ``with_context=False``
    gives the closed-book prompt (the same question, no background). With
    ``max_length``, the context is cut from the left until the prompt fits
    (``truncated=True``); a prompt that cannot fit raises :class:`CpiError`.
    """
    check_template(template)
    if max_length is not None and max_length < 1:
        raise CpiError(f"max_length must be positive, got {max_length}")
    context = item.context if with_context else ""
    text, ids, offsets, char_spans = _build(item, tokenizer, template, with_context, context)
    truncated = False
    while max_length is not None and len(ids) > max_length:
        if not with_context or not context:
            raise CpiError(
                f"item {item.id}: prompt is {len(ids)} tokens, longer than max_length={max_length} "
                f"even {'without context' if with_context else 'in closed-book form'}"
            )
        excess = len(ids) - max_length
        cs, ce = char_spans["context"]
        span = _token_span(offsets, cs, ce)
        if span is None:
            break  # cannot locate; the error below reports it
        n_ctx = span[1] - span[0]
        if excess >= n_ctx:
            context = ""
        else:
            # drop `excess` whole tokens from the start of the context
            cut_char = offsets[span[0] + excess][0] - cs
            context = context[max(cut_char, 1):].lstrip()
        truncated = True
        text, ids, offsets, char_spans = _build(item, tokenizer, template, with_context, context)
        if not context:
            char_spans.pop("context", None)
    answer_cut = False
    if truncated:
        accepted = getattr(item, "accepted_context", None) or (item.context_answer,)
        answer_cut = not any(contains_word(context, a) for a in accepted if a)
        log.info("item %s: context truncated from the left to fit %s tokens%s", item.id, max_length,
                 " (the context answer was cut)" if answer_cut else "")
    spans: dict[str, tuple[int, int]] = {}
    for role, (a, b) in char_spans.items():
        if a == b and role == "context":
            continue
        span = _token_span(offsets, a, b)
        if span is None:
            raise CpiError(f"item {item.id}: cannot locate the {role} in the tokenized prompt (template {template!r})")
        spans[role] = span
    if with_context and context and "context" not in spans:
        raise CpiError(f"item {item.id}: cannot locate the context in the tokenized prompt")
    if "question" not in spans:
        raise CpiError(f"item {item.id}: empty question")
    spans["final"] = (len(ids) - 1, len(ids))
    bos = getattr(tokenizer, "bos_token_id", None)
    has_bos = bool(ids) and bos is not None and ids[0] == bos
    return FormattedPrompt(
        item_id=item.id, text=text, input_ids=tuple(int(i) for i in ids), spans=spans, char_spans=dict(char_spans),
        has_bos=has_bos, truncated=truncated, answer_cut=answer_cut, template=template, with_context=with_context,
        offsets=tuple((int(a), int(b)) for a, b in offsets),
    )


def format_prompts(items: Sequence["ConflictItem"], tokenizer: Any, template: str = "alpaca", with_context: bool = True,
                   max_length: int | None = None) -> list[FormattedPrompt]:
    """:func:`format_prompt` over a list of items (same arguments).

    Logs one WARNING with the count of items whose context answer was cut away by truncation.
    """
    prompts = [format_prompt(it, tokenizer, template, with_context, max_length) for it in items]
    cut = [fp.item_id for fp in prompts if fp.answer_cut]
    if cut:
        log.warning("%d of %d items lost their context answer when the context was truncated to fit %s tokens "
                    "(flagged answer_cut; first: %s)", len(cut), len(prompts), max_length, ", ".join(cut[:3]))
    return prompts


def model_max_length(model: Any = None, tokenizer: Any = None) -> int | None:
    """The longest sequence the model can take: ``max_position_embeddings`` (or ``n_positions``), capped by a
    realistic ``tokenizer.model_max_length``; ``None`` if neither says."""
    limits = []
    cfg = getattr(model, "config", None)
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        v = getattr(cfg, key, None) if cfg is not None else None
        if isinstance(v, int) and v > 0:
            limits.append(v)
            break
    tl = getattr(tokenizer, "model_max_length", None)
    if isinstance(tl, int) and 0 < tl < 10_000_000:
        limits.append(tl)
    return min(limits) if limits else None
