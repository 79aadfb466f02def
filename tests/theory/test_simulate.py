"""The batched closed-form simulator against autograd on explicit d x d matrices, and its dynamics."""

import numpy as np
import pandas as pd
import pytest
import torch

from theory.config import SimConfig
from theory.model import naive_simulate
from theory.simulator import METRICS, simulate

CASES = {
    "qk": dict(),
    "full+S+aug+noise": dict(mode="full", relation_logit=-2.0, n_S=3, n_aug=2, init_noise=0.1, d=None),
    "v, unseen S, wide d": dict(mode="v", relation_logit=-1.0, n_S=2, s_memorized=False, K_A=60, d=120),
    "full, slow V": dict(mode="full", lr_V_scale=0.3, n_CS=1, lr=3.0),
}


@pytest.mark.parametrize("name", list(CASES))
def test_closed_form_matches_autograd(name):
    """Closed-form gradients == torch autograd on the explicit model (random rotation of R^d), float64."""
    cfg = SimConfig(**{"n_C": 4, "n_CS": 3, "n_test": 2, "steps": 6, **CASES[name]})
    table = simulate(cfg, seeds=[5], show_progress=False)
    ref = pd.DataFrame(naive_simulate(cfg, seed=5))
    for m in ("M_C", "attn_context_test", "grad_theta_C", "grad_theta_S", "loss"):
        a = table[m].to_numpy()[: cfg.steps]
        b = ref[m].to_numpy()[: cfg.steps]
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12, err_msg=m)


def test_table_shape_and_columns():
    cfgs = [SimConfig(steps=7), SimConfig(steps=5, n_CS=0, label="ctl")]
    t = simulate(cfgs, seeds=[0, 1], show_progress=False)
    assert len(t) == 2 * 8 + 2 * 6
    for m in METRICS:
        assert m in t.columns
    for c in ("config_id", "seed", "step", "delta_C", "K_A", "mode", "label"):
        assert c in t.columns
    assert t[t.config_id == 1]["loss_CS"].isna().all()  # no C+S points in the control


def test_same_seed_bitwise_and_noise_seeds_differ():
    cfg = SimConfig(init_noise=0.05, steps=30, mode="full")
    a = simulate(cfg, seeds=[1, 2], show_progress=False)
    b = simulate(cfg, seeds=[1, 2], show_progress=False)
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    s1, s2 = a[a.seed == 1]["M_C"].to_numpy(), a[a.seed == 2]["M_C"].to_numpy()
    assert not np.array_equal(s1, s2)


def test_batching_and_padding_do_not_change_results():
    """Mixed shapes in one call (grouped by vocabulary, padded finetuning sets) == one call per config."""
    cfgs = [SimConfig(steps=20), SimConfig(steps=20, n_CS=4, K_S=36, K_A=40), SimConfig(steps=20, K_A=50, lr=1.0)]
    together = simulate(cfgs, show_progress=False)
    for i, c in enumerate(cfgs):
        alone = simulate(c, show_progress=False)
        np.testing.assert_allclose(together[together.config_id == i]["M_C"].to_numpy(), alone["M_C"].to_numpy(),
                                   rtol=1e-12, atol=1e-14)


def test_default_shows_the_inversion_and_control_does_not():
    base = SimConfig()
    t = simulate([base, base.replace(n_CS=0)], show_progress=False)
    m = t[t.config_id == 0]["M_C"].to_numpy()
    pk = int(m.argmax())
    assert 0 < pk < len(m) - 1
    assert m[pk] - m[0] > 0.3  # rises well above its start
    assert m[pk] - m[-1] > 0.25  # then falls well below its peak
    ctl = t[t.config_id == 1]["M_C"].to_numpy()
    assert ctl.max() - ctl[-1] < 1e-3  # no C+S points: no fall


def test_M_C0_closed_form():
    for dc, dm in ((0.2, 0.6), (0.1, 0.9), (0.3, 0.65)):
        cfg = SimConfig(delta_C=dc, delta_M=dm, steps=1)
        m0 = simulate(cfg, show_progress=False)["M_C"].iloc[0]
        lg = lambda p: np.log(p / (1 - p))  # noqa: E731
        assert m0 == pytest.approx(1 / (1 + np.exp(-(lg(dc) - lg(dm)) / 2)), rel=1e-12)


def test_qk_only_freezes_values_and_v_only_freezes_attention():
    t = simulate([SimConfig(steps=30), SimConfig(steps=30, mode="v")], show_progress=False)
    qk, v = t[t.config_id == 0], t[t.config_id == 1]
    assert qk["value_pred_C"].nunique() == 1  # W_V frozen
    assert v["attn_context_C"].nunique() == 1 and v["attn_context_test"].nunique() == 1  # W_KQ frozen
    assert v["value_pred_C"].iloc[-1] > v["value_pred_C"].iloc[0]


def test_prop3_one_full_step_raises_subject_value_predictiveness():
    for mode in ("full", "v"):
        t = simulate(SimConfig(mode=mode, steps=1), show_progress=False)
        assert t["value_pred_C"].iloc[1] > t["value_pred_C"].iloc[0]


def test_prop2_memorized_S_points_raise_theta_S_and_keep_theta_C():
    """Needs sigma_r > 0 for the [s, r] points (their gradient is sigma_s sigma_r (...)): relation_logit = -2."""
    old = SimConfig(relation_logit=-2.0, K_S=40, K_A=44, steps=1)
    new = old.replace(n_S=4)
    t = simulate([old, new], show_progress=False)
    g_old, g_new = t[(t.config_id == 0) & (t.step == 0)].iloc[0], t[(t.config_id == 1) & (t.step == 0)].iloc[0]
    n_old, n_new = old.n_train, new.n_train
    # compare summed (not averaged) gradients: the S points add to theta_S and nothing to theta_C
    assert g_new.grad_theta_S * n_new > g_old.grad_theta_S * n_old
    assert g_new.grad_theta_C * n_new == pytest.approx(g_old.grad_theta_C * n_old, rel=1e-12)


def test_sigma_r_zero_gives_exact_paper_start():
    t = simulate(SimConfig(steps=1), show_progress=False)
    r0 = t.iloc[0]
    assert r0.attn_context_test == 0.5 and r0.attn_subject_test == 0.5 and r0.attn_relation_test == 0.0
    assert r0.grad_theta_S == pytest.approx(-r0.grad_theta_C, rel=1e-14)


def test_non_finite_loss_is_a_cpi_error():
    from cpi.errors import CpiError

    with pytest.raises(CpiError, match="non-finite loss at step 0"):
        simulate(SimConfig(init_noise=1e308, steps=2), show_progress=False)


def test_torch_threads_set_for_the_run_then_restored(monkeypatch):
    """simulate(num_threads=k) runs on k threads and gives the caller's setting back (fails without either)."""
    import theory.simulator as sim

    seen = []
    inner = sim._simulate
    monkeypatch.setattr(sim, "_simulate", lambda *a: seen.append(torch.get_num_threads()) or inner(*a))
    before = torch.get_num_threads()
    run_with = 2 if before != 2 else 1
    simulate(SimConfig(steps=2), show_progress=False, num_threads=run_with)
    assert seen == [run_with]
    assert torch.get_num_threads() == before
