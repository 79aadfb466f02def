"""Architectures beyond Llama/Mistral/NeoX: GPT-2 (Conv1D weights stored [in, out]) and Gemma-3
((1 + w) RMSNorm, post-attention/post-feedforward sandwich norms, scaled embeddings, QK-norm,
sliding-window layers). Reconciliation, the real logits, and every head's attention mass and
contribution against a recomputation from plain ``transformers`` (tests.mechinterp.helpers.hf_reference)."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch

from cpi.errors import CpiError
from tests.mechinterp.helpers import conflict_items, hf_reference, load_tiny, make_tiny_extra

P = importlib.import_module("mechinterp.probe")  # the module (the package's `probe` is the function)


@pytest.fixture(scope="module", params=["gpt2", "gemma3"])
def tiny(request, tmp_path_factory):
    path = make_tiny_extra(tmp_path_factory.mktemp(request.param) / "m", request.param, seed=4)
    bridge, tok = load_tiny(path)
    return request.param, path, bridge, tok


def test_reconciles_and_matches_plain_transformers(tiny):
    from transformers import AutoModelForCausalLM

    arch, path, bridge, tok = tiny
    items = conflict_items(6)
    pitems, arr = P.probe_arrays(bridge, tok, items, template="alpaca", batch_size=4)
    assert np.all(P.recon_rel_err(arr) < 1e-3), (arch, P.recon_rel_err(arr))
    assert np.abs(arr["recon"] - arr["logit_diff"]).max() < 1e-4
    assert arr["head_err"].max() < 1e-5
    assert (np.abs(arr["logit_diff"]) > 1e-3).sum() >= 4  # not vacuous
    hf = AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager").eval()
    ref = hf_reference(hf, pitems, arch)
    np.testing.assert_allclose(arr["logit_diff"], ref["logit_diff"], atol=1e-4)
    np.testing.assert_allclose(arr["attn"], ref["attn"], atol=1e-5)
    np.testing.assert_allclose(arr["head_contrib"].sum(-1), ref["head_total"], atol=1e-5)
    assert np.abs(ref["head_total"]).max() > 1e-3


def test_gpt2_conv1d_read_as_linear_would_not_reconcile(monkeypatch):
    """The old reading (Conv1D weight taken as a Linear weight) gives wrong heads; the float32
    reconciliation check then stops the probe instead of returning the numbers."""
    import tempfile
    from pathlib import Path

    path = make_tiny_extra(Path(tempfile.mkdtemp()) / "m", "gpt2", seed=4)
    bridge, tok = load_tiny(path)
    metrics = importlib.import_module("mechinterp.metrics")  # the heads unit reads the output projection
    real = metrics.out_proj_weight

    def as_linear(o, d_model, n_heads, d_head, layer):
        return o.weight.detach().float()  # [in, out] used as [out, in]: the bug

    monkeypatch.setattr(metrics, "out_proj_weight", as_linear)
    with pytest.raises(CpiError, match="reconciliation.*GPT2LMHeadModel"):
        P.probe(bridge, tok, conflict_items(4))
    monkeypatch.setattr(metrics, "out_proj_weight", real)
    assert len(P.probe(bridge, tok, conflict_items(4))) > 0


def test_gemma3_without_post_norms_would_not_reconcile(tiny, monkeypatch):
    """Dropping the post-attention norms (or the (1 + w) offset) breaks reconciliation: the test can fail."""
    arch, _, bridge, tok = tiny
    if arch != "gemma3":
        pytest.skip("Gemma-3 only")
    run = importlib.import_module("mechinterp.run")
    real = run.readout

    def no_post(b):
        ro = real(b)
        ro.post_attn = [None] * len(ro.post_attn)
        return ro

    monkeypatch.setattr(run, "readout", no_post)
    _, arr = P.probe_arrays(bridge, tok, conflict_items(4))
    assert P.recon_rel_err(arr).max() > 1e-2


def test_softcapped_logits_are_refused(tiny, monkeypatch):
    arch, _, bridge, tok = tiny
    if arch != "gemma3":
        pytest.skip("Gemma-3 only")
    monkeypatch.setattr(bridge.original_model.config, "final_logit_softcapping", 30.0)
    with pytest.raises(CpiError, match="soft-capping"):
        P.probe(bridge, tok, conflict_items(2))
