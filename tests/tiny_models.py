"""Tiny real checkpoints for tests: random weights, a tokenizer trained in the test.

Nothing here downloads anything. Each builder writes a genuine Hugging Face
checkpoint folder (``config.json``, ``model.safetensors``, tokenizer files)
that the package's real loading code reads back.

- ``make_tokenizer(kind)``: ``"bpe"`` is a GPT-2-style byte-level BPE (answers
  after a space are different tokens from answers at the start of a string);
  ``"sp"`` is a Llama-style Metaspace tokenizer with a ``<s>`` BOS, like
  sentencepiece. ``bpe`` covers any text; ``sp`` maps characters outside
  Latin-1 letters to ``<unk>``.
- ``make_tiny_checkpoint(path, arch)``: ``arch`` in ``llama`` (grouped-query
  attention, 4 query heads over 2 KV heads), ``mistral`` (GQA) or ``neox``
  (GPT-NeoX with fused QKV, parallel attention/MLP, partial rotary).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

DEFAULT_CORPUS = [
    "The capital of France is Paris. The capital of Italy is Rome.",
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.",
    "### Instruction: Answer the question based on the context. ### Response:",
    "Context: In this story the capital of Germany is Lyon. Question: What is the capital of Germany? Answer: Lyon",
    "Albert Einstein was born in Ulm and worked in physics. Marie Curie was born in Warsaw and worked in chemistry.",
    "Absence makes the heart grow fonder. Write a quote that ends in the word heavy.",
    "user assistant system <|user|> <|assistant|> hello world 0 1 2 3 4 5 6 7 8 9",
]

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def make_tokenizer(kind: str = "bpe", corpus: Iterable[str] = (), vocab_size: int = 400, chat_template: bool = False):
    """Train a small fast tokenizer on ``corpus`` (+ a default corpus) and wrap it for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    texts = list(DEFAULT_CORPUS) + list(corpus)
    if kind == "bpe":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=["<|endoftext|>", "<pad>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        )
        tok.train_from_iterator(texts, trainer)
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
        fast = PreTrainedTokenizerFast(
            tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>", pad_token="<pad>"
        )
    elif kind == "sp":
        tok = Tokenizer(models.BPE(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)
        tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first", split=True)
        alphabet = [chr(c) for c in range(33, 127)] + list("àáâäçèéêëíîïñóôöúûüÿßÀÉÖÜ") + ["▁"]
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>", "<pad>"], initial_alphabet=alphabet
        )
        tok.train_from_iterator(texts, trainer)
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tok.token_to_id("<s>"))]
        )
        fast = PreTrainedTokenizerFast(
            tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
        )
    else:
        raise ValueError(f"unknown tokenizer kind {kind!r} (use 'bpe' or 'sp')")
    if chat_template:
        fast.chat_template = CHAT_TEMPLATE
    return fast


def tiny_config(arch: str, vocab_size: int, **overrides):
    """A 2-layer, d_model=32 config of the given architecture."""
    from transformers import GPTNeoXConfig, LlamaConfig, MistralConfig

    common = dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, max_position_embeddings=256, tie_word_embeddings=False)
    if arch == "llama":
        cfg = LlamaConfig(**{**common, "num_key_value_heads": 2, "rms_norm_eps": 1e-6, **overrides})
    elif arch == "mistral":
        cfg = MistralConfig(**{**common, "num_key_value_heads": 2, "sliding_window": None, **overrides})
    elif arch == "neox":
        cfg = GPTNeoXConfig(**{**common, "rotary_pct": 0.5, "use_parallel_residual": True, **overrides})
    else:
        raise ValueError(f"unknown arch {arch!r} (use llama, mistral or neox)")
    return cfg


def make_tiny_checkpoint(path: str | Path, arch: str = "llama", tokenizer=None, tokenizer_kind: str | None = None,
                         seed: int = 0, save_tokenizer: bool = True, **overrides) -> Path:
    """Build a random tiny model of ``arch`` and save it (safetensors) with its tokenizer to ``path``."""
    import torch
    from transformers import AutoModelForCausalLM

    path = Path(path)
    if tokenizer is None:
        tokenizer = make_tokenizer(tokenizer_kind or ("sp" if arch in ("llama", "mistral") else "bpe"))
    cfg = tiny_config(arch, vocab_size=len(tokenizer), **overrides)
    cfg.bos_token_id = tokenizer.bos_token_id
    cfg.eos_token_id = tokenizer.eos_token_id
    cfg.pad_token_id = tokenizer.pad_token_id
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg)
    model.save_pretrained(path, safe_serialization=True)
    if save_tokenizer:
        tokenizer.save_pretrained(path)
    return path
