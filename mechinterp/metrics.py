"""The probe's metrics as units: each declares its hooks, the arrays it computes and its table rows.

A :class:`Metric` is one unit of the probe (:func:`mechinterp.run.run_probe_batch` runs every unit of
:data:`METRICS` in one forward pass):

* ``hooks(ctx)`` -> ``[(hook name, fn), ...]``: the hook points it reads, named through
  :func:`mechinterp.hooks.hook_name`; ``fn(tensor, hook)`` writes what it needs into ``ctx.raw``;
* ``finish(ctx)`` -> ``{array name: tensor [batch ...]}``: its arrays after the forward pass (the
  frozen norm scales ``ctx.inv`` / ``ctx.layer_inv`` and the arrays of earlier units are known then);
* ``columns``: its rows of the tidy table (:class:`Column`: component, metric, level, source array);
* ``steps``: how :func:`mechinterp.link.steps_table` summarises its rows per checkpoint (:class:`Step`);
* ``parts`` / ``stage``: arrays that are terms of the residual-stream decomposition, added into
  ``recon`` in the order of ``stage`` (0 embedding, 1 attention, 2 MLP, 3 read-out; stable within a
  stage), which also fixes the float32 summation order.

The table's rows come by level (head × span, per layer, per item), within a level in :data:`METRICS`
order, each unit's columns in its own order.

**Adding a metric** is one new unit plus its test: write ``hooks``/``finish``/``columns`` (see
:data:`HEADS` for a per-layer hook reading the pattern), then pass ``metrics=METRICS + (mine,)`` to
:func:`mechinterp.probe.probe_items` (or append it to :data:`METRICS` to make it a default; its rows
then appear in ``probe.csv`` and, with ``steps``, in ``steps_table``). docs/mechinterp.md
shows a worked example, which tests/mechinterp/test_probe.py runs.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Callable, Literal, Mapping, Optional, Sequence, Union

from cpi.errors import CpiError
from mechinterp.hooks import hook_name
from mechinterp.readout import out_proj_weight
from mechinterp.targets import SPANS

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from mechinterp.readout import Readout
    from mechinterp.targets import ProbeItem

Hook = tuple[str, Callable[..., Any]]
Level = Literal["head_span", "layer", "item"]
#: The row levels of the tidy table, in table order.
LEVELS: tuple[str, ...] = ("head_span", "layer", "item")


@dataclasses.dataclass
class BatchContext:
    """What the units of one batch share (float32 tensors on the model's device).

    ``g`` [batch d_model] / ``const`` [batch]: the logit difference is ``x_final · g / scale + const``;
    ``g_attn``: per layer, the direction the attention output is dotted with (through its post-norm);
    ``span_masks`` [batch span pos] (spans in :data:`mechinterp.targets.SPANS` order); ``c_tok`` /
    ``p_tok`` [batch]; ``raw``: scratch the hooks write into. Known after the forward pass:
    ``logits`` [batch d_vocab] (final position), ``scale`` / ``inv`` [batch] (final-norm scale and its
    inverse), ``post_scale`` / ``layer_inv`` [batch layer] (post-attention norm scales, ``inv /
    post_scale``), ``post_bias`` [batch layer], ``attn_out`` [batch layer] (each attention output
    projected on ``g_attn``), ``attn_bias`` [batch layer] (output-projection bias projected),
    ``recon_terms`` (the arrays ``recon`` adds, in order: :func:`recon_terms`),
    ``arrays``: the arrays of the units finished so far.
    """

    bridge: Any
    ro: "Readout"
    n_layers: int
    n_heads: int
    n_kv: int
    d_head: int
    batch: int
    g: "torch.Tensor"
    const: "torch.Tensor"
    g_attn: list
    span_masks: "torch.Tensor"
    c_tok: "torch.Tensor"
    p_tok: "torch.Tensor"
    raw: dict = dataclasses.field(default_factory=dict)
    logits: Any = None
    scale: Any = None
    inv: Any = None
    post_scale: Any = None
    layer_inv: Any = None
    post_bias: Any = None
    attn_out: Any = None
    attn_bias: Any = None
    recon_terms: list = dataclasses.field(default_factory=list)
    arrays: dict = dataclasses.field(default_factory=dict)

    @property
    def d_model(self) -> int:
        return int(self.g.shape[-1])


@dataclasses.dataclass(frozen=True)
class Column:
    """One kind of row of the tidy probe table.

    ``level``: ``head_span`` (a row per item × layer × head × span, from an array [item layer head
    span]), ``layer`` (per item × layer, head −1, span ``"all"``, from [item layer]) or ``item`` (per
    item, layer −1, head −1, span ``"all"``). ``source``: the array's name, or a function
    ``(arrays, probe items) -> array [item]`` for derived item-level values.
    """

    component: str
    metric: str
    level: Level
    source: Union[str, Callable[[Mapping[str, Any], Sequence["ProbeItem"]], Any]]

    def values(self, arrays: Mapping[str, Any], pitems: Sequence["ProbeItem"]) -> Any:
        """The column's values as a numpy array ([item ...] as the level says)."""
        return arrays[self.source] if isinstance(self.source, str) else self.source(arrays, pitems)


@dataclasses.dataclass(frozen=True)
class Step:
    """A per-checkpoint summary of a probe table's rows (a column of :func:`mechinterp.link.steps_table`).

    Rows ``component`` × ``metric`` (of an aggregated table: one mean over items per row) are combined
    per step with ``how`` (``"mean"`` or ``"sum"`` over layers × heads); with ``per_span`` there is one
    summary per span, named ``name.format(span=...)``, else one over every row, named ``name``.
    """

    name: str
    component: str
    metric: str
    how: Literal["mean", "sum"]
    per_span: bool = False

    def names(self) -> list[str]:
        return [self.name.format(span=s) for s in SPANS] if self.per_span else [self.name]


@dataclasses.dataclass(frozen=True)
class Metric:
    """One unit of the probe (see the module docstring)."""

    name: str
    columns: tuple[Column, ...]
    finish: Callable[[BatchContext], dict]
    hooks: Callable[[BatchContext], list] = lambda ctx: []
    steps: tuple[Step, ...] = ()
    parts: tuple[str, ...] = ()
    stage: int = 0
    doc: str = ""


# ------------------------------------------------------------------------------------------ heads
def _head_hooks(ctx: BatchContext) -> list[Hook]:
    """Per layer: keep the values (``v``), then at the pattern read the final query row's mass on each
    span and each head's span-resolved value contribution ``Σ_{j∈span} A[h,last,j] · v_j^{kv(h)} W_O^h g``."""
    import torch

    B, H, KV, dh = ctx.batch, ctx.n_heads, ctx.n_kv, ctx.d_head
    G = H // KV
    attn = torch.zeros((B, ctx.n_layers, H, len(SPANS)), dtype=torch.float32, device=ctx.g.device)
    ctx.raw["attn"], ctx.raw["head"] = attn, torch.zeros_like(attn)
    ctx.raw["seen_v"] = ctx.raw["seen_pattern"] = 0

    def u_for(layer: int) -> "torch.Tensor":
        """W_O^h g for every head: [batch head d_head]."""
        o = ctx.bridge.blocks[layer].attn.o.original_component
        W = out_proj_weight(o, ctx.d_model, H, dh, layer).view(ctx.d_model, H, dh)
        return torch.einsum("mhd,bm->bhd", W, ctx.g_attn[layer])

    def make(layer: int) -> list[Hook]:
        def hook_v(v: "torch.Tensor", hook: Any) -> None:  # v: [batch pos kv d_head]
            ctx.raw[f"v{layer}"] = v
            ctx.raw["seen_v"] += 1

        def hook_pattern(p: "torch.Tensor", hook: Any) -> None:  # p: [batch head q k]
            a = p[:, :, -1, :].float()  # [batch head k]
            v = ctx.raw.pop(f"v{layer}").float()  # [batch k kv d_head]
            u = u_for(layer).view(B, KV, G, dh)
            proj = torch.einsum("bskd,bkgd->bkgs", v, u).reshape(B, H, -1)  # [batch head k]
            ctx.raw["attn"][:, layer] = torch.einsum("bhs,bns->bhn", a, ctx.span_masks)
            ctx.raw["head"][:, layer] = torch.einsum("bhs,bns->bhn", a * proj, ctx.span_masks)
            ctx.raw["seen_pattern"] += 1

        return [(hook_name("v", layer), hook_v), (hook_name("pattern", layer), hook_pattern)]

    return [h for layer in range(ctx.n_layers) for h in make(layer)]


def _head_finish(ctx: BatchContext) -> dict:
    n = ctx.n_layers
    if ctx.raw["seen_pattern"] != n or ctx.raw["seen_v"] != n:
        raise CpiError(f"architecture {ctx.bridge.cfg.architecture}: hook_pattern/v fired {ctx.raw['seen_pattern']}/"
                       f"{ctx.raw['seen_v']} times for {n} layers (is eager attention active?)")
    head_raw = ctx.raw["head"]
    head_err = ((ctx.attn_out - head_raw.sum((2, 3)) - ctx.attn_bias) * ctx.layer_inv).abs()
    return {"attn": ctx.raw["attn"], "head_contrib": head_raw * ctx.layer_inv.view(ctx.batch, n, 1, 1),
            "head_err": head_err}


#: Attention mass of the final query row on each span, and each head's span-resolved value (OV)
#: contribution to the logit difference; ``head_err`` [batch layer]: |attention output − Σ heads −
#: bias| projected, a per-layer diagnostic of the head decomposition (arrays only, no rows).
HEADS = Metric(
    name="heads", hooks=_head_hooks, finish=_head_finish, parts=("head_contrib",), stage=1,
    columns=(Column("head", "attn", "head_span", "attn"), Column("head", "logit_diff", "head_span", "head_contrib")),
    steps=(Step("attn_{span}", "head", "attn", "mean", per_span=True),
           Step("value_{span}", "head", "logit_diff", "sum", per_span=True)),
    doc="attention mass per span and span-resolved value contribution, per layer x head")


# ------------------------------------------------------------------------------------------ MLPs
def _mlp_hooks(ctx: BatchContext) -> list[Hook]:
    """Each MLP's output at the final position, read after its post-norm where the block has one."""
    import torch

    ctx.raw["mlp"] = torch.zeros((ctx.batch, ctx.n_layers), dtype=torch.float32, device=ctx.g.device)

    def make(layer: int) -> Hook:
        def hook(x: "torch.Tensor", hook: Any) -> None:
            ctx.raw["mlp"][:, layer] = (x[:, -1, :].float() * ctx.g).sum(-1)

        point = "post_mlp_out" if ctx.ro.post_mlp[layer] is not None else "mlp_out"
        return hook_name(point, layer), hook

    return [make(layer) for layer in range(ctx.n_layers)]


MLP = Metric(
    name="mlp", hooks=_mlp_hooks, finish=lambda ctx: {"mlp": ctx.raw["mlp"] * ctx.inv.view(ctx.batch, 1)},
    parts=("mlp",), stage=2, columns=(Column("mlp", "logit_diff", "layer", "mlp"),),
    steps=(Step("mlp", "mlp", "logit_diff", "sum"),),
    doc="each MLP's direct contribution to the logit difference")

#: The attention output-projection biases (and post-attention norm biases), per layer: no hooks.
ATTN_BIAS = Metric(
    name="attn_bias",
    finish=lambda ctx: {"attn_bias": ctx.attn_bias * ctx.layer_inv + ctx.post_bias * ctx.inv.view(ctx.batch, 1)},
    parts=("attn_bias",), stage=1,
    columns=(Column("attn_bias", "logit_diff", "layer", "attn_bias"),),
    steps=(Step("attn_bias", "attn_bias", "logit_diff", "sum"),),
    doc="attention output-projection (and post-attention norm) biases, per layer")


# ------------------------------------------------------------------------------------------ embedding
def _embed_hooks(ctx: BatchContext) -> list[Hook]:
    """The token embedding (and learned positions, where the model has them) at the final position."""
    def hook_embed(x: "torch.Tensor", hook: Any) -> None:
        ctx.raw["embed"] = (x[:, -1, :].float() * ctx.g).sum(-1)

    def hook_pos(x: "torch.Tensor", hook: Any) -> None:
        ctx.raw["pos"] = (x[:, -1, :].float() * ctx.g).sum(-1) if x.shape[0] == ctx.batch else \
            (x[0, -1, :].float() * ctx.g).sum(-1)

    hooks = [(hook_name("embed"), hook_embed)]
    if hasattr(ctx.bridge, "pos_embed"):
        hooks.append((hook_name("pos_embed"), hook_pos))
    return hooks


def _embed_finish(ctx: BatchContext) -> dict:
    return {"embed": (ctx.raw["embed"] + ctx.raw.get("pos", 0.0)) * ctx.inv}


EMBED = Metric(
    name="embed", hooks=_embed_hooks, finish=_embed_finish,
    parts=("embed",), stage=0, columns=(Column("embed", "logit_diff", "item", "embed"),),
    steps=(Step("embed", "embed", "logit_diff", "sum"),),
    doc="the embedding's (and learned positions') direct contribution")

FINAL_BIAS = Metric(
    name="final_bias", finish=lambda ctx: {"const": ctx.const}, parts=("const",), stage=3,
    columns=(Column("final_bias", "logit_diff", "item", "const"),),
    steps=(Step("final_bias", "final_bias", "logit_diff", "sum"),),
    doc="final-norm and unembedding biases (a constant per item)")


# ------------------------------------------------------------------------------------------ the model
def recon_rel_err(arrays: Mapping[str, Any]) -> Any:
    """|reconstructed − real| / max(|real|, 1e-6) per item (numpy)."""
    import numpy as np

    real = arrays["logit_diff"]
    return np.abs(arrays["recon"] - real) / np.maximum(np.abs(real), 1e-6)


def _model_finish(ctx: BatchContext) -> dict:
    """The real logit difference, top-1 of the two tokens, and ``recon``: every unit's parts added in stage order."""
    import torch

    last = ctx.logits
    ar = torch.arange(ctx.batch, device=last.device)
    real = last[ar, ctx.c_tok] - last[ar, ctx.p_tok]
    top = last.argmax(-1)
    recon = None
    for part in ctx.recon_terms:
        x = ctx.arrays[part]
        x = x if x.dim() == 1 else x.sum(tuple(range(1, x.dim())))
        recon = x if recon is None else recon + x
    return {"logit_diff": real, "recon": recon, "scale": ctx.scale, "cf_top1": (top == ctx.c_tok).float(),
            "param_top1": (top == ctx.p_tok).float()}


def _prefers_context(arrays: Mapping[str, Any], pitems: Sequence["ProbeItem"]) -> Any:
    import numpy as np

    return (arrays["logit_diff"] > 0).astype(np.float32)


def _shared_prefix_len(arrays: Mapping[str, Any], pitems: Sequence["ProbeItem"]) -> Any:
    import numpy as np

    return np.array([it.shared_prefix_len for it in pitems], dtype=np.float32)


#: Per item: the model's real logit difference, the reconstruction, the final-norm scale, top-1 of the
#: context / parametric token. It must come after every unit with ``parts``.
MODEL = Metric(
    name="model", finish=_model_finish, stage=3,
    columns=(Column("model", "logit_diff", "item", "logit_diff"),
             Column("model", "recon", "item", "recon"),
             Column("model", "recon_rel_err", "item", lambda a, items: recon_rel_err(a)),
             Column("model", "final_norm_scale", "item", "scale"),
             Column("model", "cf_top1", "item", "cf_top1"),
             Column("model", "param_top1", "item", "param_top1"),
             Column("model", "prefers_context", "item", _prefers_context),
             Column("model", "shared_prefix_len", "item", _shared_prefix_len)),
    steps=(Step("logit_diff", "model", "logit_diff", "mean"), Step("cf_top1", "model", "cf_top1", "mean"),
           Step("param_top1", "model", "param_top1", "mean"), Step("recon_rel_err", "model", "recon_rel_err", "mean")),
    doc="real and reconstructed logit difference, final-norm scale, top-1 of the two tokens")

#: The default units. The table lists rows by level (head × span, then per layer, then per item) and
#: within a level in this order; ``steps_table`` lists per-span summaries first, then the others, in this order.
METRICS: tuple[Metric, ...] = (HEADS, MLP, EMBED, ATTN_BIAS, FINAL_BIAS, MODEL)


def check_metrics(metrics: Sequence[Metric]) -> None:
    """CpiError unless names are unique, ``model`` is present and last among the units with parts, and no
    two units declare the same (component, metric) rows."""
    names = [m.name for m in metrics]
    if len(set(names)) != len(names):
        raise CpiError(f"probe metrics: a unit is listed twice ({', '.join(names)})")
    if "model" not in names:
        raise CpiError("probe metrics: the 'model' unit (real and reconstructed logit difference) is required")
    last_part = max((i for i, m in enumerate(metrics) if m.parts), default=-1)
    if names.index("model") < last_part:
        raise CpiError("probe metrics: 'model' must come after every unit that adds a part of the decomposition")
    rows = [(c.component, c.metric) for m in metrics for c in m.columns]
    dup = sorted({r for r in rows if rows.count(r) > 1})
    if dup:
        raise CpiError(f"probe metrics: rows {dup} are declared by more than one unit")


def recon_terms(metrics: Sequence[Metric]) -> list[str]:
    """The decomposition's terms in the order ``recon`` adds them (by ``stage``, stable)."""
    return [p for m in sorted(metrics, key=lambda m: m.stage) for p in m.parts]


def step_summaries(metrics: Sequence[Metric] = METRICS) -> list[Step]:
    """The summaries :func:`mechinterp.link.steps_table` computes, in its column order (per-span ones first)."""
    steps = [st for m in metrics for st in m.steps]
    return [st for st in steps if st.per_span] + [st for st in steps if not st.per_span]


#: The headline per-step probe metrics (``steps_table`` columns: attention mass and value contribution of
#: the context and the question span, mean / sum over layers x heads) that experiment summaries report.
PROBE_METRICS: tuple[str, ...] = tuple(st.name.format(span=s) for st in HEADS.steps for s in ("context", "question"))
