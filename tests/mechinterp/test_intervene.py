"""Head interventions change the answer exactly as the probe's decomposition predicts."""

from __future__ import annotations

import numpy as np
import pytest

from cpi.errors import ConfigError, CpiError
from mechinterp.intervene import HeadIntervention, intervene, intervention_hooks, parse_heads, summarize_intervention
from mechinterp.probe import SPANS, collate, prepare_items, run_probe_batch
from tests.mechinterp.helpers import conflict_items, load_tiny
from tests.tiny_models import make_tiny_checkpoint


@pytest.fixture(scope="module")
def neox(tmp_path_factory):
    return load_tiny(make_tiny_checkpoint(tmp_path_factory.mktemp("neox") / "m", "neox", seed=5))


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    return load_tiny(make_tiny_checkpoint(tmp_path_factory.mktemp("llama") / "m", "llama", seed=5))


def test_value_ablation_removes_exactly_the_context_path(neox):
    """GPT-NeoX has parallel attention/MLP, so ablating the last layer's heads' context value path
    changes the residual by exactly minus their context-path output: in un-normalised units,
    (ld_int - c) * scale_int == (ld_base - c) * scale_base - contrib * scale_base."""
    bridge, tok = neox
    L, H = bridge.cfg.n_layers, bridge.cfg.n_heads
    iv = HeadIntervention(heads=tuple((L - 1, h) for h in range(H)), scale=0.0, mode="value")
    items = conflict_items(6)
    df = intervene(bridge, tok, items, iv, batch_size=4)
    pitems = prepare_items(items, tok)
    const = run_probe_batch(bridge, pitems, tok.pad_token_id)["const"]
    lhs = (df["logit_diff_int"] - const) * df["final_norm_scale_int"]
    rhs = (df["logit_diff_base"] - const - df["heads_span_contrib_base"]) * df["final_norm_scale_base"]
    np.testing.assert_allclose(lhs, rhs, atol=1e-5)
    assert df["heads_span_contrib_base"].abs().max() > 1e-3  # a real change, not a no-op
    assert df["delta_logit_diff"].abs().max() > 1e-3
    # direction: removing a positive (context-favouring) contribution lowers the un-normalised diff
    moved = lhs - (df["logit_diff_base"] - const) * df["final_norm_scale_base"]
    big = df["heads_span_contrib_base"].abs() > 1e-4
    assert big.sum() >= 3
    assert (np.sign(moved[big]) == -np.sign(df["heads_span_contrib_base"][big])).all()


def test_attention_mode_moves_mass_off_the_context(llama):
    bridge, tok = llama
    pitems = prepare_items(conflict_items(3), tok)
    H = bridge.cfg.n_heads
    iv = HeadIntervention(heads=tuple((0, h) for h in range(H)), scale=0.0, mode="attention")
    coll = collate(pitems, tok.pad_token_id, "cpu")
    mask = coll["span_masks"][:, SPANS.index("context"), :]
    hooks = intervention_hooks(bridge, lambda: mask, iv)
    base = run_probe_batch(bridge, pitems, tok.pad_token_id)
    after = run_probe_batch(bridge, pitems, tok.pad_token_id, extra_hooks=hooks)
    ctx = SPANS.index("context")
    assert base["attn"][:, 0, :, ctx].min() > 0
    np.testing.assert_allclose(after["attn"][:, 0, :, ctx], 0.0, atol=1e-7)
    np.testing.assert_allclose(after["attn"].sum(-1), 1.0, atol=1e-5)  # renormalised
    np.testing.assert_allclose(after["head_contrib"][:, 0, :, ctx], 0.0, atol=1e-7)
    # the untouched layer keeps its pattern structure (masses still sum to one) and the answer moved
    assert np.abs(after["logit_diff"] - base["logit_diff"]).max() > 1e-5
    # identity intervention changes nothing
    same = HeadIntervention(heads=((0, 0),), scale=1.0, mode="attention")
    again = run_probe_batch(bridge, pitems, tok.pad_token_id,
                            extra_hooks=intervention_hooks(bridge, lambda: mask, same))
    np.testing.assert_allclose(again["logit_diff"], base["logit_diff"], atol=1e-6)


def test_summary_and_validation(llama):
    bridge, tok = llama
    iv = HeadIntervention(heads=((1, 0), (1, 2)), scale=0.5, mode="value")
    df = intervene(bridge, tok, conflict_items(4), iv)
    s = summarize_intervention(df)
    assert set(s["category"]) == {"capital", "city", "ALL"}
    row = s[s.category == "ALL"].iloc[0]
    assert row["n"] == 4
    assert row["delta_logit_diff"] == pytest.approx(df["delta_logit_diff"].mean(), abs=1e-6)
    assert abs(row["delta_logit_diff"]) > 1e-5
    with pytest.raises(ConfigError):
        HeadIntervention(heads=())
    with pytest.raises(CpiError, match="does not exist"):
        intervene(bridge, tok, conflict_items(1), HeadIntervention(heads=((9, 0),)))
    assert parse_heads("1.*,0.1", 2, 4) == ((1, 0), (1, 1), (1, 2), (1, 3), (0, 1))
    with pytest.raises(CpiError):
        parse_heads("x.y", 2, 4)
