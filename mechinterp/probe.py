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
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

from cpi.errors import CpiError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    import torch

log = logging.getLogger(__name__)

#: The four disjoint spans, in table order.
SPANS: tuple[str, ...] = ("context", "question", "bos", "other")
#: Columns of the per-item tidy table returned by :func:`probe_items`.
PROBE_COLUMNS: tuple[str, ...] = (
    "item_id", "dataset", "category", "component", "layer", "head", "span", "metric", "value", "weights",
)
#: Columns of :func:`targets_table` (which tokens the logit difference compares, per item).
TARGET_COLUMNS: tuple[str, ...] = (
    "item_id", "dataset", "category", "status", "reason", "shared_prefix_len", "shared_prefix", "context_token",
    "context_piece", "parametric_token", "parametric_piece", "answer_forms",
)


@dataclasses.dataclass(frozen=True)
class ProbeItem:
    """One tokenised prompt with its spans and the two answer tokens the probe compares.

    ``input_ids``: what the model reads — the prompt tokens (incl. BOS if any) followed by the
    ``shared_prefix_len`` tokens that both answers start with (see :func:`answer_target`);
    ``spans``: half-open token ranges for ``"context"`` and ``"question"`` in the prompt (others
    are derived; the shared-prefix tokens are ``other``); ``context_token``/``parametric_token``:
    the first token where the two answers' tokenizations (as continuations of the prompt)
    differ — the logit difference is read at the last position of ``input_ids``.
    """

    item_id: str
    input_ids: tuple[int, ...]
    spans: Mapping[str, tuple[int, int]]
    context_token: int
    parametric_token: int
    has_bos: bool = False
    dataset: str = ""
    category: str = ""
    shared_prefix_len: int = 0
    answer_forms: str = ""  # "joint,joint" etc.: how each answer's tokens were found (answer_continuation)

    def span_mask(self) -> list[str]:
        """Per-token span label (``SPANS`` names) for this prompt."""
        n = len(self.input_ids)
        labels = ["other"] * n
        if self.has_bos and n:
            labels[0] = "bos"
        for name in ("question", "context"):  # context wins on (unexpected) overlap
            lo, hi = self.spans.get(name, (0, 0))
            for j in range(max(lo, 0), min(hi, n)):
                labels[j] = name
        return labels


class UndefinedTargetError(CpiError):
    """The two answers have no token at which they differ (identical tokenizations, or one is a
    prefix of the other): the item has no logit-difference target and is dropped."""


@dataclasses.dataclass(frozen=True)
class AnswerTarget:
    """Where the probe reads an item's logit difference.

    ``shared``: the tokens both answers start with (appended to the prompt), ``context_token`` /
    ``parametric_token``: the first differing tokens, ``context_form`` / ``parametric_form``:
    ``"joint"`` (tokens of prompt + answer past the prompt) or ``"alone"`` (the prompt's tokens
    merge with the answer, so the answer was tokenized on its own).
    """

    shared: tuple[int, ...]
    context_token: int
    parametric_token: int
    context_form: str
    parametric_form: str


# --------------------------------------------------------------------------------------------
# items
# --------------------------------------------------------------------------------------------
def answer_continuation(tokenizer: Any, prompt_text: str, prompt_ids: Sequence[int], answer: str,
                        item_id: str) -> tuple[list[int], str]:
    """The tokens of ``answer`` when generated right after the prompt, and how they were found.

    Tokenises ``prompt + sep + answer`` (``sep`` = one space unless the prompt ends in
    whitespace) and keeps the tokens past the prompt (``"joint"``), so the tokenizer's
    leading-space convention is respected. If the prompt's own tokens merge with the answer,
    the answer is tokenized on its own (``sep + answer``, special and leading whitespace-only
    tokens removed; ``"alone"``). An answer that tokenizes to nothing raises CpiError naming
    the item.
    """
    if not answer or not answer.strip():
        raise CpiError(f"item {item_id!r}: answer {answer!r} tokenizes to nothing")
    sep = "" if (not prompt_text or prompt_text[-1].isspace()) else " "
    n = len(prompt_ids)
    for special in (True, False):
        full = list(tokenizer(prompt_text + sep + answer, add_special_tokens=special)["input_ids"])
        if len(full) > n and full[:n] == list(prompt_ids):
            return [int(t) for t in full[n:]], "joint"
    specials = set(getattr(tokenizer, "all_special_ids", []) or [])
    alone = [int(t) for t in tokenizer(sep + answer, add_special_tokens=False)["input_ids"] if t not in specials]
    while alone and not tokenizer.decode([alone[0]]).strip():
        alone = alone[1:]
    if not alone:
        raise CpiError(f"item {item_id!r}: answer {answer!r} tokenizes to nothing")
    return alone, "alone"


def answer_target(tokenizer: Any, prompt_text: str, prompt_ids: Sequence[int], context_answer: str,
                  parametric_answer: str, item_id: str) -> AnswerTarget:
    """The first token where the two answers' continuations of the prompt differ.

    Both answers are tokenized as continuations of the prompt (:func:`answer_continuation`);
    their longest common prefix (e.g. ``" "``, ``"1"``, ``"8"`` for ``1867`` vs ``1871``, or
    ``"K"`` for ``Kharkiv`` vs ``Kyiv``) is appended to the prompt and the two tokens right
    after it are compared. Why this target: with a shared prefix ``s``,
    ``log P(c | prompt) − log P(p | prompt) = [logit(c_k) − logit(p_k)] at prompt+s + (terms of
    the answers' remaining tokens)`` — the prefix's own terms are identical and cancel, so the
    logit difference at the divergence position is the first non-zero term of the full-answer
    log-prob difference, and it is still one residual stream at one position (the
    decomposition stays exact and linear). Raises :class:`UndefinedTargetError` when the
    answers never differ (identical tokenizations, or one is a prefix of the other).
    """
    c_seq, c_form = answer_continuation(tokenizer, prompt_text, prompt_ids, context_answer, item_id)
    p_seq, p_form = answer_continuation(tokenizer, prompt_text, prompt_ids, parametric_answer, item_id)
    k = 0
    while k < min(len(c_seq), len(p_seq)) and c_seq[k] == p_seq[k]:
        k += 1
    if k == len(c_seq) or k == len(p_seq):
        what = "tokenize identically" if len(c_seq) == len(p_seq) else "are prefixes of one another"
        raise UndefinedTargetError(f"item {item_id!r}: answers {context_answer!r} and {parametric_answer!r} {what} "
                                   f"(tokens {c_seq} / {p_seq}); no token tells them apart")
    return AnswerTarget(tuple(c_seq[:k]), c_seq[k], p_seq[k], c_form, p_form)


def prepare_items(items: Iterable[Any], tokenizer: Any, template: str = "alpaca",
                  max_length: int | None = None) -> list[ProbeItem]:
    """Turn :class:`fullscale.conflicts.ConflictItem`s (or ready ``ProbeItem``s) into ``ProbeItem``s.

    Prompts come from :func:`fullscale.prompts.format_prompt` (same templates as the
    evaluation); the answers' shared prefix is appended (:func:`answer_target`). Items whose
    answers have no differing token are dropped, with a WARNING giving their count (see
    :func:`targets_table` for the per-item record). A prompt whose context span cannot be
    located raises CpiError naming the item.
    """
    out, dropped = _prepare(items, tokenizer, template, max_length)
    if dropped:
        log.warning("probe: dropped %d of %d items whose two answers have no differing token (%s%s)",
                    len(dropped), len(out) + len(dropped), ", ".join(d[0].id for d in dropped[:5]),
                    ", ..." if len(dropped) > 5 else "")
    return out


def _prepare(items: Iterable[Any], tokenizer: Any, template: str, max_length: int | None
             ) -> tuple[list[ProbeItem], list[tuple[Any, str]]]:
    """(probe items, [(dropped ConflictItem, reason)])."""
    out: list[ProbeItem] = []
    dropped: list[tuple[Any, str]] = []
    for item in items:
        if isinstance(item, ProbeItem):
            out.append(item)
            continue
        try:
            out.append(_probe_item(item, tokenizer, template, max_length))
        except UndefinedTargetError as exc:
            dropped.append((item, str(exc)))
    for it in out:
        _check_item(it)
    return out, dropped


def _probe_item(item: Any, tokenizer: Any, template: str, max_length: int | None) -> ProbeItem:
    """Format one ConflictItem, locate its spans, append the answers' shared prefix."""
    from fullscale.prompts import format_prompt

    fp = format_prompt(item, tokenizer, template=template, with_context=True, max_length=max_length)
    ctx = fp.spans.get("context")
    if ctx is None or ctx[1] <= ctx[0]:
        raise CpiError(f"item {item.id!r}: context span could not be located in the prompt's tokens")
    spans = {"context": tuple(ctx)}
    if "question" in fp.spans:
        spans["question"] = tuple(fp.spans["question"])
    tg = answer_target(tokenizer, fp.text, fp.input_ids, item.context_answer, item.parametric_answer, item.id)
    return ProbeItem(item_id=item.id, input_ids=tuple(fp.input_ids) + tg.shared, spans=spans,
                     context_token=tg.context_token, parametric_token=tg.parametric_token, has_bos=bool(fp.has_bos),
                     dataset=item.dataset, category=item.category, shared_prefix_len=len(tg.shared),
                     answer_forms=f"{tg.context_form},{tg.parametric_form}")


def targets_table(items: Iterable[Any], tokenizer: Any, template: str = "alpaca",
                  max_length: int | None = None) -> "pd.DataFrame":
    """Per item, which tokens the probe compares: ``item_id, dataset, category, status`` (``used`` /
    ``dropped``), ``reason``, ``shared_prefix_len``, ``shared_prefix`` (decoded), ``context_token``,
    ``context_piece``, ``parametric_token``, ``parametric_piece`` (ids and decoded strings; -1 / ""
    for dropped items), ``answer_forms`` (``joint`` / ``alone`` per answer, see
    :func:`answer_continuation`)."""
    import pandas as pd

    used, dropped = _prepare(items, tokenizer, template, max_length)
    rows = []
    for it in used:
        shared = it.input_ids[len(it.input_ids) - it.shared_prefix_len:] if it.shared_prefix_len else ()
        rows.append({"item_id": it.item_id, "dataset": it.dataset, "category": it.category, "status": "used",
                     "reason": "", "shared_prefix_len": it.shared_prefix_len,
                     "shared_prefix": tokenizer.decode(list(shared)) if shared else "",
                     "context_token": it.context_token, "context_piece": tokenizer.decode([it.context_token]),
                     "parametric_token": it.parametric_token,
                     "parametric_piece": tokenizer.decode([it.parametric_token]), "answer_forms": it.answer_forms})
    for item, reason in dropped:
        rows.append({"item_id": item.id, "dataset": item.dataset, "category": item.category, "status": "dropped",
                     "reason": reason, "shared_prefix_len": -1, "shared_prefix": "", "context_token": -1,
                     "context_piece": "", "parametric_token": -1, "parametric_piece": "", "answer_forms": ""})
    return pd.DataFrame(rows, columns=TARGET_COLUMNS)


def _check_item(it: ProbeItem) -> None:
    n = len(it.input_ids)
    if n == 0:
        raise CpiError(f"item {it.item_id!r}: empty prompt")
    ctx = it.spans.get("context")
    if ctx is None or not (0 <= ctx[0] < ctx[1] <= n):
        raise CpiError(f"item {it.item_id!r}: context span {ctx} could not be located in the {n} prompt tokens")
    for name, (lo, hi) in it.spans.items():
        if not (0 <= lo <= hi <= n):
            raise CpiError(f"item {it.item_id!r}: {name} span ({lo}, {hi}) outside the {n} prompt tokens")


# --------------------------------------------------------------------------------------------
# model plumbing
# --------------------------------------------------------------------------------------------
def as_bridge(model: Any, tokenizer: Any) -> Any:
    """A TransformerBridge for ``model`` (returned unchanged if it already is one)."""
    if hasattr(model, "hook_dict") and hasattr(model, "blocks"):
        return model
    from mechinterp.load import bridge_from_model

    return bridge_from_model(model, tokenizer)


@dataclasses.dataclass
class _Norm:
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


def _norm_spec(module: Any, offset: bool, what: str) -> _Norm:
    """Read an RMSNorm / LayerNorm module (or a TransformerLens bridge around one) as a :class:`_Norm`.

    ``offset``: the architecture's RMSNorm multiplies by ``1 + weight`` (Gemma)."""
    import torch

    norm = getattr(module, "original_component", module)
    name = type(norm).__name__.lower()
    weight = norm.weight.detach().float()
    bias = getattr(norm, "bias", None)
    bias = None if bias is None else bias.detach().float()
    eps = getattr(norm, "variance_epsilon", None) or getattr(norm, "eps", None) or 1e-5
    if isinstance(norm, torch.nn.LayerNorm) or ("layernorm" in name and "rms" not in name):
        return _Norm("layernorm", weight, bias, float(eps))
    if "rms" in name:
        if offset or "gemma" in name:
            weight = 1.0 + weight
        return _Norm("rms", weight, bias, float(eps))
    raise CpiError(f"{what} {type(norm).__name__} is not supported by the probe (RMSNorm or LayerNorm)")


@dataclasses.dataclass
class _Readout:
    """Final norm + unembedding + per-layer post-norms of a bridge, as float32 tensors."""

    final: _Norm
    W_U: "torch.Tensor"      # [d_vocab, d_model] (stays in model dtype; rows gathered on demand)
    b_U: "torch.Tensor | None"
    post_attn: list["_Norm | None"]  # per layer: norm applied to the attention output before the residual add
    post_mlp: list["_Norm | None"]   # per layer: norm applied to the MLP output before the residual add


def readout(bridge: Any) -> _Readout:
    """The final norm, unembedding and per-layer post-norms of ``bridge``, as the probe applies them
    to a residual read-out (CpiError for final-logit soft-capping or an unsupported norm)."""
    hf_cfg = getattr(getattr(bridge, "original_model", None), "config", None)
    cap = getattr(hf_cfg, "final_logit_softcapping", None) if hf_cfg is not None else None
    if cap:
        raise CpiError(f"architecture {bridge.cfg.architecture}: final logit soft-capping ({cap}) makes the logit "
                       "difference non-linear in the residual stream; the probe does not handle it")
    offset = bool(getattr(bridge.cfg, "rmsnorm_uses_offset", False))
    final = _norm_spec(bridge.ln_final, offset, "final norm")
    post_attn: list[_Norm | None] = []
    post_mlp: list[_Norm | None] = []
    for layer, blk in enumerate(bridge.blocks):
        pa, pm = getattr(blk, "ln1_post", None), getattr(blk, "ln2_post", None)
        post_attn.append(None if pa is None else _norm_spec(pa, offset, f"layer {layer} post-attention norm"))
        post_mlp.append(None if pm is None else _norm_spec(pm, offset, f"layer {layer} post-feedforward norm"))
    lm = bridge.unembed.original_component
    b_U = getattr(lm, "bias", None)
    return _Readout(final, lm.weight.detach(), None if b_U is None else b_U.detach().float(), post_attn, post_mlp)


def _norm_scale(ro: _Readout, x: "torch.Tensor") -> "torch.Tensor":
    """Final-norm denominator at the final position. x: [batch d_model] float32 -> [batch]."""
    return ro.final.scale(x)


def _direction(ro: _Readout, c_tok: "torch.Tensor", p_tok: "torch.Tensor") -> tuple["torch.Tensor", "torch.Tensor"]:
    """Residual-space direction g [batch d_model] and constant [batch] of the logit difference.

    logit_diff = x_final · g / scale + const, with scale the final-norm denominator.
    """
    du = (ro.W_U[c_tok].float() - ro.W_U[p_tok].float())  # [batch d_model]
    g = ro.final.direction(du)
    const = ro.final.const(du)
    if ro.b_U is not None:
        const = const + ro.b_U[c_tok] - ro.b_U[p_tok]
    return g, const


def _out_proj_weight(o: Any, d_model: int, n_heads: int, d_head: int, layer: int) -> "torch.Tensor":
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


def run_probe_batch(bridge: Any, batch: Sequence[ProbeItem], pad_id: int,
                    extra_hooks: Sequence[tuple[str, Callable]] = ()) -> dict[str, Any]:
    """Run one left-padded batch through the bridge with the probe's hooks; return float32 numpy arrays.

    Keys: ``attn`` [batch layer head span], ``head_contrib`` [batch layer head span],
    ``mlp`` [batch layer], ``attn_bias`` [batch layer], ``embed`` [batch],
    ``const`` [batch], ``logit_diff`` (real) [batch], ``recon`` [batch], ``scale`` [batch],
    ``cf_top1``/``param_top1`` [batch] (argmax over the vocabulary is the context/parametric
    answer's divergent token), ``head_err`` [batch layer] (|attention output − Σ heads − bias|
    projected, a per-layer diagnostic of the head decomposition).

    Architectures with sandwich norms (Gemma-2/3: a norm on each block's attention and MLP
    output before the residual add) are handled like the final norm: each post-attention
    norm's scale is frozen at the final position, so a head's contribution is
    ``Σ_j A v_j W_O^h · (w_post ⊙ g) / s_post / s_final``; the MLP's contribution is read after
    its post-norm. ``extra_hooks`` are added *before* the probe's own (interventions: the probe
    then sees the edited pattern).
    """
    import torch

    n_layers = int(bridge.cfg.n_layers)
    H, KV, dh = attn_geometry(bridge)
    G = H // KV
    device = bridge.cfg.device
    ro = readout(bridge)
    t = collate(batch, pad_id, device)
    B = t["input_ids"].shape[0]
    g, const = _direction(ro, t["c_tok"], t["p_tok"])  # [batch d_model], [batch]
    d_model = g.shape[-1]
    # per layer: the direction the attention output is dotted with (through its post-norm, if any)
    g_attn = [g if pa is None else pa.direction(g) for pa in ro.post_attn]
    span_masks = t["span_masks"]

    attn = torch.zeros((B, n_layers, H, len(SPANS)), dtype=torch.float32, device=device)
    head_raw = torch.zeros_like(attn)
    mlp_raw = torch.zeros((B, n_layers), dtype=torch.float32, device=device)
    attn_out_raw = torch.zeros((B, n_layers), dtype=torch.float32, device=device)
    bias_raw = torch.zeros((B, n_layers), dtype=torch.float32, device=device)
    post_scale = torch.ones((B, n_layers), dtype=torch.float32, device=device)  # frozen post-attention norm scales
    state: dict[str, Any] = {}
    seen: dict[str, int] = {"pattern": 0, "v": 0}

    def u_for(layer: int) -> "torch.Tensor":
        """W_O^h g for every head: [batch head d_head]."""
        o = bridge.blocks[layer].attn.o.original_component
        W = _out_proj_weight(o, d_model, H, dh, layer).view(d_model, H, dh)
        if getattr(o, "bias", None) is not None:
            bias_raw[:, layer] = g_attn[layer] @ o.bias.detach().float()
        return torch.einsum("mhd,bm->bhd", W, g_attn[layer])

    def hook_v(v: "torch.Tensor", hook: Any, layer: int) -> None:  # v: [batch pos kv d_head]
        state[f"v{layer}"] = v
        seen["v"] += 1

    def hook_pattern(p: "torch.Tensor", hook: Any, layer: int) -> None:  # p: [batch head q k]
        a = p[:, :, -1, :].float()  # [batch head k]
        v = state.pop(f"v{layer}").float()  # [batch k kv d_head]
        u = u_for(layer).view(B, KV, G, dh)
        proj = torch.einsum("bskd,bkgd->bkgs", v, u).reshape(B, H, -1)  # [batch head k]
        attn[:, layer] = torch.einsum("bhs,bns->bhn", a, span_masks)
        head_raw[:, layer] = torch.einsum("bhs,bns->bhn", a * proj, span_masks)
        seen["pattern"] += 1

    def hook_attn_out(x: "torch.Tensor", hook: Any, layer: int) -> None:
        x = x[:, -1, :].float()
        attn_out_raw[:, layer] = (x * g_attn[layer]).sum(-1)
        if ro.post_attn[layer] is not None:
            post_scale[:, layer] = ro.post_attn[layer].scale(x)

    def hook_mlp_out(x: "torch.Tensor", hook: Any, layer: int) -> None:
        mlp_raw[:, layer] = (x[:, -1, :].float() * g).sum(-1)

    def hook_embed(x: "torch.Tensor", hook: Any) -> None:
        state["embed"] = (x[:, -1, :].float() * g).sum(-1)

    def hook_pos(x: "torch.Tensor", hook: Any) -> None:
        state["pos"] = (x[:, -1, :].float() * g).sum(-1) if x.shape[0] == B else (x[0, -1, :].float() * g).sum(-1)

    def hook_final(x: "torch.Tensor", hook: Any) -> None:
        state["resid"] = x[:, -1, :].float()

    hooks: list[tuple[str, Callable]] = list(extra_hooks)
    for layer in range(n_layers):
        mlp_point = f"blocks.{layer}.ln2_post.hook_out" if ro.post_mlp[layer] is not None else \
            f"blocks.{layer}.mlp.hook_out"
        hooks += [
            (f"blocks.{layer}.attn.v.hook_out", _bind(hook_v, layer)),
            (f"blocks.{layer}.attn.hook_pattern", _bind(hook_pattern, layer)),
            (f"blocks.{layer}.attn.hook_out", _bind(hook_attn_out, layer)),
            (mlp_point, _bind(hook_mlp_out, layer)),
        ]
    hooks += [("embed.hook_out", hook_embed), ("ln_final.hook_in", hook_final)]
    if hasattr(bridge, "pos_embed"):
        hooks.append(("pos_embed.hook_out", hook_pos))
    missing = [name for name, _ in hooks if name not in bridge.hook_dict]
    if missing:
        raise CpiError(f"architecture {bridge.cfg.architecture}: the probe needs hook points that this bridge lacks: "
                       f"{', '.join(missing[:4])}")

    with torch.inference_mode():
        logits = bridge.run_with_hooks(t["input_ids"], fwd_hooks=hooks, attention_mask=t["attention_mask"],
                                       logits_to_keep=1, return_type="logits")
    if seen["pattern"] != n_layers or seen["v"] != n_layers:
        raise CpiError(f"architecture {bridge.cfg.architecture}: hook_pattern/v fired {seen['pattern']}/{seen['v']} "
                       f"times for {n_layers} layers (is eager attention active?)")
    last = logits[:, -1, :].float()
    ar = torch.arange(B, device=last.device)
    real = last[ar, t["c_tok"]] - last[ar, t["p_tok"]]
    top = last.argmax(-1)
    scale = _norm_scale(ro, state["resid"])
    inv = (1.0 / scale)
    layer_inv = inv.view(B, 1) / post_scale  # [batch layer]: final and (frozen) post-attention norm scales
    post_bias = torch.stack([g.new_zeros(B) if pa is None else pa.const(g) for pa in ro.post_attn], 1)  # [batch layer]
    embed = (state["embed"] + state.get("pos", 0.0)) * inv
    head_c = head_raw * layer_inv.view(B, n_layers, 1, 1)
    mlp_c = mlp_raw * inv.view(B, 1)
    bias_c = bias_raw * layer_inv + post_bias * inv.view(B, 1)
    recon = embed + head_c.sum((1, 2, 3)) + bias_c.sum(1) + mlp_c.sum(1) + const
    head_err = ((attn_out_raw - head_raw.sum((2, 3)) - bias_raw) * layer_inv).abs()

    def np_(x: Any) -> Any:
        return x.detach().cpu().numpy()

    return {
        "attn": np_(attn), "head_contrib": np_(head_c), "mlp": np_(mlp_c), "attn_bias": np_(bias_c),
        "embed": np_(embed), "const": np_(const), "logit_diff": np_(real), "recon": np_(recon), "scale": np_(scale),
        "cf_top1": np_((top == t["c_tok"]).float()), "param_top1": np_((top == t["p_tok"]).float()),
        "head_err": np_(head_err),
    }


def _bind(fn: Callable, layer: int) -> Callable:
    def hook(x: Any, hook: Any) -> Any:
        return fn(x, hook, layer)

    return hook


# --------------------------------------------------------------------------------------------
# public entry point
# --------------------------------------------------------------------------------------------
def probe_arrays(bridge: Any, tokenizer: Any, items: Sequence[Any], template: str = "alpaca", batch_size: int = 8,
                 max_length: int | None = None, extra_hooks: Sequence[tuple[str, Callable]] = (),
                 desc: str = "probe") -> tuple[list[ProbeItem], dict[str, Any]]:
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
        parts.append((idx, run_probe_batch(bridge, [pitems[i] for i in idx], pad_id, extra_hooks)))
    arrays: dict[str, Any] = {}
    for key in parts[0][1]:
        sample = parts[0][1][key]
        full = np.zeros((len(pitems), *sample.shape[1:]), dtype=np.float32)
        for idx, res in parts:
            full[idx] = res[key]
        arrays[key] = full
    return pitems, arrays


def recon_rel_err(arrays: Mapping[str, Any]) -> Any:
    """|reconstructed − real| / max(|real|, 1e-6) per item (numpy)."""
    import numpy as np

    real = arrays["logit_diff"]
    return np.abs(arrays["recon"] - real) / np.maximum(np.abs(real), 1e-6)


def arrays_to_table(pitems: Sequence[ProbeItem], arrays: Mapping[str, Any], weights: str = "raw_hf") -> "pd.DataFrame":
    """The tidy per-item table (columns :data:`PROBE_COLUMNS`).

    Rows: ``component="head"`` × layer × head × span with metrics ``attn`` (mass) and
    ``logit_diff`` (value contribution); ``mlp``/``attn_bias`` per layer and ``embed``,
    ``final_bias`` (span ``"all"``, head −1) with metric ``logit_diff``; and
    ``component="model"`` rows (layer −1, head −1, span ``"all"``): ``logit_diff`` (real),
    ``recon``, ``recon_rel_err``, ``final_norm_scale``, ``cf_top1``, ``param_top1``,
    ``prefers_context`` (real logit diff > 0).
    """
    import numpy as np
    import pandas as pd

    n = len(pitems)
    _, L, H, N = arrays["attn"].shape
    ids = np.array([it.item_id for it in pitems], dtype=object)
    ds = np.array([it.dataset for it in pitems], dtype=object)
    cat = np.array([it.category for it in pitems], dtype=object)
    frames = []
    # heads: item x layer x head x span, two metrics
    ii, ll, hh, ss = np.meshgrid(np.arange(n), np.arange(L), np.arange(H), np.arange(N), indexing="ij")
    base = {"item": ii.ravel(), "layer": ll.ravel(), "head": hh.ravel(), "span": np.array(SPANS, dtype=object)[ss.ravel()]}
    for metric, key in (("attn", "attn"), ("logit_diff", "head_contrib")):
        frames.append(pd.DataFrame({**base, "component": "head", "metric": metric, "value": arrays[key].ravel()}))
    il, ll2 = np.meshgrid(np.arange(n), np.arange(L), indexing="ij")
    for comp, key in (("mlp", "mlp"), ("attn_bias", "attn_bias")):
        frames.append(pd.DataFrame({"item": il.ravel(), "layer": ll2.ravel(), "head": -1, "span": "all",
                                    "component": comp, "metric": "logit_diff", "value": arrays[key].ravel()}))
    per_item = {
        ("embed", "logit_diff"): arrays["embed"], ("final_bias", "logit_diff"): arrays["const"],
        ("model", "logit_diff"): arrays["logit_diff"], ("model", "recon"): arrays["recon"],
        ("model", "recon_rel_err"): recon_rel_err(arrays), ("model", "final_norm_scale"): arrays["scale"],
        ("model", "cf_top1"): arrays["cf_top1"], ("model", "param_top1"): arrays["param_top1"],
        ("model", "prefers_context"): (arrays["logit_diff"] > 0).astype(np.float32),
        ("model", "shared_prefix_len"): np.array([it.shared_prefix_len for it in pitems], dtype=np.float32),
    }
    for (comp, metric), vals in per_item.items():
        frames.append(pd.DataFrame({"item": np.arange(n), "layer": -1, "head": -1, "span": "all",
                                    "component": comp, "metric": metric, "value": np.asarray(vals, dtype=np.float64)}))
    df = pd.concat(frames, ignore_index=True)
    item = df.pop("item").to_numpy()
    df.insert(0, "item_id", ids[item])
    df.insert(1, "dataset", ds[item])
    df.insert(2, "category", cat[item])
    df["weights"] = weights
    df["value"] = df["value"].astype(float)
    return df[list(PROBE_COLUMNS)]


def check_reconciliation(arrays: Mapping[str, Any], bridge: Any, tol: float = 1e-3) -> float:
    """Worst reconciliation gap ``|recon − real| / max(|real|, 1)`` over items (numpy arrays).

    In a float32 model a gap above ``tol`` means the decomposition does not hold for this
    architecture (the per-head numbers would be wrong): CpiError naming the architecture. In
    bf16/fp16 the model's own logits are only good to ~1e-2, so a gap is logged as a WARNING
    (and the per-item ``recon_rel_err`` is in the table either way).
    """
    import numpy as np

    gap = np.abs(arrays["recon"] - arrays["logit_diff"]) / np.maximum(np.abs(arrays["logit_diff"]), 1.0)
    worst = float(gap.max()) if gap.size else 0.0
    if not np.isfinite(worst) or worst > tol:
        dtype = str(getattr(bridge.cfg, "dtype", "?"))
        msg = (f"probe reconciliation on {getattr(bridge.cfg, 'architecture', '?')}: worst gap {worst:.2e} > {tol:.0e} "
               f"(model dtype {dtype})")
        if dtype.endswith("float32") or not np.isfinite(worst):
            raise CpiError(msg + "; the decomposition does not hold for this model, per-head numbers would be wrong")
        log.warning("%s", msg)
    return worst


def probe_items(bridge_or_model: Any, tokenizer: Any, items: Sequence[Any], template: str = "alpaca",
                batch_size: int = 8, max_length: int | None = None, check_tol: float | None = 1e-3) -> "pd.DataFrame":
    """Attention masses and span-resolved value contributions at the answer position (tidy, per item).

    ``items``: :class:`fullscale.conflicts.ConflictItem` s (formatted with ``template``) or
    :class:`ProbeItem` s. ``bridge_or_model``: a TransformerBridge or an HF causal LM
    (wrapped, raw weights). Returns the table described in :func:`arrays_to_table`.
    Reconciliation is checked with :func:`check_reconciliation` (``check_tol=None``: not
    checked; the per-item error is in the table either way).
    """
    bridge = as_bridge(bridge_or_model, tokenizer)
    pitems, arrays = probe_arrays(bridge, tokenizer, items, template=template, batch_size=batch_size,
                                  max_length=max_length)
    if check_tol is not None:
        check_reconciliation(arrays, bridge, check_tol)
    return arrays_to_table(pitems, arrays, weights=getattr(bridge, "cpi_weights", "raw_hf"))


#: The former name of :func:`probe_items`, kept so that ``from mechinterp.probe import probe`` still works.
#: The package re-exports only ``probe_items``: ``from mechinterp import probe`` is this module.
probe = probe_items


def aggregate(table: "pd.DataFrame", by: Sequence[str] = ("dataset", "category")) -> "pd.DataFrame":
    """Mean, std and n over items for every (component, layer, head, span, metric), per ``by`` group.

    Adds a ``category="ALL"`` group per dataset. Output columns: ``*by, component, layer,
    head, span, metric, value (mean), std (sample std over items; NaN where n = 1), n, weights``.
    """
    import pandas as pd

    keys = list(by) + ["component", "layer", "head", "span", "metric", "weights"]
    frames = [table]
    if "category" in by:
        frames.append(table.assign(category="ALL"))
    full = pd.concat(frames, ignore_index=True) if len(frames) > 1 else table
    g = full.groupby(keys, sort=False, dropna=False)["value"]
    out = g.agg(value="mean", std="std", n="count").reset_index()  # std: sample std, NaN where n = 1
    cols = list(by) + ["component", "layer", "head", "span", "metric", "value", "std", "n", "weights"]
    out = out[cols]
    out = out.drop_duplicates(subset=[c for c in cols if c not in ("value", "std", "n")])
    return out.reset_index(drop=True)
