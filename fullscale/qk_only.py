"""QK-only finetuning (the paper's mitigation) and LoRA target-module checks.

:func:`apply_qk_only` freezes every parameter of a causal LM except its
attention query and key projections. Which modules those are, and how they are laid out, is the
model's row of the architecture table (:mod:`fullscale.architectures`: columns ``attention`` and
``qk_params``), so a new architecture with a known layout is one row there:

- ``separate`` projections (Llama, Mistral, Gemma, ...): the modules named in ``qk_params``
  (``q_proj``/``k_proj``) train, weights and biases. An architecture without a row (Qwen, OPT, ...)
  is treated as ``separate`` with the names of the table's separate rows;
- ``fused_neox``, GPT-NeoX / Pythia fused ``query_key_value`` (an ``nn.Linear`` with
  ``3 * d_model`` output rows): in ``GPTNeoXAttention.forward`` the output is
  viewed as ``(batch, pos, head_index, 3 * d_head)`` and chunked into q, k, v,
  so the rows are laid out ``[head_index, 3, d_head]`` (interleaved per head,
  *not* ``[q | k | v]``). The whole matrix has ``requires_grad`` but a
  gradient hook zeroes the value rows' gradient, so only the Q and K slices
  update;
- ``fused_gpt2``, GPT-2 fused ``c_attn`` (``Conv1D``, weight ``(d_model, 3 * d_model)``):
  columns ``[q | k | v]``; the value columns' gradient is zeroed.

With a zero gradient Adam/AdamW leave a slice bit-identical *only without
weight decay*; the finetuning Trainer therefore excludes masked (fused)
parameters from weight decay (:func:`masked_parameter_names`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Sequence

from cpi.errors import CpiError
from fullscale.architectures import architectures, lookup

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QKPlan:
    """Which parameters train under QK-only: ``full`` train entirely; ``masked`` maps a
    parameter name to the 1-D boolean mask of its trainable rows (``dim=0``) or columns (``dim=1``)."""

    full: tuple[str, ...]
    masked: tuple[tuple[str, int, Any], ...]  # (param name, dim, bool mask tensor)
    kind: str

    @property
    def trainable(self) -> tuple[str, ...]:
        return self.full + tuple(name for name, _, _ in self.masked)


def neox_qk_row_mask(n_heads: int, d_head: int):
    """Boolean mask over the ``3 * n_heads * d_head`` output rows of a GPT-NeoX fused
    ``query_key_value``: True for query and key rows. Layout ``[head_index, 3, d_head]``."""
    import einops
    import torch

    mask = torch.zeros(n_heads, 3, d_head, dtype=torch.bool)
    mask[:, :2, :] = True  # 0 = query, 1 = key, 2 = value
    return einops.rearrange(mask, "head_index three d_head -> (head_index three d_head)")


def _qk_layout(model: Any) -> tuple[str, tuple[str, ...], str]:
    """(attention layout, query/key leaf names, what the names come from) of ``model``'s table row; an
    architecture without a row: ``separate`` with the names of every separate row."""
    arch = lookup(getattr(model, "config", None))
    if arch is not None:
        return arch.attention, arch.qk_params, f"architecture {arch.architecture}"
    names = tuple(dict.fromkeys(n for a in architectures() if a.attention == "separate" for n in a.qk_params))
    return "separate", names, "an architecture with no row in architectures.csv"


def plan_qk_only(model: Any) -> QKPlan:
    """Find the query/key parameters of ``model`` (see module docstring); CpiError if none."""
    import torch

    layout, qk_names, source = _qk_layout(model)
    names = dict(model.named_parameters())
    modules = dict(model.named_modules())
    full: list[str] = []
    masked: list[tuple[str, int, Any]] = []
    for mname, module in modules.items():
        if mname.rsplit(".", 1)[-1] not in qk_names or not hasattr(module, "weight"):
            continue
        if layout == "separate":
            full += [f"{mname}.{p}" for p, _ in module.named_parameters(recurse=False)]
        elif layout == "fused_neox":
            parent = modules[mname.rsplit(".", 1)[0]] if "." in mname else model
            d_head = int(getattr(parent, "head_size"))
            n_heads = module.out_features // (3 * d_head)
            rows = neox_qk_row_mask(n_heads, d_head)
            for p, _ in module.named_parameters(recurse=False):
                masked.append((f"{mname}.{p}", 0, rows))
        elif layout == "fused_gpt2":
            d3 = module.weight.shape[1]
            cols = torch.zeros(d3, dtype=torch.bool)
            cols[: 2 * d3 // 3] = True
            masked.append((f"{mname}.weight", 1, cols))
            if getattr(module, "bias", None) is not None:
                masked.append((f"{mname}.bias", 0, cols))
    full = [n for n in full if n in names]
    if not full and not masked:
        candidates = sorted({n.rsplit(".", 1)[-1] for n, m in modules.items() if "attn" in n.lower() or "attention" in n.lower()})
        raise CpiError(
            f"qk_only: cannot find query/key projections in {type(model).__name__} "
            f"(looked for {layout} {'/'.join(qk_names)}, from {source}; "
            f"attention modules seen: {', '.join(candidates[:20]) or 'none'}; a new architecture is a row of "
            f"fullscale/data/architectures.csv)"
        )
    kind = "fused" if masked and not full else ("separate" if full and not masked else "mixed")
    return QKPlan(tuple(full), tuple(masked), kind)


def apply_qk_only(model: Any) -> QKPlan:
    """Freeze everything but the query/key projections of ``model`` (in place) and return the plan.

    Parameters with a partial mask get a gradient hook ``grad * mask`` so the
    value slice of a fused QKV matrix receives an exactly-zero gradient.
    """
    import torch

    plan = plan_qk_only(model)
    params = dict(model.named_parameters())
    for p in params.values():
        p.requires_grad_(False)
    for name in plan.full:
        params[name].requires_grad_(True)
    for name, dim, mask in plan.masked:
        p = params[name]
        p.requires_grad_(True)
        shape = [1] * p.dim()
        shape[dim] = -1
        m = mask.view(shape).to(device=p.device)

        def hook(grad: "torch.Tensor", m: "torch.Tensor" = m) -> "torch.Tensor":
            return grad * m.to(device=grad.device, dtype=grad.dtype)

        p.register_hook(hook)
    n_train = sum(params[n].numel() for n in plan.full) + sum(
        int(mask.sum()) * (params[n].numel() // mask.numel()) for n, _, mask in plan.masked)
    n_all = sum(p.numel() for p in params.values())
    log.info("qk_only (%s): %d of %d parameters train (%.2f%%)", plan.kind, n_train, n_all, 100 * n_train / max(n_all, 1))
    return plan


def masked_parameter_names(plan: QKPlan | None) -> set[str]:
    """Names of partially-trainable parameters (to exclude from weight decay)."""
    return {name for name, _, _ in plan.masked} if plan is not None else set()


# ---------------------------------------------------------------------------
# LoRA targets


def lora_candidates(model: Any) -> list[str]:
    """Leaf names of the modules LoRA can wrap (Linear / Conv1D / Embedding), except ``lm_head``."""
    ok = ("Linear", "Conv1D", "Embedding", "Conv2d", "Conv1d")
    return sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules()
                   if n and type(m).__name__ in ok and not n.endswith("lm_head")})


def validate_lora_targets(model: Any, targets: Sequence[str]) -> None:
    """Raise CpiError naming the first LoRA target module that matches nothing in ``model``.

    A target matches a module whose full name equals it or ends with ``"." + target``
    (PEFT's rule for a list of names); ``"all-linear"`` is PEFT's shorthand and always valid.
    """
    names = [n for n, _ in model.named_modules() if n]
    for t in targets:
        if t == "all-linear":
            continue
        if not any(n == t or n.endswith("." + t) for n in names):
            raise CpiError(
                f"lora.target_modules: '{t}' does not exist in {type(model).__name__} "
                f"(candidates: {', '.join(lora_candidates(model))})"
            )
