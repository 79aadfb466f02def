"""Loading checkpoints into the bridge: raw weights, LoRA merged, clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cpi.errors import CpiError
from mechinterp.load import load_bridge, supported_architectures
from mechinterp.probe import probe_arrays
from tests.mechinterp.helpers import conflict_items
from tests.tiny_models import make_tiny_checkpoint


def test_unsupported_architecture_is_named(tmp_path):
    path = make_tiny_checkpoint(tmp_path / "m", "llama")
    cfg = json.loads((path / "config.json").read_text())
    cfg["architectures"] = ["FancyNewForCausalLM"]
    cfg["model_type"] = "fancy_new"
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CpiError) as err:
        load_bridge(path, device="cpu")
    msg = str(err.value)
    assert "FancyNewForCausalLM" in msg and "LlamaForCausalLM" in msg and str(path) in msg
    assert "LlamaForCausalLM" in supported_architectures()


def test_corrupt_checkpoint_is_named(tmp_path):
    path = make_tiny_checkpoint(tmp_path / "m", "llama")
    (path / "model.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(CpiError, match="checkpoint m.*safetensors"):
        load_bridge(path, device="cpu")


def test_lora_adapter_is_merged(tmp_path):
    """A LoRA adapter folder probes like the merged model (non-zero B so the adapter matters)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = make_tiny_checkpoint(tmp_path / "base", "llama", seed=2)
    model = AutoModelForCausalLM.from_pretrained(base)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    peft_model.save_pretrained(tmp_path / "adapter")
    merged = peft_model.merge_and_unload()
    merged.save_pretrained(tmp_path / "merged")
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(base).save_pretrained(tmp_path / "merged")
    cfg = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = str(base)
    (tmp_path / "adapter" / "adapter_config.json").write_text(json.dumps(cfg))
    items = conflict_items(3)
    b_ad, tok = load_bridge(tmp_path / "adapter", device="cpu", dtype="float32")
    b_me, tok2 = load_bridge(tmp_path / "merged", device="cpu", dtype="float32")
    b_base, tok3 = load_bridge(base, device="cpu", dtype="float32")
    _, a = probe_arrays(b_ad, tok, items)
    _, m = probe_arrays(b_me, tok2, items)
    _, z = probe_arrays(b_base, tok3, items)
    np.testing.assert_allclose(a["head_contrib"], m["head_contrib"], atol=1e-5)
    assert np.abs(a["attn"] - z["attn"]).max() > 1e-3  # the adapter changed the model
    assert b_ad.cpi_weights == "raw_hf"


def test_bf16_and_compatibility_mode(tmp_path, bf16_allowed):
    """bf16: probe arithmetic stays float32, so only the model's own bf16 logits limit reconciliation
    (~1e-2). Compatibility mode on a model with value biases keeps the total but moves the value bias
    out of the heads into the attention-output bias: per-head numbers differ, hence the recorded mode."""
    import torch
    from transformers import AutoModelForCausalLM

    path = make_tiny_checkpoint(tmp_path / "neox", "neox", seed=1)
    model = AutoModelForCausalLM.from_pretrained(path)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.5)
    model.save_pretrained(path)
    items = conflict_items(4)
    raw, tok = load_bridge(path, device="cpu", dtype="float32")
    _, r = probe_arrays(raw, tok, items)
    compat, tok = load_bridge(path, device="cpu", dtype="float32", compatibility_mode=True)
    _, c = probe_arrays(compat, tok, items)
    assert compat.cpi_weights == "compatibility_mode" and raw.cpi_weights == "raw_hf"
    for arr in (r, c):
        np.testing.assert_allclose(arr["recon"], arr["logit_diff"], atol=1e-5)
    np.testing.assert_allclose(r["logit_diff"], c["logit_diff"], atol=1e-5)
    np.testing.assert_allclose(r["attn"], c["attn"], atol=1e-5)
    assert np.abs(r["head_contrib"] - c["head_contrib"]).max() > 1e-3
    bf, tok = load_bridge(path, device="cpu", dtype="bfloat16")
    _, b = probe_arrays(bf, tok, items)
    assert np.abs(b["recon"] - b["logit_diff"]).max() < 1e-2
    np.testing.assert_allclose(b["attn"], r["attn"], atol=2e-2)


def test_reconciliation_tolerance_by_precision(caplog):
    """float32: a gap above 1e-3 stops the probe; bf16: the stated tolerance (HALF_PRECISION_TOL) decides
    whether a WARNING is logged; a non-finite gap is an error in any precision."""
    import logging
    from types import SimpleNamespace

    import pytest

    from cpi.errors import CpiError
    from mechinterp.run import HALF_PRECISION_TOL, check_reconciliation

    def bridge(dtype):
        return SimpleNamespace(cfg=SimpleNamespace(dtype=dtype, architecture="Tiny"))

    real = np.array([2.0, -4.0, 0.5])
    near = {"logit_diff": real, "recon": real * (1 + 0.1)}         # 10 % off: a bf16-sized gap
    far = {"logit_diff": real, "recon": real * (1 + 0.5)}          # 50 % off: beyond the bf16 tolerance
    with pytest.raises(CpiError, match="worst gap 1.00e-01 > 1e-03 .*does not hold"):
        check_reconciliation(near, bridge("torch.float32"))
    with caplog.at_level(logging.WARNING, logger="mechinterp.run"):
        assert check_reconciliation(near, bridge("torch.bfloat16")) == pytest.approx(0.1)
        assert not caplog.records  # within the stated bf16 tolerance: no warning
        check_reconciliation(far, bridge("torch.bfloat16"))
    assert len(caplog.records) == 1 and f"> {HALF_PRECISION_TOL['bfloat16']:.0e}" in caplog.records[0].message
    with pytest.raises(CpiError, match="does not hold"):
        check_reconciliation({"logit_diff": real, "recon": real * np.nan}, bridge("torch.bfloat16"))
