"""Random-weight checkpoints of a given shape, written shard by shard without a float32 copy.

For measuring time and memory at scales no test can hold (a Llama-2-7B- or Mistral-7B-shaped model
in bf16 is 13.5 GB) and for tests of the same code paths on small shapes:

- :data:`SHAPES`: named architectures (``llama2-7b``, ``mistral-7b``, ``llama-1b``, ``tiny-llama``...).
- :func:`write_random_checkpoint`: a Hugging Face model folder (``config.json``, sharded
  ``model-0000i-of-0000n.safetensors`` + ``model.safetensors.index.json``, a copied real tokenizer).
  Parameter names and shapes come from the model class built on the ``meta`` device (no memory);
  each tensor is drawn directly in the target dtype, one shard at a time, so the peak memory of
  writing is one shard.
- :func:`write_random_lora_trajectory`: ``checkpoint-<step>/`` LoRA adapter folders over a base
  folder (``adapter_config.json`` + ``adapter_model.safetensors``, as peft saves them), each with
  different random ``A``/``B`` so every checkpoint gives other numbers.

The weights are random (N(0, 0.02), norms 1): the models answer nonsense, but every tensor has the
size and layout of the real one, which is what memory and time depend on.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from cpi.errors import CpiError

#: Named shapes: the config fields of a Hugging Face Llama/Mistral config (vocabulary: the tokenizer's).
SHAPES: dict[str, dict[str, Any]] = {
    "llama2-7b": dict(model_type="llama", architectures=["LlamaForCausalLM"], num_hidden_layers=32, hidden_size=4096,
                      num_attention_heads=32, num_key_value_heads=32, intermediate_size=11008,
                      max_position_embeddings=4096, rms_norm_eps=1e-5, tie_word_embeddings=False),
    "mistral-7b": dict(model_type="mistral", architectures=["MistralForCausalLM"], num_hidden_layers=32,
                       hidden_size=4096, num_attention_heads=32, num_key_value_heads=8, intermediate_size=14336,
                       max_position_embeddings=32768, rms_norm_eps=1e-5, tie_word_embeddings=False,
                       sliding_window=None),
    "llama-1b": dict(model_type="llama", architectures=["LlamaForCausalLM"], num_hidden_layers=20, hidden_size=2048,
                     num_attention_heads=16, num_key_value_heads=4, intermediate_size=5632,
                     max_position_embeddings=4096, rms_norm_eps=1e-5, tie_word_embeddings=False),
    "tiny-llama": dict(model_type="llama", architectures=["LlamaForCausalLM"], num_hidden_layers=2, hidden_size=64,
                       num_attention_heads=4, num_key_value_heads=2, intermediate_size=128,
                       max_position_embeddings=512, rms_norm_eps=1e-5, tie_word_embeddings=False),
    "tiny-mistral": dict(model_type="mistral", architectures=["MistralForCausalLM"], num_hidden_layers=2,
                         hidden_size=64, num_attention_heads=4, num_key_value_heads=2, intermediate_size=128,
                         max_position_embeddings=512, rms_norm_eps=1e-5, tie_word_embeddings=False,
                         sliding_window=None),
}

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                    "tokenizer.model")


def _config(shape: str | dict[str, Any], vocab_size: int, dtype: str, bos: int | None, eos: int | None) -> Any:
    from transformers import AutoConfig

    if isinstance(shape, str) and shape not in SHAPES:
        raise CpiError(f"shape {shape!r}: not one of {', '.join(SHAPES)}")
    fields = dict(SHAPES[shape]) if isinstance(shape, str) else dict(shape)
    model_type = fields.pop("model_type")
    return AutoConfig.for_model(model_type, vocab_size=vocab_size, dtype=dtype, bos_token_id=bos, eos_token_id=eos,
                                pad_token_id=eos, **fields)


def parameter_shapes(config: Any) -> dict[str, tuple[int, ...]]:
    """``{name: shape}`` of every parameter of ``config``'s causal LM, built on the meta device (no memory)."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return {name: tuple(p.shape) for name, p in model.state_dict().items()}


def write_random_checkpoint(out: str | Path, shape: str | dict[str, Any] = "tiny-llama",
                            tokenizer: str | Path | None = None, dtype: str = "bfloat16",
                            shard_bytes: int = 2 << 30, seed: int = 0, std: float = 0.02) -> Path:
    """Write a random-weight causal LM of ``shape`` into ``out`` (see module doc); returns ``out``.

    ``tokenizer``: a folder whose tokenizer files are copied (the vocabulary size follows it);
    ``None``: the cached SmolLM2 tokenizer. ``shard_bytes``: the largest shard (several tensors per
    shard; a tensor is never split).
    """
    import torch
    from safetensors.torch import save_file

    from fullscale.checkpoints import load_tokenizer

    out = Path(out)
    src = Path(tokenizer) if tokenizer is not None else _default_tokenizer()
    tok = load_tokenizer(src)
    dt = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[dtype]
    config = _config(shape, len(tok), dtype, tok.bos_token_id, tok.eos_token_id)
    shapes = parameter_shapes(config)
    itemsize = torch.empty((), dtype=dt).element_size()
    shards: list[list[str]] = [[]]
    size = 0
    for name, shp in shapes.items():
        n = itemsize * _numel(shp)
        if shards[-1] and size + n > shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += n
    out.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    weight_map: dict[str, str] = {}
    total = 0
    for i, names in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        tensors = {}
        for name in names:
            shp = shapes[name]
            if name.endswith("norm.weight") or "layernorm" in name:
                t = torch.ones(shp, dtype=dt)
            else:
                t = torch.randn(shp, dtype=dt, generator=gen).mul_(std)
            tensors[name] = t
            weight_map[name] = fname
            total += t.numel() * itemsize
        save_file(tensors, str(out / fname), metadata={"format": "pt"})
        del tensors
    (out / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=1))
    config.save_pretrained(out)
    for f in _TOKENIZER_FILES:
        if (src / f).is_file():
            shutil.copy2(src / f, out / f)
    return out


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def _default_tokenizer() -> Path:
    from fullscale.models import resolve_model

    return Path(resolve_model("smollm2-135m-instruct"))


def write_random_lora_trajectory(out: str | Path, base: str | Path, steps: tuple[int, ...] = (50, 100, 150, 200),
                                 r: int = 8, alpha: int = 16, targets: tuple[str, ...] = ("q_proj", "v_proj"),
                                 seed: int = 0, scale: float = 0.02, dtype: str = "bfloat16") -> list[Path]:
    """``out/checkpoint-<step>/`` LoRA adapter folders over ``base`` (one per step); returns them.

    Adapters are written as peft saves them (``adapter_config.json`` naming ``base`` by absolute
    path, ``adapter_model.safetensors`` with ``base_model.model.<module>.lora_A/B.weight``), in
    ``dtype``, with random ``A`` and ``B`` (both non-zero, so each checkpoint changes the outputs).
    """
    import torch
    from safetensors.torch import save_file
    from transformers import AutoConfig

    base = Path(base).resolve()
    shapes = parameter_shapes(AutoConfig.from_pretrained(base))
    dt = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[dtype]
    modules = [n[: -len(".weight")] for n in shapes if n.endswith(".weight") and n.split(".")[-2] in targets]
    if not modules:
        raise CpiError(f"{base}: no modules named {', '.join(targets)}")
    out = Path(out)
    folders = []
    for k, step in enumerate(steps):
        gen = torch.Generator().manual_seed(seed * 1000 + k)
        tensors = {}
        for m in modules:
            d_out, d_in = shapes[m + ".weight"]
            tensors[f"base_model.model.{m}.lora_A.weight"] = torch.randn((r, d_in), dtype=dt, generator=gen).mul_(scale)
            tensors[f"base_model.model.{m}.lora_B.weight"] = torch.randn((d_out, r), dtype=dt, generator=gen).mul_(scale)
        folder = out / f"checkpoint-{step}"
        folder.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})
        (folder / "adapter_config.json").write_text(json.dumps({
            "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": str(base), "r": r,
            "lora_alpha": alpha, "lora_dropout": 0.0, "target_modules": list(targets), "bias": "none",
            "fan_in_fan_out": False, "inference_mode": True, "use_rslora": False, "use_dora": False,
            "modules_to_save": None, "init_lora_weights": True}, indent=1))
        (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
        folders.append(folder)
    return folders
