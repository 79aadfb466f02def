"""Batching helpers shared by every batched forward pass (scoring, curation, probes).

One pad-id rule (:func:`pad_token_id`) and one padding function (:func:`pad_batch`), in a module of
their own so that ``fullscale.scoring``, ``fullscale.curation`` and ``mechinterp`` import them from a
neutral place rather than from the scorer.

    >>> ids, mask = pad_batch([[5, 6, 7], [8]], pad_id=0, side="left")
    >>> ids.tolist(), mask.tolist()
    ([[5, 6, 7], [0, 0, 8]], [[1, 1, 1], [0, 0, 1]])
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

__all__ = ["pad_batch", "pad_token_id"]


def pad_token_id(tokenizer: Any) -> int:
    """The id to pad batches with: the tokenizer's pad token, else EOS, else UNK, else 0.

    Padded positions are masked out of attention and never scored, so the choice only has to be a
    valid id; every batched forward in the package pads with this one.
    """
    for cand in (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id, 0):
        if cand is not None:
            return int(cand)
    return 0  # pragma: no cover


def pad_batch(seqs: Sequence[Sequence[int]], pad_id: int, side: str = "left") -> tuple["torch.Tensor", "torch.Tensor"]:
    """Pad token-id lists to the longest one: ``input_ids`` and ``attention_mask``, both ``[batch pos]`` long.

    ``side="left"`` puts the padding before the tokens (generation and last-position reads: every
    sequence ends at the last position); ``"right"`` after them (positions then start at 0 for all).
    """
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    width = max((len(s) for s in seqs), default=0)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for r, seq in enumerate(seqs):
        cols = slice(width - len(seq), width) if side == "left" else slice(0, len(seq))
        ids[r, cols] = torch.tensor(list(seq), dtype=torch.long)
        mask[r, cols] = 1
    return ids, mask
