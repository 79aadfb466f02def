"""Memory estimates and guards: refuse a run that cannot fit before loading anything; pick a batch that fits.

:func:`estimate` adds three terms, in bytes, for one process:

- ``runtime``: what the process holds already (its resident memory now; on a GPU: nothing);
- ``weights``: every tensor of the checkpoint's safetensors files (read from their headers, no weights
  loaded) converted to the run's dtype; for a LoRA adapter, its base model's (the adapter is applied in
  place); on the CPU the weights are memory-mapped, but a forward pass touches every page;
- ``activations``: the peak of one forward pass at ``batch`` sequences of ``seq`` tokens, from the
  architecture in ``config.json`` (:func:`activation_bytes`).

:func:`guard` compares it with what the device has (``MemAvailable`` of ``/proc/meminfo`` plus what the
process already holds, or ``torch.cuda.mem_get_info``) and raises a one-line :class:`~cpi.errors.CpiError`
naming the setting to change; :func:`auto_batch` picks the largest batch whose estimate fits.
The test-suite holds the estimate within 20 % of the measured peak on the real SmolLM2.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cpi.errors import CpiError

GiB = float(1 << 30)
_ITEMSIZE = {"F64": 8, "F32": 4, "BF16": 2, "F16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
             "F8_E4M3": 1, "F8_E5M2": 1}
#: Largest batch :func:`auto_batch` considers.
MAX_AUTO_BATCH = 256
#: Fraction of the available memory an estimate may use (the rest is the estimate's margin).
HEADROOM = 0.9


@dataclass(frozen=True)
class Estimate:
    """Bytes a run needs: already held, weights, one forward's activations."""

    runtime: int
    weights: int
    activations: int

    @property
    def total(self) -> int:
        return self.runtime + self.weights + self.activations

    def describe(self) -> str:
        return (f"about {self.total / GiB:.2f} GiB (weights {self.weights / GiB:.2f}, activations "
                f"{self.activations / GiB:.2f}, process {self.runtime / GiB:.2f})")


def _header(path: Path) -> dict[str, Any]:
    with open(path, "rb") as fh:
        n = int.from_bytes(fh.read(8), "little")
        return json.loads(fh.read(n))


def _weight_folder(folder: Path) -> Path:
    """The folder holding the weights: the base model's for a LoRA adapter folder."""
    if (folder / "adapter_config.json").is_file():
        from fullscale.adapters import read_adapter_config
        from fullscale.checkpoints import _resolve_base

        return Path(_resolve_base(folder, read_adapter_config(folder.name, folder)["base_model_name_or_path"]))
    return folder


def weight_bytes(folder: str | Path, itemsize: int | None = None) -> int:
    """Bytes of every weight tensor of a checkpoint folder, at ``itemsize`` bytes per element (None: as stored).

    Read from the safetensors headers only. CpiError when the folder has no safetensors weights.
    """
    folder = _weight_folder(Path(folder))
    files = sorted(folder.glob("*.safetensors"))
    if not files:  # pickled weights: their file sizes, scaled from float32 (how they are usually stored)
        bins = sorted(folder.glob("pytorch_model*.bin"))
        if not bins:
            raise CpiError(f"checkpoint {folder}: no weights to size (memory estimate)")
        return sum(f.stat().st_size for f in bins) * (itemsize or 4) // 4
    total = 0
    for f in files:
        try:
            header = _header(f)
        except (OSError, ValueError) as exc:
            raise CpiError(f"checkpoint {folder}: unreadable safetensors header of {f.name}: {exc}") from exc
        for key, meta in header.items():
            if key == "__metadata__":
                continue
            n = 1
            for s in meta["shape"]:
                n *= int(s)
            total += n * (itemsize if itemsize is not None else _ITEMSIZE.get(meta["dtype"], 4))
    return total


def model_config(folder: str | Path) -> dict[str, Any]:
    folder = _weight_folder(Path(folder))
    try:
        cfg = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise CpiError(f"checkpoint {folder}: unreadable config.json (memory estimate): {exc}") from exc
    return cfg.get("text_config", cfg) if isinstance(cfg.get("text_config"), dict) else cfg


def activation_bytes(cfg: dict[str, Any], batch: int, seq: int, itemsize: int, all_logits: bool = True) -> int:
    """Peak bytes of one eager forward pass of ``batch`` x ``seq`` tokens (no KV cache kept between calls).

    Per layer, alive at once: the residual stream and its normed copy, q/k/v, the attention scores and
    their softmax (batch x head x pos x pos, eager attention as the probe uses), the MLP's gate/up/act
    (batch x pos x d_mlp); plus the logits (float32, every position when ``all_logits``, else the last)
    and their log-softmax. Layers run one after another, so one layer's temporaries count once.
    """
    d = int(cfg.get("hidden_size") or cfg.get("n_embd") or cfg.get("d_model"))
    heads = int(cfg.get("num_attention_heads") or cfg.get("n_head"))
    kv = int(cfg.get("num_key_value_heads") or heads)
    d_head = int(cfg.get("head_dim") or d // heads)
    d_mlp = int(cfg.get("intermediate_size") or cfg.get("n_inner") or 4 * d)
    vocab = int(cfg.get("vocab_size"))
    tokens = batch * seq
    stream = 4 * tokens * d  # residual, normed input, attention output, MLP output
    qkv = tokens * d_head * (heads + 2 * kv) * 2  # projections and their rotary-embedded copies
    scores = 3 * batch * heads * seq * seq  # scores, softmax, masked copy
    mlp = 3 * tokens * d_mlp
    per_layer = (stream + qkv + scores + mlp) * itemsize
    n_logits = tokens if all_logits else batch
    upcast = 4 if itemsize < 4 else 0
    logits = n_logits * vocab * (itemsize + upcast + 4)  # model dtype, its float32 copy, the log-softmax
    return int(per_layer + logits)


def process_bytes() -> int:
    """Resident memory of this process now (``/proc/self/status`` VmRSS; 0 where unknown)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return 0
    return 0


def available_bytes(device: Any) -> int:
    """Memory the run may use on ``device``: free GPU memory, or ``MemAvailable`` + this process's RSS."""
    import torch

    dev = torch.device(device) if not isinstance(device, torch.device) else device
    if dev.type == "cuda":
        free, _ = torch.cuda.mem_get_info(dev)
        return int(free)
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024 + process_bytes()
    except OSError:
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def estimate(folder: str | Path, dtype: Any, device: Any, batch: int, seq: int, all_logits: bool = True) -> Estimate:
    """The :class:`Estimate` of a forward pass of ``batch`` x ``seq`` tokens on checkpoint ``folder``."""
    import torch

    itemsize = torch.empty((), dtype=dtype).element_size()
    dev = torch.device(device) if not isinstance(device, torch.device) else device
    runtime = 0 if dev.type == "cuda" else process_bytes()
    return Estimate(runtime=runtime, weights=weight_bytes(folder, itemsize),
                    activations=activation_bytes(model_config(folder), batch, seq, itemsize, all_logits))


def guard(folder: str | Path, dtype: Any, device: Any, batch: int, seq: int, all_logits: bool = True,
          what: str = "--batch-size", available: int | None = None) -> Estimate:
    """The estimate, or CpiError naming the setting to change when it exceeds the device's memory."""
    est = estimate(folder, dtype, device, batch, seq, all_logits)
    room = available if available is not None else available_bytes(device)
    if est.total > HEADROOM * room:
        if est.runtime + est.weights > HEADROOM * room:
            raise CpiError(f"--dtype {str(dtype).replace('torch.', '')}: checkpoint {folder} needs {est.describe()} "
                           f"but {room / GiB:.2f} GiB is available on {device}; use --dtype bfloat16, another "
                           "--device or a machine with more memory")
        raise CpiError(f"{what} {batch}: needs {est.describe()} at {seq} tokens but {room / GiB:.2f} GiB is "
                       f"available on {device}; lower {what} or use {what} auto")
    return est


def auto_batch(folder: str | Path, dtype: Any, device: Any, seq: int, n_items: int, all_logits: bool = True,
               available: int | None = None) -> int:
    """The largest batch (at most ``n_items`` and :data:`MAX_AUTO_BATCH`) whose estimate fits; CpiError if none."""
    room = available if available is not None else available_bytes(device)
    cap = max(1, min(n_items, MAX_AUTO_BATCH))
    guard(folder, dtype, device, 1, seq, all_logits, what="--batch-size", available=room)
    lo, hi = 1, cap
    while lo < hi:  # the estimate grows with the batch: bisect for the largest that fits
        mid = (lo + hi + 1) // 2
        if estimate(folder, dtype, device, mid, seq, all_logits).total <= HEADROOM * room:
            lo = mid
        else:
            hi = mid - 1
    return lo


def longest_sequence(items: Any, tokenizer: Any, template: str, max_length: int | None, extra: int) -> int:
    """Tokens of the longest formatted prompt of ``items`` plus ``extra`` (answer or generation budget)."""
    from fullscale.prompts import format_prompts

    prompts = format_prompts(list(items), tokenizer, template, max_length=max_length)
    longest = max((len(fp.input_ids) for fp in prompts), default=1)
    answers = [a for it in items for a in (it.context_answer, it.parametric_answer)]
    answer = max((len(tokenizer(" " + a, add_special_tokens=False)["input_ids"]) for a in answers), default=1)
    return longest + max(extra, answer)


def plan_batch(folder: str | Path, tokenizer: Any, items: Any, template: str, max_length: int | None,
               batch_size: int | str, dtype: Any, device: Any, extra: int = 0, all_logits: bool = True) -> int:
    """The batch size a runner uses: ``batch_size`` checked by :func:`guard`, or ``"auto"`` by :func:`auto_batch`."""
    import logging

    seq = longest_sequence(items, tokenizer, template, max_length, extra)
    if batch_size == "auto":
        chosen = auto_batch(folder, dtype, device, seq, len(items), all_logits)
        est = estimate(folder, dtype, device, chosen, seq, all_logits)
        logging.getLogger(__name__).warning("--batch-size auto: %d (%s at %d tokens)", chosen, est.describe(), seq)
        return chosen
    guard(folder, dtype, device, int(batch_size), seq, all_logits)
    return int(batch_size)
