"""Causal check: scale or ablate chosen heads' attention to a span and see what the answer does.

Two modes, both acting only on the final (answer) position's query row of the
chosen heads' attention pattern (``hook_pattern``), so only the answer
prediction is affected:

* ``mode="attention"`` — multiply the heads' attention weights on the span by
  ``scale`` and **renormalise** the row, so the removed (or added) mass moves
  proportionally to the other tokens: "look less at the context".
* ``mode="value"`` — multiply the weights on the span by ``scale`` **without**
  renormalising: exactly scales the heads' value (OV) contribution from the
  span (``Σ_{j∈span} A·v W_O``) by ``scale`` and leaves everything else of the
  head untouched. ``scale=0`` ablates the context path of those heads.

:func:`intervene_items` runs the probe with and without the edit and returns one
row per item: logit difference (context − parametric first token), top-1
counterfactual / parametric accuracy, before and after.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Literal, Optional, Sequence

from cpi.config import Config, check_at_least, check_finite
from cpi.errors import ConfigError, CpiError
from mechinterp.trajectory import ItemSettings, load_items

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd


@dataclasses.dataclass(frozen=True)
class HeadIntervention(Config):
    """Which heads (``(layer, head)`` pairs), which span, by how much, how."""

    heads: tuple[tuple[int, int], ...] = ()
    scale: float = 0.0
    mode: Literal["attention", "value"] = "attention"
    span: Literal["context", "question", "bos", "other"] = "context"

    def validate(self) -> None:
        if not self.heads:
            raise ConfigError("field 'heads': give at least one (layer, head)")
        for lh in self.heads:
            if len(lh) != 2 or min(lh) < 0:
                raise ConfigError(f"field 'heads': {lh!r} is not a (layer, head) pair of non-negative ints")
        check_finite(self, "", "scale")
        check_at_least(self, scale=0)


@dataclasses.dataclass(frozen=True)
class InterveneConfig(ItemSettings):
    """What ``cpi probe-intervene`` runs (its flags are these fields)."""

    checkpoint: str = ""
    "one model folder (or LoRA adapter folder)"
    heads: str = ""
    "LAYER.HEAD list, e.g. '10.3,12.*' or 'all'"
    scale: float = 0.0
    "factor on the span's attention (0 = ablate)"
    mode: Literal["attention", "value"] = "attention"
    "attention: renormalised; value: the span's value contribution only"
    span: Literal["context", "question", "bos", "other"] = "context"
    "the span whose attention is scaled"
    out: str = "intervene"
    "output folder"

    def validate(self) -> None:
        super().validate()
        check_finite(self, "", "scale")
        check_at_least(self, scale=0)


def run_intervene(config: InterveneConfig) -> "tuple[pd.DataFrame, pd.DataFrame]":
    """Run one head intervention (``cpi probe-intervene``) into ``config.out``; returns the per-item and
    summary tables (also ``intervention_items.csv`` and ``intervention_summary.csv``, with
    ``config.json``). The folder is locked (:class:`cpi.lock.FolderLock`) while the run writes."""
    from cpi.io import check_out_dir, save_run
    from cpi.lock import FolderLock
    from fullscale.checkpoints import resolve_device_dtype
    from fullscale.precision import dtype_name
    from mechinterp.load import load_bridge

    device, dtype = resolve_device_dtype(config.device, config.dtype)  # auto: bf16 where native; refusals first
    out = check_out_dir(config.out)
    items = load_items(config.dataset, config.max_items)
    with FolderLock(out, "cpi probe-intervene"):
        bridge, tok = load_bridge(config.checkpoint, device=device, dtype=dtype, tokenizer=config.tokenizer)
        heads = parse_heads(config.heads, int(bridge.cfg.n_layers), int(bridge.cfg.n_heads))
        iv = HeadIntervention(heads=heads, scale=config.scale, mode=config.mode, span=config.span)
        df = intervene_items(bridge, tok, items, iv, template=config.template, batch_size=config.batch_size,
                       max_length=config.max_length)
        summary = summarize_intervention(df)
        save_run(out, config, tables={"intervention_items": df, "intervention_summary": summary},
                 weights=getattr(bridge, "cpi_weights", "raw_hf"), heads_resolved=[list(h) for h in heads],
                 dtype=dtype_name(dtype))
    return df, summary


def parse_heads(spec: str, n_layers: int | None = None, n_heads: int | None = None) -> tuple[tuple[int, int], ...]:
    """``"3.1,5.*,all"`` -> ((3,1), (5,0..n_heads-1), every head). ``*``/``all`` need the model's sizes."""
    out: list[tuple[int, int]] = []
    for tok in [t.strip() for t in spec.split(",") if t.strip()]:
        if tok in ("all", "*"):
            if n_layers is None or n_heads is None:
                raise CpiError("heads 'all' needs the model's layer/head counts")
            out += [(l, h) for l in range(n_layers) for h in range(n_heads)]
            continue
        if "." not in tok:
            raise CpiError(f"heads {tok!r}: expected LAYER.HEAD (e.g. 3.1 or 3.*)")
        ls, hs = tok.split(".", 1)
        try:
            layer = int(ls)
            heads = range(n_heads) if hs == "*" and n_heads is not None else [int(hs)]
        except ValueError as exc:
            raise CpiError(f"heads {tok!r}: expected LAYER.HEAD with integers") from exc
        out += [(layer, h) for h in heads]
    if not out:
        raise CpiError(f"heads {spec!r}: no heads given")
    return tuple(dict.fromkeys(out))


def intervention_hooks(bridge: Any, batch_span_masks: Any, iv: HeadIntervention) -> list[tuple[str, Any]]:
    """Hooks editing the final query row of the chosen heads' patterns.

    ``batch_span_masks``: a callable returning the current batch's span mask
    [batch pos] (float, 1 on the span's tokens)."""
    import torch

    from mechinterp.hooks import hook_name
    from mechinterp.readout import attn_geometry

    n_layers = int(bridge.cfg.n_layers)
    H, _, _ = attn_geometry(bridge)
    by_layer: dict[int, list[int]] = {}
    for layer, head in iv.heads:
        if layer >= n_layers or head >= H:
            raise CpiError(f"head {layer}.{head} does not exist (model has {n_layers} layers x {H} heads)")
        by_layer.setdefault(layer, []).append(head)

    def make(layer: int, heads: list[int]) -> Any:
        idx = list(heads)  # a Python list indexes CPU and CUDA tensors alike

        def hook(p: "torch.Tensor", hook: Any) -> "torch.Tensor":  # p: [batch head q k]
            m = batch_span_masks().to(p.device, p.dtype)  # [batch k]
            row = p[:, idx, -1, :]  # [batch sel k]
            factor = 1.0 + (iv.scale - 1.0) * m[:, None, :]
            new = row * factor
            if iv.mode == "attention":
                new = new / new.sum(-1, keepdim=True).clamp_min(torch.finfo(p.dtype).tiny)
            p[:, idx, -1, :] = new  # in place: no copy of the full pattern (inference mode)
            return p

        return hook

    return [(hook_name("pattern", layer), make(layer, hs)) for layer, hs in sorted(by_layer.items())]


def intervene_items(bridge_or_model: Any, tokenizer: Any, items: Sequence[Any], intervention: HeadIntervention,
                    template: str = "alpaca", batch_size: int = 8, max_length: int | None = None) -> "pd.DataFrame":
    """Per item: ``logit_diff_base``, ``logit_diff_int``, ``delta_logit_diff``, ``cf_top1_base``,
    ``cf_top1_int``, ``param_top1_base``, ``param_top1_int``, and the context-path contribution of
    the chosen heads before the edit (``heads_span_contrib_base``) — with the intervention's settings
    as columns. Top-1 = the answer's first token is the argmax of the final-position logits.
    """
    import numpy as np
    import pandas as pd

    from fullscale.batching import pad_token_id
    from mechinterp.readout import as_bridge
    from mechinterp.run import collate, run_probe_batch
    from mechinterp.targets import SPANS, prepare_items

    bridge = as_bridge(bridge_or_model, tokenizer)
    pitems = prepare_items(items, tokenizer, template=template, max_length=max_length)
    span_idx = SPANS.index(intervention.span)
    current: dict[str, Any] = {}

    def masks() -> Any:
        return current["mask"]

    hooks = intervention_hooks(bridge, masks, intervention)
    pad_id = pad_token_id(tokenizer)
    base_rows, int_rows = [], []
    for start in range(0, len(pitems), batch_size):
        batch = pitems[start:start + batch_size]
        coll = collate(batch, pad_id, bridge.cfg.device)
        current["mask"] = coll["span_masks"][:, span_idx, :]
        base_rows.append(run_probe_batch(bridge, batch, pad_id))
        int_rows.append(run_probe_batch(bridge, batch, pad_id, extra_hooks=hooks))

    def cat(rows: list[dict[str, Any]], key: str) -> Any:
        return np.concatenate([r[key] for r in rows])

    heads = np.array(intervention.heads)
    base_head = cat(base_rows, "head_contrib")[:, heads[:, 0], heads[:, 1], span_idx].sum(-1)
    df = pd.DataFrame({
        "item_id": [it.item_id for it in pitems], "dataset": [it.dataset for it in pitems],
        "category": [it.category for it in pitems],
        "logit_diff_base": cat(base_rows, "logit_diff"), "logit_diff_int": cat(int_rows, "logit_diff"),
        "cf_top1_base": cat(base_rows, "cf_top1"), "cf_top1_int": cat(int_rows, "cf_top1"),
        "param_top1_base": cat(base_rows, "param_top1"), "param_top1_int": cat(int_rows, "param_top1"),
        "heads_span_contrib_base": base_head,
        "shared_prefix_len": [it.shared_prefix_len for it in pitems],
        "context_token": [it.context_token for it in pitems], "parametric_token": [it.parametric_token for it in pitems],
        "final_norm_scale_base": cat(base_rows, "scale"), "final_norm_scale_int": cat(int_rows, "scale"),
    })
    df["delta_logit_diff"] = df["logit_diff_int"] - df["logit_diff_base"]
    df["mode"] = intervention.mode
    df["scale"] = intervention.scale
    df["span"] = intervention.span
    df["heads"] = ",".join(f"{l}.{h}" for l, h in intervention.heads)
    df["weights"] = getattr(bridge, "cpi_weights", "raw_hf")
    return df


#: The former name of :func:`intervene_items`, kept so that ``from mechinterp.intervene import intervene``
#: still works. The package re-exports only ``intervene_items``: ``mechinterp.intervene`` is this module.
intervene = intervene_items


def summarize_intervention(df: "pd.DataFrame", n_boot: int = 1000, seed: int = 0) -> "pd.DataFrame":
    """Per dataset × category (+ ``ALL``): n, cf accuracy / parametric accuracy / mean logit diff before and
    after, their changes, and paired percentile-bootstrap 95 % intervals of the changes
    (``delta_cf_acc_lo/hi``, ``delta_logit_diff_lo/hi``: items resampled, per-item after − before)."""
    import pandas as pd

    from fullscale.scoring import bootstrap_ci

    full = pd.concat([df, df.assign(category="ALL")], ignore_index=True)
    full["_d_cf"] = full["cf_top1_int"] - full["cf_top1_base"]
    keys = ["dataset", "category", "mode", "scale", "span", "heads"]
    g = full.groupby(keys, sort=False)
    out = g.agg(n=("item_id", "count"), cf_acc_base=("cf_top1_base", "mean"), cf_acc_int=("cf_top1_int", "mean"),
                param_acc_base=("param_top1_base", "mean"), param_acc_int=("param_top1_int", "mean"),
                logit_diff_base=("logit_diff_base", "mean"), logit_diff_int=("logit_diff_int", "mean")).reset_index()
    out["delta_cf_acc"] = out["cf_acc_int"] - out["cf_acc_base"]
    out["delta_logit_diff"] = out["logit_diff_int"] - out["logit_diff_base"]
    for col, src in (("delta_cf_acc", "_d_cf"), ("delta_logit_diff", "delta_logit_diff")):
        cis = [bootstrap_ci(grp[src], n_boot=n_boot, seed=seed) for _, grp in g]
        out[f"{col}_lo"] = [lo for lo, _ in cis]
        out[f"{col}_hi"] = [hi for _, hi in cis]
    return out
