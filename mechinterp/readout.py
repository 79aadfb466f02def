"""The probe's linear read-out of the residual stream: norms, unembedding, output projections.

The logit difference of two tokens is linear in the residual stream once each norm's scale is frozen
at the final position: ``logit_diff = x_final · g / scale + const`` (:func:`direction`), and under
sandwich norms (Gemma-2/3) a block's attention output enters through its own post-norm the same way.
:func:`readout` reads the final norm, the unembedding and the per-layer post-norms of a bridge as
float32 tensors; which norm form applies comes from the per-architecture table
(:mod:`fullscale.architectures`), cross-checked against the modules the bridge holds.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from cpi.errors import CpiError

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from fullscale.architectures import Architecture


def as_bridge(model: Any, tokenizer: Any) -> Any:
    """A TransformerBridge for ``model`` (returned unchanged if it already is one)."""
    if hasattr(model, "hook_dict") and hasattr(model, "blocks"):
        return model
    from mechinterp.load import bridge_from_model

    return bridge_from_model(model, tokenizer)


@dataclasses.dataclass
class Norm:
    """A normalisation layer as float32 tensors: ``y = (x [− mean x]) / scale(x) ⊙ weight + bias``.

    ``weight`` is the *effective* gain (``1 + w`` for Gemma-style RMSNorm). With the scale
    frozen at the final position, ``y · g = x · direction(g) / scale + bias · g``.
    """

    kind: str                       # "rms" | "layernorm"
    weight: "torch.Tensor"          # [d_model]
    bias: "torch.Tensor | None"     # [d_model]
    eps: float

    def direction(self, g: "torch.Tensor") -> "torch.Tensor":
        """g [batch d_model] -> the direction to dot with the norm's input [batch d_model]."""
        d = g * self.weight
        if self.kind == "layernorm":
            d = d - d.mean(-1, keepdim=True)  # (x - mean x)·d == x·(d - mean d)
        return d

    def const(self, g: "torch.Tensor") -> "torch.Tensor":
        """bias · g [batch] (zeros without a bias)."""
        return g.new_zeros(g.shape[0]) if self.bias is None else g @ self.bias

    def scale(self, x: "torch.Tensor") -> "torch.Tensor":
        """The norm's denominator. x: [batch d_model] float32 -> [batch]."""
        if self.kind == "rms":
            return (x.pow(2).mean(-1) + self.eps).sqrt()
        return (x.var(-1, unbiased=False) + self.eps).sqrt()


def norm_spec(module: Any, offset: bool, what: str, form: str | None = None) -> Norm:
    """Read an RMSNorm / LayerNorm module (or a TransformerLens bridge around one) as a :class:`Norm`.

    ``offset``: the architecture's RMSNorm multiplies by ``1 + weight`` (Gemma). ``form``: the norm
    the architecture table states (``"rms"`` / ``"layernorm"``); a module of the other kind is refused
    (CpiError), so a wrong table row cannot silently give wrong numbers. ``None``: read from the class."""
    import torch

    norm = getattr(module, "original_component", module)
    name = type(norm).__name__.lower()
    weight = norm.weight.detach().float()
    bias = getattr(norm, "bias", None)
    bias = None if bias is None else bias.detach().float()
    eps = getattr(norm, "variance_epsilon", None) or getattr(norm, "eps", None) or 1e-5
    if isinstance(norm, torch.nn.LayerNorm) or ("layernorm" in name and "rms" not in name):
        kind = "layernorm"
    elif "rms" in name:
        kind = "rms"
    else:
        raise CpiError(f"{what} {type(norm).__name__} is not supported by the probe (RMSNorm or LayerNorm)")
    if form is not None and form != kind:
        raise CpiError(f"{what} {type(norm).__name__} is a {kind} norm but the architecture table says {form}")
    if kind == "rms" and offset:
        weight = 1.0 + weight
    return Norm(kind, weight, bias, float(eps))


@dataclasses.dataclass
class Readout:
    """Final norm + unembedding + per-layer post-norms of a bridge, as float32 tensors."""

    final: Norm
    W_U: "torch.Tensor"      # [d_vocab, d_model] (stays in model dtype; rows gathered on demand)
    b_U: "torch.Tensor | None"
    post_attn: list["Norm | None"]  # per layer: norm applied to the attention output before the residual add
    post_mlp: list["Norm | None"]   # per layer: norm applied to the MLP output before the residual add


def bridge_architecture(bridge: Any) -> "Architecture | None":
    """The per-architecture table's row for ``bridge`` (:func:`fullscale.architectures.lookup`), or ``None``."""
    from fullscale.architectures import lookup

    arch = lookup(str(getattr(bridge.cfg, "architecture", "") or ""))
    if arch is None:
        hf_cfg = getattr(getattr(bridge, "original_model", None), "config", None)
        arch = lookup(hf_cfg) if hf_cfg is not None else None
    return arch


def readout(bridge: Any) -> Readout:
    """The final norm, unembedding and per-layer post-norms of ``bridge``, as the probe applies them
    to a residual read-out (CpiError for final-logit soft-capping, an unsupported norm, or modules
    that contradict the architecture table).

    A listed architecture's norm form, ``1 + w`` gain and sandwich norms come from the table
    (:mod:`fullscale.architectures`); an unlisted one (loaded with a warning) falls back to the
    norm classes and TransformerLens's ``rmsnorm_uses_offset``."""
    hf_cfg = getattr(getattr(bridge, "original_model", None), "config", None)
    cap = getattr(hf_cfg, "final_logit_softcapping", None) if hf_cfg is not None else None
    if cap:
        raise CpiError(f"architecture {bridge.cfg.architecture}: final logit soft-capping ({cap}) makes the logit "
                       "difference non-linear in the residual stream; the probe does not handle it")
    arch = bridge_architecture(bridge)
    if arch is None:
        offset, form = bool(getattr(bridge.cfg, "rmsnorm_uses_offset", False)), None
    else:
        offset, form = arch.rmsnorm_offset, arch.norm
    final = norm_spec(bridge.ln_final, offset, "final norm", form)
    post_attn: list[Norm | None] = []
    post_mlp: list[Norm | None] = []
    for layer, blk in enumerate(bridge.blocks):
        pa, pm = getattr(blk, "ln1_post", None), getattr(blk, "ln2_post", None)
        if arch is not None and (pa is not None or pm is not None) != arch.sandwich_norms:
            raise CpiError(f"architecture {arch.architecture}: layer {layer} "
                           f"{'has' if pa is not None or pm is not None else 'lacks'} post-attention/post-feedforward "
                           f"norms but the architecture table says sandwich_norms={str(arch.sandwich_norms).lower()}")
        post_attn.append(None if pa is None else norm_spec(pa, offset, f"layer {layer} post-attention norm", form))
        post_mlp.append(None if pm is None else norm_spec(pm, offset, f"layer {layer} post-feedforward norm", form))
    lm = bridge.unembed.original_component
    b_U = getattr(lm, "bias", None)
    return Readout(final, lm.weight.detach(), None if b_U is None else b_U.detach().float(), post_attn, post_mlp)


def norm_scale(ro: Readout, x: "torch.Tensor") -> "torch.Tensor":
    """Final-norm denominator at the final position. x: [batch d_model] float32 -> [batch]."""
    return ro.final.scale(x)


def direction(ro: Readout, c_tok: "torch.Tensor", p_tok: "torch.Tensor") -> tuple["torch.Tensor", "torch.Tensor"]:
    """Residual-space direction g [batch d_model] and constant [batch] of the logit difference.

    logit_diff = x_final · g / scale + const, with scale the final-norm denominator.
    """
    du = (ro.W_U[c_tok].float() - ro.W_U[p_tok].float())  # [batch d_model]
    g = ro.final.direction(du)
    const = ro.final.const(du)
    if ro.b_U is not None:
        const = const + ro.b_U[c_tok] - ro.b_U[p_tok]
    return g, const


def out_proj_weight(o: Any, d_model: int, n_heads: int, d_head: int, layer: int) -> "torch.Tensor":
    """The attention output projection as a float32 [d_model, head*d_head] matrix.

    ``nn.Linear`` stores [out, in]; GPT-2's ``transformers.pytorch_utils.Conv1D`` stores [in, out]
    (its forward is ``x @ W + b``), so it is transposed. Any other shape is refused."""
    W = o.weight.detach().float()
    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:  # pragma: no cover - transformers always ships it
        Conv1D = ()  # type: ignore[assignment]
    if isinstance(o, Conv1D):
        W = W.t()
    if tuple(W.shape) != (d_model, n_heads * d_head):
        raise CpiError(f"layer {layer}: attention output projection {type(o).__name__} has weight shape "
                       f"{tuple(o.weight.shape)}, expected [d_model={d_model}, heads*d_head={n_heads * d_head}]")
    return W


def attn_geometry(bridge: Any) -> tuple[int, int, int]:
    """``(n_heads, n_key_value_heads, d_head)`` of a bridge (grouped-query attention: ``n_kv < n_heads``)."""
    cfg = bridge.cfg
    n_heads = int(cfg.n_heads)
    n_kv = int(getattr(cfg, "n_key_value_heads", None) or n_heads)
    d_head = int(cfg.d_head)
    if n_heads % n_kv:
        raise CpiError(f"n_heads={n_heads} is not a multiple of n_key_value_heads={n_kv}")
    return n_heads, n_kv, d_head
