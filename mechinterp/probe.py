"""Attention and value (OV) probes at the answer position of knowledge-conflict prompts.

For every prompt, at the final position (the token after which the answer is
generated), and for every layer and head, the probe measures

* **attention mass** on four disjoint token spans: ``context`` (the passage /
  instruction that carries the counterfactual answer), ``question`` (the
  subject/question), ``bos`` (the BOS token when the tokenizer adds one — the
  usual attention sink; empty otherwise) and ``other`` (template tokens, the
  final token itself). The four masses sum to 1 (padding gets zero weight).
* **value contribution** of each span: the head's output at the final
  position restricted to that span, ``Σ_{j∈span} A[h,last,j] · v_j^{kv(h)} W_O^h``
  (query head ``h`` reads KV head ``h // (n_heads / n_kv)`` under grouped-query
  attention), projected through the final norm — its scale frozen at the final
  position, so the map is linear — and the unembedding onto
  ``logit(context answer's token) − logit(parametric answer's token)`` at the first token
  where the two answers differ (their shared prefix appended to the prompt; see
  :func:`answer_target`), so no item has a structural zero.
* **direct contributions** of the embedding, each MLP, each attention output
  bias and the final norm/unembedding biases, in the same units.

Why: the theory (``docs/theory``) says the inversion is an attention effect —
shared attention on the context rises then falls — deepened by the value
matrix memorising facts. The masses show the first, the span-resolved value
contributions show through which heads and which tokens the context answer
(vs. the parametric answer) is written.

**Reconciliation.** Embedding + Σ heads×spans + attention biases + MLPs +
constant biases equals the model's real final-position logit difference (the
residual stream is a sum of these parts and the frozen-scale norm is linear).
Each item records ``recon`` and ``recon_rel_err``; the tests assert it to
1e-3 relative in float32. All probe arithmetic is done in float32 whatever the
model dtype (in bf16 the model's own logits are only good to ~1e-2).

**Memory discipline.** Nothing is cached beyond: the final-position row of
each layer's pattern, that layer's values (dropped as soon as the layer's
pattern has been read), final-position embedding/attention/MLP outputs and the
final-norm input. Logits are requested for the final position only
(``logits_to_keep=1``) with left padding and an explicit ``attention_mask``,
under ``torch.inference_mode()``.

**Where things are.** This module is the entry point (:func:`probe_items`) and re-exports the
probe's names from the modules that hold them: :mod:`mechinterp.targets` (answer targets,
:class:`ProbeItem`, :func:`prepare_items`, :func:`targets_table`), :mod:`mechinterp.readout` (norms,
unembedding, output projections as float32 algebra), :mod:`mechinterp.metrics` (the metric units:
hooks, arrays, table rows; how to add one), :mod:`mechinterp.run` (one forward pass per batch,
:func:`probe_arrays`, :func:`check_reconciliation`), :mod:`mechinterp.tables` (the tidy table and
:func:`aggregate`) and :mod:`mechinterp.hooks` (the hook names).
"""

from __future__ import annotations


from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from mechinterp.metrics import METRICS, PROBE_METRICS, Metric, recon_rel_err
from mechinterp.readout import as_bridge, attn_geometry, readout
from mechinterp.run import check_reconciliation, collate, probe_arrays, run_probe_batch
from mechinterp.tables import PROBE_COLUMNS, aggregate, arrays_to_table
from mechinterp.targets import (SPANS, TARGET_COLUMNS, AnswerTarget, ProbeItem, UndefinedTargetError,
                                answer_continuation, answer_target, prepare_items, targets_table)

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = [
    "METRICS", "PROBE_METRICS", "Metric", "recon_rel_err", "as_bridge", "attn_geometry", "readout",
    "check_reconciliation", "collate", "probe_arrays", "run_probe_batch", "PROBE_COLUMNS", "aggregate",
    "arrays_to_table", "SPANS", "TARGET_COLUMNS", "AnswerTarget", "ProbeItem", "UndefinedTargetError",
    "answer_continuation", "answer_target", "prepare_items", "targets_table", "probe_items", "probe",
]


def probe_items(bridge_or_model: Any, tokenizer: Any, items: Sequence[Any], template: str = "alpaca",
                batch_size: int = 8, max_length: int | None = None, check_tol: float | None = 1e-3,
                metrics: Sequence[Metric] = METRICS) -> "pd.DataFrame":
    """Attention masses and span-resolved value contributions at the answer position (tidy, per item).

    ``items``: :class:`fullscale.conflicts.ConflictItem` s (formatted with ``template``) or
    :class:`ProbeItem` s. ``bridge_or_model``: a TransformerBridge or an HF causal LM
    (wrapped, raw weights). Returns the table described in :func:`arrays_to_table`.
    Reconciliation is checked with :func:`check_reconciliation` (``check_tol=None``: not
    checked; the per-item error is in the table either way). ``metrics``: the units to run
    (:data:`mechinterp.metrics.METRICS` by default; add one to get its rows).
    """
    bridge = as_bridge(bridge_or_model, tokenizer)
    pitems, arrays = probe_arrays(bridge, tokenizer, items, template=template, batch_size=batch_size,
                                  max_length=max_length, metrics=metrics)
    if check_tol is not None:
        check_reconciliation(arrays, bridge, check_tol)
    return arrays_to_table(pitems, arrays, weights=getattr(bridge, "cpi_weights", "raw_hf"), metrics=metrics)


#: The former name of :func:`probe_items`, kept so that ``from mechinterp.probe import probe`` still works.
#: The package re-exports only ``probe_items``: ``from mechinterp import probe`` is this module.
probe = probe_items
