"""QK-only finetuning reads the query/key modules and their layout from the architecture table."""

from __future__ import annotations

import pytest

from cpi.errors import CpiError


def _tiny(kind: str):
    import torch
    from transformers import AutoModelForCausalLM, FalconConfig, OPTConfig

    from tests.tiny_models import tiny_config

    cfg = {"opt": lambda: OPTConfig(vocab_size=64, hidden_size=32, ffn_dim=64, num_hidden_layers=2,
                                    num_attention_heads=4, word_embed_proj_dim=32),
           "falcon": lambda: FalconConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                          new_decoder_architecture=False, multi_query=False)}.get(kind)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(cfg() if cfg else tiny_config(kind, 64))


def _table_with(tmp_path, monkeypatch, old: str, new: str) -> None:
    """Replace the shipped architecture table by a copy with ``old`` -> ``new`` in its text."""
    import fullscale.architectures as A

    text = A.ARCHITECTURES_FILE.read_text()
    assert old in text
    (tmp_path / "architectures.csv").write_text(text.replace(old, new))
    table = A.load_architectures(tmp_path / "architectures.csv")
    monkeypatch.setattr(A, "_shipped", lambda: table)


def test_separate_projections_are_the_rows_qk_params(tmp_path, monkeypatch):
    from fullscale.qk_only import plan_qk_only

    model = _tiny("llama")
    plan = plan_qk_only(model)
    assert plan.kind == "separate" and {n.split(".")[-2] for n in plan.trainable} == {"q_proj", "k_proj"}
    assert len(plan.full) == 2 * 2  # two layers, q and k weights (no biases in Llama)
    # the row is what decides: a table naming only q_proj trains only q_proj
    _table_with(tmp_path, monkeypatch, "LlamaForCausalLM,llama,llama,rms,false,false,separate,q_proj k_proj",
                "LlamaForCausalLM,llama,llama,rms,false,false,separate,q_proj")
    assert {n.split(".")[-2] for n in plan_qk_only(model).trainable} == {"q_proj"}


def test_fused_layout_comes_from_the_row(tmp_path, monkeypatch):
    from fullscale.qk_only import neox_qk_row_mask, plan_qk_only

    plan = plan_qk_only(_tiny("neox"))
    assert plan.kind == "fused" and not plan.full
    assert all(n.endswith(("query_key_value.weight", "query_key_value.bias")) and dim == 0 for n, dim, _ in plan.masked)
    assert all(bool((mask == neox_qk_row_mask(4, 8)).all()) for _, _, mask in plan.masked)
    # a row that says the NeoX projections are separate ones trains the whole fused matrix
    _table_with(tmp_path, monkeypatch, "fused_neox,query_key_value", "separate,query_key_value")
    plan = plan_qk_only(_tiny("neox"))
    assert plan.kind == "separate" and len(plan.full) == 2 * 2


def test_an_architecture_without_a_row(tmp_path):
    from fullscale.qk_only import plan_qk_only

    plan = plan_qk_only(_tiny("opt"))  # OPT: separate q_proj/k_proj, as the table's separate rows name them
    assert plan.kind == "separate" and {n.split(".")[-2] for n in plan.full} == {"q_proj", "k_proj"}
    assert len(plan.full) == 2 * 2 * 2  # two layers, q and k, weight and bias
    with pytest.raises(CpiError, match=r"Falcon.*no row in architectures\.csv.*a new architecture is a row"):
        plan_qk_only(_tiny("falcon"))  # fused query_key_value of another layout: refused, not guessed
