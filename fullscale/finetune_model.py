"""Model loading and precision for finetuning: the base model in the run's dtype, LoRA / QK-only, frozen weights.

In bfloat16 (:func:`resolved_dtype`) the run trains under bf16 autocast with the frozen weights held in
bf16 (:func:`hold_frozen_in`) and the trainable ones in float32; LoRA's all-frozen base loads in bf16
directly, full and QK-only finetuning load float32 (master weights) and cast what is frozen afterwards.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from cpi.errors import CpiError
from fullscale.finetune_config import FinetuneConfig

log = logging.getLogger("fullscale.finetune")

__all__ = ["has_accelerator", "hold_frozen_in", "hold_frozen_weights", "load_base", "prepare_model", "resolved_dtype"]


def has_accelerator() -> bool:
    import torch

    xpu = getattr(torch, "xpu", None)
    mps = getattr(torch.backends, "mps", None)
    return bool(torch.cuda.is_available() or (xpu is not None and xpu.is_available())
                or (mps is not None and mps.is_available()))


def resolved_dtype(config: FinetuneConfig) -> Any:
    """The ``torch.dtype`` the run trains in: ``config.dtype`` on this machine's device
    (:func:`fullscale.precision.resolve_dtype`); with ``auto``, an accelerate launcher's
    ``ACCELERATE_MIXED_PRECISION`` (bf16/fp16) wins."""
    import torch

    from fullscale.precision import resolve_dtype

    env = os.environ.get("ACCELERATE_MIXED_PRECISION", "no")
    if config.dtype == "auto" and env in ("bf16", "fp16"):
        return torch.bfloat16 if env == "bf16" else torch.float16
    return resolve_dtype(config.dtype, "cuda" if torch.cuda.is_available() else "cpu")


def _load_dtype(config: FinetuneConfig, dtype: Any) -> Any:
    """LoRA's base is all frozen: loaded in bf16 directly; otherwise float32 (master weights; the
    frozen part is cast down after freezing, :func:`hold_frozen_in`)."""
    import torch

    return torch.bfloat16 if dtype == torch.bfloat16 and config.lora is not None else torch.float32


def _attention_kwargs(dtype: Any) -> dict[str, Any]:
    """``attn_implementation="eager"`` for bf16 on a CPU: there torch's fused (flash) attention is slower
    in bf16 than in float32 (forward + backward, batch 8 x 9 heads x 128 positions x d_head 64, one thread:
    70 ms bf16 against 29 ms float32) while the plain matmul-and-softmax attention takes 24 ms in bf16
    (``benchmarks/profile_finetune.py``, BENCHMARKS.md). Otherwise the model's default."""
    import torch

    return {"attn_implementation": "eager"} if dtype == torch.bfloat16 and not torch.cuda.is_available() else {}


def _skip_adapter_input_casts(model: Any) -> None:
    """Under autocast, PEFT's cast of each adapter's input to the adapter's float32 is undone at once by
    autocast (the adapter's matmul runs in bf16 anyway): turn it off (``cast_input_dtype_enabled``, what
    ``peft.helpers.disable_input_dtype_casting`` sets); the numbers are the same, two activation copies
    per adapter and pass fewer."""
    for module in model.modules():
        if hasattr(module, "cast_input_dtype_enabled") or hasattr(module, "lora_A"):
            module.cast_input_dtype_enabled = False


def hold_frozen_in(model: Any, dtype: Any) -> int:
    """Cast every frozen floating-point parameter of ``model`` to ``dtype`` in place (tied weights stay
    tied: the same ``Parameter`` is cast once); trainable ones keep their dtype. Returns how many."""
    n = 0
    for p in model.parameters():
        if not p.requires_grad and p.is_floating_point() and p.dtype != dtype:
            p.data = p.data.to(dtype)
            n += 1
    return n


def hold_frozen_weights(config: FinetuneConfig, model: Any, dtype: Any) -> None:
    """The run's precision on a prepared model: in bf16 (or float16) the frozen weights are cast to it
    (:func:`hold_frozen_in`) and LoRA adapters skip their input casts; float32 leaves the model as it is."""
    import torch

    if dtype == torch.float32:
        return
    if config.lora is None and os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
        # FSDP flattens each wrapped module's parameters into one tensor of one dtype: QK-only keeps a
        # float32 model there (as before bf16 frozen weights existed); autocast still computes in bf16
        log.info("FSDP: frozen weights stay float32 (one dtype per flattened module)")
        return
    hold_frozen_in(model, dtype)
    if config.lora is not None:
        _skip_adapter_input_casts(model)


def load_base(config: FinetuneConfig, dtype: Any = None) -> tuple[Any, Any]:
    """Load the base model and tokenizer (pad token = EOS if the tokenizer has none). ``dtype``: the
    run's resolved dtype (default: :func:`resolved_dtype`); the weights load in float32 but for LoRA in bf16."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from fullscale.models import resolve_model

    base = str(resolve_model(config.base_model))  # a registry name becomes its cached folder
    if Path(base).exists():
        base = str(Path(base).resolve())  # so a LoRA adapter's base_model_name_or_path is absolute
    tok_src = str(resolve_model(config.tokenizer)) if config.tokenizer else base
    if config.tokenizer and Path(tok_src).exists():
        tok_src = str(Path(tok_src).resolve())
    try:
        tokenizer = AutoTokenizer.from_pretrained(tok_src)
    except (OSError, ValueError) as exc:
        raise CpiError(f"tokenizer {tok_src!r}: cannot load: {str(exc).splitlines()[0]}") from exc
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise CpiError(f"tokenizer {tok_src!r}: has neither a pad nor an EOS token")
        tokenizer.pad_token = tokenizer.eos_token
        log.info("tokenizer has no pad token; using EOS %r for padding", tokenizer.eos_token)
    from safetensors import SafetensorError

    try:
        dtype = resolved_dtype(config) if dtype is None else dtype
        model = AutoModelForCausalLM.from_pretrained(base, dtype=_load_dtype(config, dtype),
                                                     **_attention_kwargs(dtype))
    except SafetensorError as exc:
        raise CpiError(f"base_model {config.base_model!r}: corrupt or truncated safetensors file: {exc}") from exc
    except (OSError, ValueError, KeyError) as exc:
        raise CpiError(f"base_model {config.base_model!r}: cannot load: {str(exc).splitlines()[0]}") from exc
    model.config.use_cache = False
    return model, tokenizer


def prepare_model(config: FinetuneConfig, model: Any) -> tuple[Any, set[str]]:
    """Apply QK-only freezing or LoRA; returns ``(model, names excluded from weight decay)``."""
    from fullscale.qk_only import apply_qk_only, masked_parameter_names, validate_lora_targets

    no_decay: set[str] = set()
    if config.qk_only:
        plan = apply_qk_only(model)
        no_decay = masked_parameter_names(plan)
    if config.lora is not None:
        from peft import LoraConfig, get_peft_model

        from fullscale.checkpoints import peft_deprecations_silenced

        targets = list(config.lora.target_modules)
        validate_lora_targets(model, targets)
        lcfg = LoraConfig(r=config.lora.rank, lora_alpha=config.lora.alpha, lora_dropout=config.lora.dropout,
                          target_modules="all-linear" if targets == ["all-linear"] else targets,
                          task_type="CAUSAL_LM")
        with peft_deprecations_silenced():
            model = get_peft_model(model, lcfg)
        if config.gradient_checkpointing:
            model.enable_input_require_grads()
    return model, no_decay
