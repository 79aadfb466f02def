"""Finetuning batches that ask the model only for the logits the loss reads.

Instruction finetuning scores the response tokens only (the prompt's labels are ``-100``), yet a
causal LM computes the output layer at every position. On a small model with a large vocabulary that
layer is most of the work (Gemma-3-270M: 262k × 640 against ~100M transformer weights) and its
``batch × pos × d_vocab`` logits most of the memory. :class:`ResponseLogitsCollator` pads a batch as
``transformers.DataCollatorForSeq2Seq`` does and adds

* ``logits_to_keep``: a ``batch pos`` boolean mask of the positions whose *next* token is a label, so
  the model projects only those hidden states onto the vocabulary
  (``transformers.modeling_utils.slice_logits_to_keep``);
* ``shift_labels``: the labels those positions predict, flattened in the same order, which the causal
  LM loss uses as they are (and the Trainer counts for ``num_items_in_batch``).

The loss is the same cross-entropy over the same (position, label) pairs; only the positions whose
logits the loss never read are skipped, so the numbers agree with the full computation to float
rounding (tested). Models whose ``forward`` takes no ``logits_to_keep`` get the plain padded batch.
"""

from __future__ import annotations

import inspect
from typing import Any, Sequence

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100

__all__ = ["ResponseLogitsCollator", "accepts_logits_to_keep", "next_token_targets"]


def accepts_logits_to_keep(model: Any) -> bool:
    """Whether ``model`` (or the model inside a PEFT wrapper) takes ``logits_to_keep`` in ``forward`` and
    passes further keyword arguments (``shift_labels``) on to its loss."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not callable(getattr(inner, "forward", None)):
        return False
    params = inspect.signature(inner.forward).parameters
    return "logits_to_keep" in params and any(p.kind is p.VAR_KEYWORD for p in params.values())


def next_token_targets(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``labels`` (batch pos, ``-100`` = not scored) as what each position predicts: ``targets`` (batch
    pos), the label of the next position (``-100`` at the last), and ``keep`` (batch pos), the positions
    whose next token is scored: the only ones whose logits a response loss reads."""
    targets = F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)  # batch pos
    return targets, targets != IGNORE_INDEX


class ResponseLogitsCollator:
    """Pad finetuning examples (``input_ids``, ``attention_mask``, ``labels``) into a batch and, when
    ``response_logits_only``, add the ``logits_to_keep`` mask and ``shift_labels`` described above.

    >>> from types import SimpleNamespace
    >>> tok = SimpleNamespace(pad_token_id=0, padding_side="right")
    >>> batch = ResponseLogitsCollator(tok)([{"input_ids": [5, 6, 7], "labels": [-100, -100, 7]},
    ...                                      {"input_ids": [8, 9], "labels": [-100, 9]}])
    >>> batch["logits_to_keep"].tolist(), batch["shift_labels"].tolist()
    ([[False, True, False], [True, False, False]], [7, 9])
    """

    def __init__(self, tokenizer: Any, response_logits_only: bool = True, pad_to_multiple_of: int | None = None):
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.side = getattr(tokenizer, "padding_side", "right") or "right"
        self.response_logits_only = response_logits_only
        self.multiple = pad_to_multiple_of

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        n = max(len(f["input_ids"]) for f in features)
        if self.multiple:
            n = -(-n // self.multiple) * self.multiple
        batch = {
            "input_ids": self._pad([f["input_ids"] for f in features], n, self.pad_id),  # batch pos
            "attention_mask": self._pad([f["attention_mask"] if "attention_mask" in f else [1] * len(f["input_ids"])
                                         for f in features], n, 0),  # batch pos
            "labels": self._pad([f["labels"] for f in features], n, IGNORE_INDEX),  # batch pos
        }
        if self.response_logits_only:
            targets, keep = next_token_targets(batch["labels"])  # batch pos, batch pos
            batch["logits_to_keep"] = keep
            batch["shift_labels"] = targets[keep]  # n_kept, in the order the model flattens the kept positions
        return batch

    def _pad(self, rows: Sequence[Sequence[int]], n: int, value: int) -> torch.Tensor:
        out = torch.full((len(rows), n), value, dtype=torch.long)  # batch pos
        for i, row in enumerate(rows):
            row = torch.as_tensor(list(row), dtype=torch.long)
            if self.side == "left":
                out[i, n - len(row):] = row
            else:
                out[i, : len(row)] = row
        return out
