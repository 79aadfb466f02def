"""Instruction-finetuning (IFT) data: loading, validation and formatting with response-only labels.

Accepted record shapes (one record per JSONL line, a JSON list, or Parquet rows):

``alpaca``
    ``{"instruction": str, "input": str (optional, may be empty), "output": str}``.
    ``input`` is the *context* of the example (the paper's "input context").
``tulu`` / ``ultrachat``
    ``{"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...]}``
    (TULU v2 / ``HuggingFaceH4/ultrachat_200k``). The raw UltraChat shape
    ``{"data": [user, assistant, user, ...]}`` and ShareGPT's
    ``{"conversations": [{"from": "human"|"gpt", "value": str}, ...]}`` are read too.

Every record may carry an ``id`` (string or integer); otherwise its 1-based
record number in the file is its id. A record that does not fit raises
:class:`~cpi.errors.CpiError` naming ``FILE:RECORD`` and the missing field.

:func:`format_example` renders an example with a template (``plain``,
``alpaca``, ``chat``; the same prompt shapes as :mod:`fullscale.prompts`) and
labels only the response tokens (every assistant turn for chat records): the
label of every prompt token is ``-100``, so the causal-LM loss is the loss on
the response alone. Token/character alignment uses the fast tokenizer's offset
mapping on the finished text, never a separate tokenization of the pieces.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from cpi.errors import CpiError
from cpi.io import jsonl_lines
from fullscale.prompts import ALPACA_HEADER_INPUT, ALPACA_HEADER_NO_INPUT, check_template

log = logging.getLogger(__name__)

DATA_FORMATS = ("auto", "alpaca", "tulu", "ultrachat")
IGNORE_INDEX = -100
QA_BACKGROUND = "Background: "
QA_QUESTION = "\nQuestion: "
#: question markers at a line start, for records without an explicit context / question split
QA_QUESTION_MARKERS = ("\nQuestion: ", "\nQ: ")
#: labels a passage may start with (dropped from the passage)
PASSAGE_LABELS = ("Background: ", "Passage: ", "Text: ", "Context: ")
#: the alpaca record keys that give the split explicitly
SPLIT_KEYS = ("context", "question")
_ROLES = ("system", "user", "assistant")
_SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


@dataclass(frozen=True)
class IFTExample:
    """One instruction-finetuning example, normalised.

    Alpaca-shaped records fill ``instruction``/``input``/``output`` and leave
    ``messages`` empty; chat-shaped records fill ``messages`` (``(role,
    content)`` pairs, ending with an assistant turn). ``where`` is
    ``"FILE:RECORD"`` for error messages. ``passage`` / ``question``: the
    record's context and question when it states them (Alpaca keys
    ``"context"`` and ``"question"``, e.g. the controlled experiment's mixture),
    so that the no-context form keeps the question exactly.
    """

    id: str
    instruction: str = ""
    input: str = ""
    output: str = ""
    messages: tuple[tuple[str, str], ...] = ()
    where: str = ""
    meta: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)
    passage: str | None = None
    question: str | None = None

    @property
    def is_chat(self) -> bool:
        return bool(self.messages)

    def _split(self) -> tuple[str, str] | None:
        """``(passage, question)`` of a QA-shaped Alpaca record: the explicit fields when given, else the
        input cut at its last line-start question marker (:data:`QA_QUESTION_MARKERS`: ``Question:``,
        ``Q:``), the passage without a leading label (:data:`PASSAGE_LABELS`) and the question without
        a trailing ``A:`` line; None for chat records and inputs without a question marker."""
        if self.is_chat:
            return None
        if self.question is not None:
            return (self.passage or "", self.question)
        cut = max(((self.input.rfind(m), m) for m in QA_QUESTION_MARKERS), default=(-1, ""))
        if cut[0] < 0:
            return None
        passage, question = self.input[: cut[0]].strip(), self.input[cut[0] + len(cut[1]):].strip()
        for label in PASSAGE_LABELS:
            if passage.startswith(label):
                passage = passage[len(label):]
                break
        if question.endswith("\nA:"):
            question = question[: -len("\nA:")].rstrip()
        return (passage, question) if question else None

    @property
    def qa_question(self) -> str | None:
        """The question of a QA-shaped record: the explicit ``question`` or the part of ``input`` after
        its question marker (``"Background: <passage>\nQuestion: <question>"`` as made by
        :mod:`fullscale.augment` and the model organism; ``"Passage: ...\nQ: ..."`` and the other
        layouts of the controlled mixture); else None."""
        split = self._split()
        return split[1] if split else None

    @property
    def context(self) -> str:
        """The example's input context: Alpaca ``input`` (only the passage for evaluation-shaped QA
        records, see :attr:`qa_question`); for chat records, the system message and every turn
        before the last user turn (empty for single-turn chats)."""
        if not self.is_chat:
            split = self._split()
            return split[0] if split else self.input
        last_user = max(i for i, (r, _) in enumerate(self.messages) if r == "user")
        return "\n".join(c for _, c in self.messages[:last_user])

    @property
    def has_context(self) -> bool:
        return bool(self.context.strip())

    @property
    def response(self) -> str:
        """The final response (Alpaca ``output`` or the last assistant turn)."""
        return self.messages[-1][1] if self.is_chat else self.output

    def without_context(self) -> "IFTExample":
        """The same example with its context removed (see :attr:`context`). A QA-shaped record (see
        :attr:`qa_question`) becomes the closed-book form of the same question, subject included (as in
        :mod:`fullscale.prompts`); another Alpaca record keeps its instruction."""
        if not self.is_chat:
            question = self.qa_question
            if question is not None:
                from fullscale.prompts import QA_INSTRUCTION_CLOSED

                return IFTExample(self.id, f"{QA_INSTRUCTION_CLOSED}\nQuestion: {question}", "", self.output, (),
                                  self.where, self.meta, passage="", question=question)
            return IFTExample(self.id, self.instruction, "", self.output, (), self.where, self.meta)
        last_user = max(i for i, (r, _) in enumerate(self.messages) if r == "user")
        return IFTExample(self.id, messages=self.messages[last_user:], where=self.where, meta=self.meta)

    def as_chat(self) -> tuple[tuple[str, str], ...]:
        """``messages`` (chat records) or the Alpaca record as one user turn + one assistant turn.
        The user turn is ``instruction`` + newline + ``input``, as in :mod:`fullscale.prompts`."""
        if self.is_chat:
            return self.messages
        user = self.instruction + ("\n" + self.input if self.input else "")
        return (("user", user), ("assistant", self.output))

    def to_record(self) -> dict[str, Any]:
        """A JSON-ready record in the example's own shape (with ``id``)."""
        rec: dict[str, Any] = {"id": self.id}
        if self.is_chat:
            rec["messages"] = [{"role": r, "content": c} for r, c in self.messages]
        else:
            rec.update(instruction=self.instruction, input=self.input, output=self.output)
            if self.question is not None:
                rec.update(context=self.passage or "", question=self.question)
        rec.update({k: v for k, v in self.meta.items() if k not in rec})
        return rec


# ---------------------------------------------------------------------------
# loading


def read_records(path: str | Path) -> list[tuple[str, Any]]:
    """Raw records of a local ``.jsonl``/``.json``/``.parquet`` file as ``(where, record)`` pairs,
    ``where`` = ``"FILE:N"`` with N the line number (JSONL) or 1-based record number."""
    path = Path(path)
    if not path.is_file():
        raise CpiError(f"{path}: data file not found")
    suffix = "".join(path.suffixes[-2:]) if path.suffix == ".gz" else path.suffix
    if suffix == ".parquet":
        import pandas as pd

        try:
            frame = pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises many types for a corrupt file
            raise CpiError(f"{path}: not a readable Parquet file: {exc}") from exc
        return [(f"{path}:{i + 1}", _plain_obj(rec)) for i, rec in enumerate(frame.to_dict(orient="records"))]
    text = path.read_text(encoding="utf-8")
    if suffix == ".json" and text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CpiError(f"{path}: not valid JSON: {exc}") from exc
        except RecursionError:
            raise CpiError(f"{path}: JSON nested too deeply to read") from None
        return [(f"{path}:{i + 1}", rec) for i, rec in enumerate(data)]
    if suffix not in (".jsonl", ".json"):
        raise CpiError(f"{path}: unsupported data file type {path.suffix!r} (use .jsonl, .json or .parquet)")
    out = []
    for n, line in enumerate(jsonl_lines(text), start=1):  # not splitlines(): U+2028 is legal inside a string
        if not line.strip():
            continue
        try:
            out.append((f"{path}:{n}", json.loads(line)))
        except json.JSONDecodeError as exc:
            raise CpiError(f"{path}:{n}: not valid JSON: {exc.msg}") from exc
        except RecursionError:
            raise CpiError(f"{path}:{n}: JSON nested too deeply to read") from None
    return out


def _plain_obj(value: Any) -> Any:
    """Parquet rows come back with numpy arrays for lists; turn them into Python lists."""
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        value = value.tolist()
    if isinstance(value, dict):
        return {k: _plain_obj(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain_obj(v) for v in value]
    return value


def detect_format(record: Any) -> str:
    """``"alpaca"`` or ``"chat"`` for one raw record (``"unknown"`` if neither)."""
    if isinstance(record, Mapping):
        if any(k in record for k in ("messages", "conversations")) or isinstance(record.get("data"), list):
            return "chat"
        if "instruction" in record or "output" in record:
            return "alpaca"
    return "unknown"


def parse_record(where: str, record: Any, data_format: str = "auto", index: int = 0) -> IFTExample:
    """Validate one raw record and normalise it; errors name ``where`` (``FILE:RECORD``) and the field."""
    if data_format not in DATA_FORMATS:
        raise CpiError(f"unknown data_format {data_format!r} (choose from: {', '.join(DATA_FORMATS)})")
    if not isinstance(record, Mapping):
        raise CpiError(f"{where}: expected a JSON object, got {type(record).__name__}")
    kind = detect_format(record) if data_format == "auto" else ("alpaca" if data_format == "alpaca" else "chat")
    if kind == "unknown":
        raise CpiError(
            f"{where}: missing 'instruction'/'output' (Alpaca) or 'messages' (TULU/UltraChat); "
            f"record has fields: {', '.join(sorted(map(str, record))) or 'none'}"
        )
    rid = record.get("id")
    if rid is None or (isinstance(rid, float) and rid != rid):
        rid = index
    if not isinstance(rid, (str, int)) or isinstance(rid, bool):
        raise CpiError(f"{where}: field 'id' must be a string or an integer, got {rid!r}")
    meta = {k: v for k, v in record.items() if k not in ("id", "instruction", "input", "output", "messages",
                                                         "conversations", "data", *SPLIT_KEYS) and _is_jsonable(v)}
    if kind == "alpaca":
        for key in ("instruction", "output"):
            if key not in record or record[key] is None:
                raise CpiError(f"{where}: missing '{key}'")
            if not isinstance(record[key], str):
                raise CpiError(f"{where}: field '{key}' must be a string, got {type(record[key]).__name__}")
        if not record["output"].strip():
            raise CpiError(f"{where}: field 'output' is empty")
        inp = record.get("input")
        if inp is None or (isinstance(inp, float) and inp != inp):
            inp = ""
        if not isinstance(inp, str):
            raise CpiError(f"{where}: field 'input' must be a string, got {type(inp).__name__}")
        if not record["instruction"].strip() and not inp.strip():
            raise CpiError(f"{where}: fields 'instruction' and 'input' are both empty")
        split = {k: record.get(k) for k in SPLIT_KEYS}
        if split["question"] is None:
            if split["context"] is not None:
                raise CpiError(f"{where}: field 'context' is given without 'question'")
            return IFTExample(str(rid), record["instruction"], inp, record["output"], (), where, meta)
        for k, v in split.items():
            if v is not None and not isinstance(v, str):
                raise CpiError(f"{where}: field '{k}' must be a string, got {type(v).__name__}")
        if not split["question"].strip():
            raise CpiError(f"{where}: field 'question' is empty")
        return IFTExample(str(rid), record["instruction"], inp, record["output"], (), where, meta,
                          passage=split["context"] or "", question=split["question"])
    messages = _parse_messages(where, record)
    return IFTExample(str(rid), messages=messages, where=where, meta=meta)


def _is_jsonable(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool)) or value is None


def _parse_messages(where: str, record: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    if "messages" in record:
        raw = record["messages"]
        if not isinstance(raw, list):
            raise CpiError(f"{where}: field 'messages' must be a list of {{'role', 'content'}} objects")
        msgs = []
        for j, m in enumerate(raw):
            if not isinstance(m, Mapping) or "role" not in m or "content" not in m:
                raise CpiError(f"{where}: messages[{j}] missing 'role' or 'content'")
            if m["role"] not in _ROLES:
                raise CpiError(f"{where}: messages[{j}] has unknown role {m['role']!r} (use {', '.join(_ROLES)})")
            if not isinstance(m["content"], str):
                raise CpiError(f"{where}: messages[{j}].content must be a string")
            msgs.append((m["role"], m["content"]))
    elif "conversations" in record:
        raw = record["conversations"]
        if not isinstance(raw, list):
            raise CpiError(f"{where}: field 'conversations' must be a list")
        msgs = []
        for j, m in enumerate(raw):
            if not isinstance(m, Mapping) or "from" not in m or "value" not in m:
                raise CpiError(f"{where}: conversations[{j}] missing 'from' or 'value'")
            role = _SHAREGPT_ROLES.get(str(m["from"]))
            if role is None or not isinstance(m["value"], str):
                raise CpiError(f"{where}: conversations[{j}] has unknown speaker {m['from']!r} or non-string value")
            msgs.append((role, m["value"]))
    else:
        raw = record["data"]
        if not all(isinstance(t, str) for t in raw):
            raise CpiError(f"{where}: field 'data' must be a list of strings (user, assistant, user, ...)")
        msgs = [("user" if j % 2 == 0 else "assistant", t) for j, t in enumerate(raw)]
    # drop trailing user turns (nothing to learn from them)
    while msgs and msgs[-1][0] != "assistant":
        msgs.pop()
    if not any(r == "assistant" for r, _ in msgs):
        raise CpiError(f"{where}: missing an 'assistant' message (nothing to train on)")
    if not any(r == "user" for r, _ in msgs):
        raise CpiError(f"{where}: missing a 'user' message")
    if not msgs[-1][1].strip():
        raise CpiError(f"{where}: the last assistant message is empty")
    return tuple(msgs)


def load_ift_data(source: str | Path, data_format: str = "auto", split: str = "train",
                  max_examples: int | None = None) -> list[IFTExample]:
    """Load and validate IFT examples from a local file, or a hub dataset name when online.

    ``source``: a ``.jsonl``/``.json``/``.parquet`` path, or a Hugging Face
    dataset name (e.g. ``"allenai/tulu-v2-sft-mixture"``; needs the network and
    the ``datasets`` package). ``max_examples`` keeps the first N examples.
    Duplicate ids raise :class:`CpiError`.
    """
    path = Path(source)
    if path.exists():
        raw = read_records(path)
    else:
        raw = _hub_records(str(source), split)
    if max_examples is not None:
        raw = raw[:max_examples]
    if not raw:
        raise CpiError(f"{source}: no records")
    examples = [parse_record(where, rec, data_format, index=i + 1) for i, (where, rec) in enumerate(raw)]
    seen: dict[str, str] = {}
    for ex in examples:
        if ex.id in seen:
            raise CpiError(f"{ex.where}: duplicate id {ex.id!r} (first at {seen[ex.id]})")
        seen[ex.id] = ex.where
    return examples


def _hub_records(name: str, split: str) -> list[tuple[str, Any]]:
    import os

    looks_like_file = Path(name).suffix in (".jsonl", ".json", ".parquet") or os.sep in name and name.startswith((".", "/"))
    if looks_like_file:
        raise CpiError(f"{name}: data file not found")
    if os.environ.get("HF_DATASETS_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE") == "1":
        raise CpiError(f"{name}: not a local file, and the Hugging Face hub is offline (HF_HUB_OFFLINE=1)")
    try:
        import datasets
    except ImportError as exc:
        raise CpiError(f"{name}: not a local file; loading hub datasets needs `pip install datasets`") from exc
    try:
        ds = datasets.load_dataset(name, split=split)
    except Exception as exc:  # network / not found / bad split: many exception types
        raise CpiError(f"{name}: cannot load hub dataset (split {split!r}): {exc}") from exc
    return [(f"{name}[{split}]:{i + 1}", rec) for i, rec in enumerate(ds)]


def write_ift_jsonl(examples: Iterable[IFTExample], path: str | Path) -> Path:
    """Write examples as JSONL (each in its own shape, with ``id``), atomically."""
    from cpi.io import atomic_write_text

    lines = [json.dumps(ex.to_record(), ensure_ascii=False) for ex in examples]
    return atomic_write_text(path, "\n".join(lines) + ("\n" if lines else ""))


# ---------------------------------------------------------------------------
# formatting


def render_segments(example: IFTExample, tokenizer: Any, template: str, add_eos: bool = True
                    ) -> list[tuple[str, bool]]:
    """The example as text segments ``(text, is_response)`` in ``template``.

    ``alpaca`` uses the Alpaca prompt (with or without ``### Input:``);
    ``plain`` is ``instruction\\ninput\\n`` then the response; ``chat`` uses
    ``tokenizer.apply_chat_template``. For ``plain``/``alpaca`` the EOS token is
    appended to each response when ``add_eos`` (the model learns to stop); for
    ``chat`` the template decides.
    """
    check_template(template)
    eos = (getattr(tokenizer, "eos_token", None) or "") if add_eos else ""
    if template == "chat":
        return _chat_template_segments(example, tokenizer)
    if not example.is_chat:
        if template == "alpaca":
            if example.input:
                prompt = (ALPACA_HEADER_INPUT + f"### Instruction:\n{example.instruction}\n\n"
                          f"### Input:\n{example.input}\n\n### Response:\n")
            else:
                prompt = ALPACA_HEADER_NO_INPUT + f"### Instruction:\n{example.instruction}\n\n### Response:\n"
        else:
            prompt = example.instruction + (("\n" + example.input) if example.input else "") + "\n"
        return [(prompt, False), (example.output + eos, True)]
    segs: list[tuple[str, bool]] = []
    msgs = list(example.messages)
    system = ""
    if msgs and msgs[0][0] == "system":
        system = msgs.pop(0)[1]
    if template == "alpaca":
        segs.append(((system + "\n\n" if system else "") + ALPACA_HEADER_NO_INPUT, False))
    elif system:
        segs.append((system + "\n", False))
    for role, content in msgs:
        if role == "assistant":
            segs.append((content + eos, True))
            segs.append(("\n\n" if template == "alpaca" else "\n", False))
        elif template == "alpaca":
            segs.append((f"### Instruction:\n{content}\n\n### Response:\n", False))
        else:
            segs.append((content + "\n", False))
    while segs and not segs[-1][1]:
        segs.pop()
    return segs


def _chat_template_segments(example: IFTExample, tokenizer: Any) -> list[tuple[str, bool]]:
    if not getattr(tokenizer, "chat_template", None):
        raise CpiError(
            f"{example.where or example.id}: template 'chat' needs a tokenizer with a chat template, and this "
            f"tokenizer ({type(tokenizer).__name__}) has none; use template 'alpaca' or 'plain'"
        )
    msgs = [{"role": r, "content": c} for r, c in example.as_chat()]

    def render(m: list[dict], gen: bool) -> str:
        try:
            return tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=gen)
        except Exception as exc:  # jinja raises many kinds
            raise CpiError(f"{example.where or example.id}: the chat template failed to render: {exc}") from exc

    full = render(msgs, False)
    segs: list[tuple[str, bool]] = []
    pos = 0
    for i, m in enumerate(msgs):
        if m["role"] != "assistant":
            continue
        prefix = render(msgs[:i], True)
        upto = render(msgs[: i + 1], False)
        if not (full.startswith(upto) and upto.startswith(prefix) and len(prefix) >= pos):
            raise CpiError(
                f"{example.where or example.id}: the chat template does not render conversations "
                "prefix-consistently; cannot locate the assistant turns"
            )
        segs.append((full[pos:len(prefix)], False))
        segs.append((full[len(prefix):len(upto)], True))
        pos = len(upto)
    if pos < len(full):
        segs.append((full[pos:], False))
    return [s for s in segs if s[0]]


def _text_and_spans(example: IFTExample, tokenizer: Any, template: str, add_eos: bool
                    ) -> tuple[str, list[tuple[int, int]]]:
    """The rendered text and the character spans of its responses."""
    text = ""
    spans = []
    for piece, is_resp in render_segments(example, tokenizer, template, add_eos):
        if is_resp:
            spans.append((len(text), len(text) + len(piece)))
        text += piece
    return text, spans


def _feature(ids: Sequence[int], offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]],
             response_only: bool, max_length: int | None) -> dict[str, list[int]] | None:
    """Labels from the offset mapping: a token is labelled if its characters overlap a response span."""
    import numpy as np

    ids_a = np.asarray(ids, dtype=np.int64)
    off = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
    start, end = off[:, 0], off[:, 1]
    keep = end > start  # special tokens without characters (BOS) are never labelled
    if response_only:
        inside = np.zeros(len(ids_a), dtype=bool)
        for s, e in spans:
            inside |= (start < e) & (end > s)
        keep &= inside
    labels = np.where(keep, ids_a, IGNORE_INDEX)
    if max_length is not None and len(ids_a) > max_length:
        ids_a, labels = ids_a[:max_length], labels[:max_length]
    if not (labels != IGNORE_INDEX).any():
        return None
    return {"input_ids": ids_a.tolist(), "attention_mask": [1] * len(ids_a), "labels": labels.tolist()}


def _check_fast(tokenizer: Any) -> None:
    if not getattr(tokenizer, "is_fast", False):
        raise CpiError(f"tokenizer {type(tokenizer).__name__} is not a fast tokenizer (offset mappings needed)")


def format_example(example: IFTExample, tokenizer: Any, template: str = "alpaca", max_length: int | None = None,
                   response_only: bool = True, add_eos: bool = True) -> dict[str, list[int]] | None:
    """Tokenize one example for causal-LM training.

    Returns ``{"input_ids", "attention_mask", "labels"}`` (lists of length
    ``pos``) where ``labels[i] = input_ids[i]`` for response tokens (a token is
    a response token if its characters overlap a response segment) and ``-100``
    elsewhere (everywhere-labelled when ``response_only=False``, except
    special tokens without characters such as BOS). Sequences longer than
    ``max_length`` are cut on the right; returns ``None`` if no response token
    is left.
    """
    _check_fast(tokenizer)
    text, spans = _text_and_spans(example, tokenizer, template, add_eos)
    enc = tokenizer(text, add_special_tokens=(template != "chat"), return_offsets_mapping=True)
    return _feature(enc["input_ids"], enc["offset_mapping"], spans, response_only, max_length)


def tokenize_examples(examples: Sequence[IFTExample], tokenizer: Any, template: str = "alpaca",
                      max_length: int | None = None, response_only: bool = True, add_eos: bool = True,
                      chunk_size: int = 1024) -> tuple[list[dict[str, list[int]]], list[str]]:
    """:func:`format_example` over ``examples`` (batched tokenization, same result); returns
    ``(features, dropped_ids)`` where ``dropped_ids`` are examples whose response did not fit in
    ``max_length``."""
    from cpi.progress import progress

    check_template(template)
    _check_fast(tokenizer)
    feats, dropped = [], []
    chunks = [examples[i: i + chunk_size] for i in range(0, len(examples), chunk_size)]
    for chunk in progress(chunks, desc="tokenize", total=len(chunks)):
        rendered = [_text_and_spans(ex, tokenizer, template, add_eos) for ex in chunk]
        enc = tokenizer([t for t, _ in rendered], add_special_tokens=(template != "chat"),
                        return_offsets_mapping=True)
        for ex, (_, spans), ids, offsets in zip(chunk, rendered, enc["input_ids"], enc["offset_mapping"]):
            f = _feature(ids, offsets, spans, response_only, max_length)
            if f is None:
                dropped.append(ex.id)
            else:
                feats.append(f)
    if dropped:
        log.warning("%d of %d examples dropped: no response token within max_length=%s (first: %s)",
                    len(dropped), len(examples), max_length, dropped[0])
    return feats, dropped
