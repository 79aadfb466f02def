"""One forward pass per batch with every metric unit's hooks; the arrays over all items.

:func:`run_probe_batch` left-pads a batch, builds the :class:`mechinterp.metrics.BatchContext` (the
logit-difference direction through the frozen-scale norms), registers the core read-outs (the
residual stream entering the final norm, each layer's attention output for its post-norm scale) and
every unit's hooks, runs the bridge once under ``torch.inference_mode()`` with logits for the final
position only, and asks each unit for its arrays. :func:`probe_arrays` does that over length-sorted
batches; :func:`check_reconciliation` refuses a decomposition that does not add up in float32.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from cpi.errors import CpiError
from mechinterp.hooks import hook_name, missing_hooks
from mechinterp.metrics import METRICS, BatchContext, Metric, check_metrics, recon_terms
from mechinterp.readout import as_bridge, attn_geometry, direction, norm_scale, readout
from mechinterp.targets import SPANS, ProbeItem, prepare_items

if TYPE_CHECKING:  # pragma: no cover
    import torch

log = logging.getLogger(__name__)


def collate(batch: Sequence[ProbeItem], pad_id: int, device: Any) -> dict[str, "torch.Tensor"]:
    """Left-pad a batch. Returns input_ids/attention_mask [batch pos], span_masks [batch span pos] float32."""
    import torch

    from fullscale.batching import pad_batch

    ids, mask = pad_batch([it.input_ids for it in batch], pad_id, side="left")
    B, S = ids.shape
    spans = torch.zeros((B, len(SPANS), S), dtype=torch.float32)
    index = {s: i for i, s in enumerate(SPANS)}
    for b, it in enumerate(batch):
        off = S - len(it.input_ids)
        for j, lab in enumerate(it.span_mask()):
            spans[b, index[lab], off + j] = 1.0
    return {
        "input_ids": ids.to(device),
        "attention_mask": mask.to(device),
        "span_masks": spans.to(device),
        "c_tok": torch.tensor([it.context_token for it in batch], dtype=torch.long, device=device),
        "p_tok": torch.tensor([it.parametric_token for it in batch], dtype=torch.long, device=device),
    }


def _core_hooks(ctx: BatchContext) -> list[tuple[str, Callable]]:
    """The read-outs every unit relies on: each attention output projected on ``g_attn`` (and its
    post-norm's scale, frozen at the final position), and the residual stream entering the final norm."""
    import torch

    B, L = ctx.batch, ctx.n_layers
    dev = ctx.g.device
    ctx.attn_out = torch.zeros((B, L), dtype=torch.float32, device=dev)
    ctx.post_scale = torch.ones((B, L), dtype=torch.float32, device=dev)  # frozen post-attention norm scales
    ctx.attn_bias = torch.zeros((B, L), dtype=torch.float32, device=dev)
    for layer in range(L):
        o = ctx.bridge.blocks[layer].attn.o.original_component
        if getattr(o, "bias", None) is not None:
            ctx.attn_bias[:, layer] = ctx.g_attn[layer] @ o.bias.detach().float()

    def make(layer: int) -> tuple[str, Callable]:
        def hook(x: "torch.Tensor", hook: Any) -> None:
            x = x[:, -1, :].float()
            ctx.attn_out[:, layer] = (x * ctx.g_attn[layer]).sum(-1)
            if ctx.ro.post_attn[layer] is not None:
                ctx.post_scale[:, layer] = ctx.ro.post_attn[layer].scale(x)

        return hook_name("attn_out", layer), hook

    def hook_final(x: "torch.Tensor", hook: Any) -> None:
        ctx.raw["resid"] = x[:, -1, :].float()

    return [make(layer) for layer in range(L)] + [(hook_name("final_in"), hook_final)]


def run_probe_batch(bridge: Any, batch: Sequence[ProbeItem], pad_id: int,
                    extra_hooks: Sequence[tuple[str, Callable]] = (),
                    metrics: Sequence[Metric] = METRICS) -> dict[str, Any]:
    """Run one left-padded batch through the bridge with the probe's hooks; return float32 numpy arrays.

    Keys (with the default :data:`mechinterp.metrics.METRICS`): ``attn`` [batch layer head span],
    ``head_contrib`` [batch layer head span], ``mlp`` [batch layer], ``attn_bias`` [batch layer],
    ``embed`` [batch], ``const`` [batch], ``logit_diff`` (real) [batch], ``recon`` [batch], ``scale``
    [batch], ``cf_top1``/``param_top1`` [batch] (argmax over the vocabulary is the context/parametric
    answer's divergent token), ``head_err`` [batch layer] (|attention output − Σ heads − bias|
    projected, a per-layer diagnostic of the head decomposition); each unit adds its own.

    Architectures with sandwich norms (Gemma-2/3: a norm on each block's attention and MLP
    output before the residual add) are handled like the final norm: each post-attention
    norm's scale is frozen at the final position, so a head's contribution is
    ``Σ_j A v_j W_O^h · (w_post ⊙ g) / s_post / s_final``; the MLP's contribution is read after
    its post-norm. ``extra_hooks`` are added *before* the probe's own (interventions: the probe
    then sees the edited pattern).
    """
    import torch

    check_metrics(metrics)
    n_layers = int(bridge.cfg.n_layers)
    H, KV, dh = attn_geometry(bridge)
    ro = readout(bridge)
    t = collate(batch, pad_id, bridge.cfg.device)
    g, const = direction(ro, t["c_tok"], t["p_tok"])  # [batch d_model], [batch]
    ctx = BatchContext(bridge=bridge, ro=ro, n_layers=n_layers, n_heads=H, n_kv=KV, d_head=dh,
                       batch=int(t["input_ids"].shape[0]), g=g, const=const,
                       g_attn=[g if pa is None else pa.direction(g) for pa in ro.post_attn],
                       span_masks=t["span_masks"], c_tok=t["c_tok"], p_tok=t["p_tok"])
    hooks: list[tuple[str, Callable]] = list(extra_hooks) + _core_hooks(ctx)
    for m in metrics:
        hooks += m.hooks(ctx)
    missing = missing_hooks(bridge, [name for name, _ in hooks])
    if missing:
        raise CpiError(f"architecture {bridge.cfg.architecture}: the probe needs hook points that this bridge lacks: "
                       f"{', '.join(missing[:4])}")

    with torch.inference_mode():
        logits = bridge.run_with_hooks(t["input_ids"], fwd_hooks=hooks, attention_mask=t["attention_mask"],
                                       logits_to_keep=1, return_type="logits")
    ctx.logits = logits[:, -1, :].float()
    ctx.scale = norm_scale(ro, ctx.raw["resid"])
    ctx.inv = 1.0 / ctx.scale
    ctx.layer_inv = ctx.inv.view(ctx.batch, 1) / ctx.post_scale  # [batch layer]: final and post-attention scales
    ctx.post_bias = torch.stack([g.new_zeros(ctx.batch) if pa is None else pa.const(g) for pa in ro.post_attn], 1)
    ctx.recon_terms = recon_terms(metrics)
    for m in metrics:
        ctx.arrays.update(m.finish(ctx))
    return {k: v.detach().cpu().numpy() for k, v in ctx.arrays.items()}


def probe_arrays(bridge: Any, tokenizer: Any, items: Sequence[Any], template: str = "alpaca", batch_size: int = 8,
                 max_length: int | None = None, extra_hooks: Sequence[tuple[str, Callable]] = (),
                 desc: str = "probe", metrics: Sequence[Metric] = METRICS) -> tuple[list[ProbeItem], dict[str, Any]]:
    """Run the probe over ``items`` in length-sorted batches; arrays in the items' order (see run_probe_batch)."""
    import numpy as np

    from cpi.progress import progress
    from fullscale.batching import pad_token_id

    if batch_size < 1:
        raise CpiError(f"batch_size must be >= 1, got {batch_size}")
    bridge = as_bridge(bridge, tokenizer)
    pitems = prepare_items(items, tokenizer, template=template, max_length=max_length)
    if not pitems:
        raise CpiError("no items to probe")
    pad_id = pad_token_id(tokenizer)
    vocab = int(bridge.cfg.d_vocab)
    for it in pitems:
        for tok in (it.context_token, it.parametric_token, *it.input_ids):
            if not 0 <= tok < vocab:
                raise CpiError(f"item {it.item_id!r}: token id {tok} outside the model's vocabulary of {vocab}")
    order = sorted(range(len(pitems)), key=lambda i: len(pitems[i].input_ids))
    chunks = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    parts: list[tuple[list[int], dict[str, Any]]] = []
    for idx in progress(chunks, desc=desc, total=len(chunks)):
        parts.append((idx, run_probe_batch(bridge, [pitems[i] for i in idx], pad_id, extra_hooks, metrics)))
    arrays: dict[str, Any] = {}
    for key in parts[0][1]:
        sample = parts[0][1][key]
        full = np.zeros((len(pitems), *sample.shape[1:]), dtype=np.float32)
        for idx, res in parts:
            full[idx] = res[key]
        arrays[key] = full
    return pitems, arrays


#: The reconciliation gap a half-precision forward is allowed before a WARNING (float32: ``tol``, an error).
#: Measured on SmolLM2 in bf16 (the main job's 48 probe runs, 4 items each): per-run worst gaps 0.008-0.14.
HALF_PRECISION_TOL = {"bfloat16": 0.25, "float16": 0.05}


def check_reconciliation(arrays: Mapping[str, Any], bridge: Any, tol: float = 1e-3) -> float:
    """Worst reconciliation gap ``|recon − real| / max(|real|, 1)`` over items (numpy arrays).

    In a float32 model a gap above ``tol`` means the decomposition does not hold for this
    architecture (the per-head numbers would be wrong): CpiError naming the architecture. In a
    bf16/fp16 forward the activations the probe reads are rounded (its arithmetic is float32), so
    the parts add up only to a few per cent: a gap above :data:`HALF_PRECISION_TOL` is logged as a
    WARNING (the per-item ``recon_rel_err`` is in the table either way). A non-finite gap is an error.
    """
    import numpy as np

    gap = np.abs(arrays["recon"] - arrays["logit_diff"]) / np.maximum(np.abs(arrays["logit_diff"]), 1.0)
    worst = float(gap.max()) if gap.size else 0.0
    dtype = str(getattr(bridge.cfg, "dtype", "?"))
    half = next((t for name, t in HALF_PRECISION_TOL.items() if dtype.endswith(name)), None)
    limit = tol if half is None else half
    if not np.isfinite(worst) or worst > limit:
        msg = (f"probe reconciliation on {getattr(bridge.cfg, 'architecture', '?')}: worst gap {worst:.2e} > {limit:.0e} "
               f"(model dtype {dtype})")
        if half is None or not np.isfinite(worst):
            raise CpiError(msg + "; the decomposition does not hold for this model, per-head numbers would be wrong")
        log.warning("%s", msg)
    return worst
