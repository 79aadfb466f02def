"""The TransformerLens 4.x hook points the probes read or edit, by one name each.

Every hook string of :mod:`mechinterp` is made here (:func:`hook_name`), from the table
:data:`HOOK_POINTS` (point -> ``TransformerBridge`` hook name, ``{layer}`` filled in for per-layer
points), so a renamed hook in a TransformerLens release is one edit:

>>> hook_name("pattern", 3)
'blocks.3.attn.hook_pattern'
>>> hook_name("final_in")
'ln_final.hook_in'
"""

from __future__ import annotations

from typing import Any, Sequence

from cpi.errors import CpiError

#: point -> bridge hook name. Shapes (TransformerLens names) of what the hook sees.
HOOK_POINTS: dict[str, str] = {
    "v": "blocks.{layer}.attn.v.hook_out",              # values: batch pos kv_head d_head
    "pattern": "blocks.{layer}.attn.hook_pattern",      # attention pattern: batch head_index q_pos k_pos
    "attn_out": "blocks.{layer}.attn.hook_out",         # attention output (before any post-norm): batch pos d_model
    "mlp_out": "blocks.{layer}.mlp.hook_out",           # MLP output: batch pos d_model
    "post_mlp_out": "blocks.{layer}.ln2_post.hook_out",  # MLP output after its post-norm (Gemma-2/3)
    "embed": "embed.hook_out",                          # token embedding (scaled where the model scales it)
    "pos_embed": "pos_embed.hook_out",                  # learned positions (GPT-2): batch (or 1) pos d_model
    "final_in": "ln_final.hook_in",                     # residual stream entering the final norm: batch pos d_model
}


def hook_name(point: str, layer: int | None = None) -> str:
    """The bridge hook name of ``point`` (a key of :data:`HOOK_POINTS`), at ``layer`` for per-layer points.

    CpiError for an unknown point, a per-layer point without a layer, or a layer given to a
    model-level point."""
    try:
        pattern = HOOK_POINTS[point]
    except KeyError:
        raise CpiError(f"unknown hook point {point!r} (known: {', '.join(HOOK_POINTS)})") from None
    per_layer = "{layer}" in pattern
    if per_layer and layer is None:
        raise CpiError(f"hook point {point!r} is per layer: give a layer")
    if not per_layer and layer is not None:
        raise CpiError(f"hook point {point!r} is model-level: it takes no layer (got {layer})")
    return pattern.format(layer=int(layer)) if per_layer else pattern


def missing_hooks(bridge: Any, names: Sequence[str]) -> list[str]:
    """The hook names in ``names`` that ``bridge`` does not have (in order, without repeats)."""
    return list(dict.fromkeys(n for n in names if n not in bridge.hook_dict))
