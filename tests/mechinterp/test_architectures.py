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


# ------------------------------------------------------------------------------------------------
# the per-architecture table (fullscale/data/architectures.csv) and what the probe reads from it
from fullscale import architectures as A  # noqa: E402


def _tiny_hf(row):
    """A one-layer random model of ``row``'s family, built from the transformers config of its model_type."""
    from transformers import AutoConfig, AutoModelForCausalLM

    kw = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64, vocab_size=64,
              num_key_value_heads=2, head_dim=8)  # families without GQA ignore num_key_value_heads
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(AutoConfig.for_model(row.model_type, **kw)).eval()


@pytest.mark.parametrize("row", A.architectures(), ids=lambda r: r.architecture)
def test_table_facts_match_the_transformers_implementation(row):
    """Each row's facts, checked on the family's own transformers classes: class and model_type, the
    query/key module names and layout, the norm class, the (1 + w) gain, sandwich norms, GQA."""
    model = _tiny_hf(row)
    assert type(model).__name__ == row.architecture and model.config.model_type == row.model_type
    assert A.lookup(model.config) == row
    modules = dict(model.named_modules())
    leaves = {name.rsplit(".", 1)[-1]: m for name, m in modules.items() if name}
    assert set(row.qk_params) <= set(leaves), (row.qk_params, sorted(leaves))
    layout = {"separate": "v_proj" in leaves, "fused_neox": type(leaves.get("query_key_value")).__name__ == "Linear",
              "fused_gpt2": type(leaves.get("c_attn")).__name__ == "Conv1D"}
    assert [k for k, v in layout.items() if v] == [row.attention]
    norms = [m for name, m in modules.items() if "norm" in type(m).__name__.lower() and not
             any(q in name for q in ("q_norm", "k_norm"))]
    assert norms and all(isinstance(m, torch.nn.LayerNorm) == (row.norm == "layernorm") for m in norms)
    assert all(("rms" in type(m).__name__.lower()) == (row.norm == "rms") for m in norms)
    if row.norm == "rms":  # a zero weight gives x / rms(x) under the (1 + w) gain, and zeros without it
        n = norms[0]
        with torch.no_grad():
            n.weight.zero_()
            y = n(torch.randn(2, 32))
        assert bool(y.abs().max() > 0.5) == row.rmsnorm_offset
    block = next(m for name, m in modules.items() if name.endswith(".0") and ("layers" in name or ".h." in name))
    block_norms = [c for c in block.children() if c in norms]
    assert (len(block_norms) > 2) == row.sandwich_norms, [type(c).__name__ for c in block.children()]
    kv_width = {"separate": lambda: leaves["k_proj"].out_features,
                "fused_neox": lambda: leaves["query_key_value"].out_features // 3,
                "fused_gpt2": lambda: leaves["c_attn"].weight.shape[1] // 3}[row.attention]()
    assert (kv_width == 2 * 8) == row.gqa and kv_width in (16, 32)  # 2 of 4 heads only where the family has GQA


def test_lookup_by_class_model_type_gguf_name_and_config():
    gemma = A.architecture("Gemma3ForCausalLM")
    assert A.lookup("gemma3_text") is gemma and A.lookup("gemma3") is gemma
    assert (gemma.norm, gemma.rmsnorm_offset, gemma.sandwich_norms, gemma.qk_params) == ("rms", True, True,
                                                                                          ("q_proj", "k_proj"))
    assert A.lookup("gpt_neox").attention == "fused_neox" and A.lookup("gpt2").qk_params == ("c_attn",)
    assert A.lookup("FalconForCausalLM") is None
    with pytest.raises(CpiError, match="'FalconForCausalLM' has no row in architectures.csv"):
        A.architecture("FalconForCausalLM")
    assert "query_key_value" in A.qk_parameter_names() and "q_proj" in A.qk_parameter_names()


def test_load_lists_the_verified_architectures_of_the_table():
    """mechinterp.load's verified list and the table's probe_verified column say the same (one home at merge)."""
    from mechinterp.load import PROBE_VERIFIED_ARCHITECTURES

    assert set(PROBE_VERIFIED_ARCHITECTURES) == set(A.probe_verified_architectures())


def test_every_registry_model_has_a_verified_row():
    from fullscale.models import load_registry

    for spec in load_registry().values():
        row = A.lookup(spec.architecture)
        assert row is not None and row.probe_verified, spec.name


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace(",notes", ""), "missing column"),
    (lambda t: t.replace("rms,false,false,separate", "rms,maybe,false,separate", 1), "line 2.*'rmsnorm_offset'"),
    (lambda t: t.replace("LlamaForCausalLM,llama,llama,rms", "LlamaForCausalLM,llama,llama,batchnorm"), "'norm'"),
    (lambda t: t.replace("MistralForCausalLM,mistral", "MistralForCausalLM,llama"), "line 3: model_type 'llama'"),
    (lambda t: t.replace("layernorm,false,false,fused_neox", "layernorm,true,false,fused_neox"), "rmsnorm_offset"),
])
def test_a_bad_table_is_refused_naming_file_line_and_field(tmp_path, edit, message):
    bad = tmp_path / "architectures.csv"
    bad.write_text(edit(A.ARCHITECTURES_FILE.read_text()))
    with pytest.raises(CpiError, match=f"architecture table {bad}.*{message}"):
        A.load_architectures(bad)


def test_the_probe_reads_the_table_and_refuses_a_row_its_modules_contradict(tiny, monkeypatch):
    """The norm form, the (1 + w) gain and the sandwich norms come from the table: a row saying otherwise
    is refused (norm form, sandwich norms) or caught by the float32 reconciliation (the gain)."""
    import dataclasses

    R = importlib.import_module("mechinterp.readout")
    arch, _, bridge, tok = tiny
    row = R.bridge_architecture(bridge)
    assert row is not None and row.architecture == bridge.cfg.architecture
    real = R.bridge_architecture
    other = "rms" if row.norm == "layernorm" else "layernorm"
    monkeypatch.setattr(R, "bridge_architecture", lambda b: dataclasses.replace(real(b), norm=other,
                                                                                 rmsnorm_offset=False))
    with pytest.raises(CpiError, match=f"final norm .* is a {row.norm} norm but the architecture table says {other}"):
        P.probe(bridge, tok, conflict_items(2))
    monkeypatch.setattr(R, "bridge_architecture",
                        lambda b: dataclasses.replace(real(b), sandwich_norms=not row.sandwich_norms))
    with pytest.raises(CpiError, match="sandwich_norms"):
        P.probe(bridge, tok, conflict_items(2))
    if row.rmsnorm_offset:
        monkeypatch.setattr(R, "bridge_architecture", lambda b: dataclasses.replace(real(b), rmsnorm_offset=False))
        with pytest.raises(CpiError, match="reconciliation"):
            P.probe(bridge, tok, conflict_items(2))
