"""Optimizers, schedules, minibatches, heterogeneous points, filtering, overlap and distractors.

(Their trajectories against autograd + torch.optim on explicit matrices are cases of
test_simulate.py::test_closed_form_matches_autograd.)"""

import numpy as np
import pandas as pd
import pytest

from theory.config import SimConfig
from theory.data import CAT_CS, build_dataset, point_deltas
from theory.model import embeddings, gram_matrix, initial_state, naive_simulate
from theory.optim import filter_points, lr_factors, minibatch_schedule
from theory.simulator import simulate


def test_adam_is_basis_dependent_and_gd_is_not():
    """basis="canonical" Adam differs from torch's Adam on rotated embeddings; GD does not depend on the basis."""
    for opt, lr, same in (("adam", 0.05, False), ("gd", 2.0, True)):
        cfg = SimConfig(n_C=4, n_CS=3, n_test=2, steps=6, optimizer=opt, lr=lr)
        sim = simulate(cfg, seeds=[1], show_progress=False)["M_C"].to_numpy()
        rot = pd.DataFrame(naive_simulate(cfg, seed=1, rotate=True))["M_C"].to_numpy()
        assert np.allclose(sim, rot, rtol=1e-9, atol=1e-12) is same
    rand = SimConfig(n_C=4, n_CS=3, n_test=2, steps=6, optimizer="adam", lr=0.05, basis="random")
    s = simulate(rand, seeds=[1, 2], show_progress=False)
    assert not np.allclose(s[s.seed == 1]["M_C"], s[s.seed == 2]["M_C"])  # each seed its own rotation


@pytest.mark.parametrize("schedule", ["constant", "linear", "cosine"])
@pytest.mark.parametrize("warmup", [0, 7])
def test_lr_factors_equal_transformers_schedules(schedule, warmup):
    import torch
    from transformers import get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup, get_linear_schedule_with_warmup

    cfg = SimConfig(steps=40, warmup_steps=warmup, schedule=schedule)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    if schedule == "constant":
        sched = get_constant_schedule_with_warmup(opt, warmup)
    else:
        make = get_linear_schedule_with_warmup if schedule == "linear" else get_cosine_schedule_with_warmup
        sched = make(opt, warmup, cfg.steps)
    ref = []
    for _ in range(cfg.steps):
        ref.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    np.testing.assert_allclose(lr_factors(cfg), ref, rtol=1e-12, atol=1e-15)


def test_minibatch_schedule_is_an_epoch_shuffle():
    kept = np.array([0, 2, 3, 5, 6, 9, 11])
    idx, wt = minibatch_schedule(kept, 3, 12, seed=4)
    assert idx.shape == wt.shape == (12, 3)
    np.testing.assert_allclose(wt.sum(1), 1.0)  # every minibatch loss is a mean
    for e in range(4):  # 3 batches per epoch (3 + 3 + 1): each kept point exactly once
        rows = slice(3 * e, 3 * e + 3)
        used = idx[rows][wt[rows] > 0]
        assert sorted(used) == sorted(kept)
    same, other = minibatch_schedule(kept, 3, 12, seed=4), minibatch_schedule(kept, 3, 12, seed=5)
    assert np.array_equal(same[0], idx) and not np.array_equal(other[0], idx)


def test_gd_default_numbers_unchanged():
    """The GD default (and its figures) are unchanged by the new options: numbers pinned from before them."""
    m = simulate(SimConfig(), show_progress=False)["M_C"].to_numpy()
    pinned = {0: 0.28989794855663564, 1: 0.41722659743074164, 20: 0.8376899381697789, 100: 0.5463100707401135,
              433: 0.500004047576199, 500: 0.4990609160115658}
    for step, v in pinned.items():
        assert m[step] == pytest.approx(v, rel=1e-13, abs=0), step


def test_mixed_optimizers_in_one_call_equal_separate_calls():
    cfgs = [SimConfig(steps=15), SimConfig(steps=15, optimizer="adamw", lr=0.03, weight_decay=0.1),
            SimConfig(steps=15, optimizer="sgd", batch_size=5), SimConfig(steps=15, optimizer="momentum", lr=0.3),
            # alone, a random-basis AdamW runs the rank-one Adam step; beside adam + L2 the whole W_KQ
            SimConfig(steps=15, optimizer="adamw", lr=0.03, weight_decay=0.1, basis="random"),
            SimConfig(steps=15, optimizer="adam", lr=0.03, weight_decay=0.1, basis="random")]
    together = simulate(cfgs, seeds=[0, 1], show_progress=False)
    for i, c in enumerate(cfgs):
        alone = simulate(c, seeds=[0, 1], show_progress=False)
        np.testing.assert_allclose(together[together.config_id == i]["M_C"].to_numpy(), alone["M_C"].to_numpy(),
                                   rtol=1e-12, atol=1e-14)


def test_sgd_seeds_differ_and_repeat():
    cfg = SimConfig(steps=30, optimizer="sgd", batch_size=4)
    a = simulate(cfg, seeds=[0, 1], show_progress=False)
    b = simulate(cfg, seeds=[0, 1], show_progress=False)
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    assert not np.array_equal(a[a.seed == 0]["M_C"].to_numpy(), a[a.seed == 1]["M_C"].to_numpy())


def test_heterogeneous_deltas_are_realised_per_point():
    cfg = SimConfig(n_C=6, n_CS=6, delta_C=0.2, delta_M=0.75, delta_C_spread=0.3, delta_M_spread=0.2)
    data = build_dataset(cfg)
    dC, dM = point_deltas(cfg, 3, data)
    _, V = initial_state(cfg, 3, data)
    for i, (c, s) in enumerate(zip(data.train_target, data.train_subject)):
        col_c = np.exp(V[:, c] - np.logaddexp.reduce(V[:, c]))
        assert col_c[c] == pytest.approx(dC[i], rel=1e-12)
        if data.train_cat[i] == CAT_CS:
            col_s = np.exp(V[:, s] - np.logaddexp.reduce(V[:, s]))
            assert col_s[c] == pytest.approx(dM[i], rel=1e-12)
    assert 0.14 <= dC.min() and dC.max() <= 0.26 and dC.std() > 0.01
    assert not np.array_equal(dC, point_deltas(cfg, 4, data)[0])


def test_perfect_filter_equals_training_without_the_CS_points():
    """Noise 0, dropping exactly the C+S share: precision 1, and the run equals one without C+S points."""
    cfg = SimConfig(n_C=8, n_CS=8, K_S=20, K_A=40, steps=60, filter_fraction=0.5)
    data = build_dataset(cfg)
    f = filter_points(cfg, data, initial_state(cfg, 0, data)[1], 0)
    assert f.precision == 1.0 and f.recall == 1.0 and f.n_dropped == 8
    t = simulate([cfg, cfg.replace(n_CS=0, filter_fraction=0.0)], show_progress=False)
    np.testing.assert_allclose(t[t.config_id == 0]["M_C"].to_numpy(), t[t.config_id == 1]["M_C"].to_numpy(), rtol=1e-12)
    assert t[t.config_id == 0]["filter_precision"].eq(1.0).all()


def test_noisy_filter_precision_falls_towards_the_CS_share():
    cfg = SimConfig(n_C=30, n_CS=10, filter_fraction=0.25)
    data = build_dataset(cfg)
    V0 = initial_state(cfg, 0, data)[1]
    clean = filter_points(cfg, data, V0, 0).precision
    noisy = np.mean([filter_points(cfg.replace(filter_noise=100.0), data, V0, s).precision for s in range(40)])
    assert clean == 1.0 and abs(noisy - 10 / 40) < 0.08


def test_overlap_gram_and_cosines():
    cfg = SimConfig(n_C=3, n_CS=2, n_test=1, overlap=0.3)
    data = build_dataset(cfg)
    Phi, th_S, th_C = embeddings(cfg, data, seed=2)
    np.testing.assert_allclose(Phi.T @ Phi, gram_matrix(data, 0.3), atol=1e-12)
    a = np.flatnonzero(data.is_answer)[:2]
    ident = Phi[:, a] * np.sqrt(2) - th_C[:, None]  # identity parts of two answer tokens
    assert ident[:, 0] @ ident[:, 1] == pytest.approx(0.3, abs=1e-12)
    assert abs(th_C @ ident[:, 0]) < 1e-12 and abs(th_S @ Phi[:, a[0]]) < 1e-12
    assert cfg.dim == cfg.k_s + cfg.k_a + 5


def test_distractors_are_fresh_answer_tokens():
    cfg = SimConfig(n_C=3, n_CS=2, n_S=2, n_test=2, n_distractors=2, relation_logit=-1.0)
    d = build_dataset(cfg)
    assert d.train_tokens.shape == (7, 5) and d.test_tokens.shape == (2, 5)
    ctx = d.train_mask[:, 0]
    dis = np.concatenate([d.train_tokens[ctx, 3:].ravel(), d.test_tokens[:, 3:].ravel()])
    assert d.is_answer[dis].all() and len(set(dis)) == dis.size  # fresh: no distractor repeats
    others = set(d.train_tokens[:, :2].ravel()) | set(d.test_tokens[:, :2].ravel()) | set(d.test_param)
    assert not set(dis) & others
    assert not d.train_mask[~ctx, 3:].any()  # S points have no context, so no distractors
    t = simulate(cfg.replace(steps=1), show_progress=False)
    assert t["attn_distractor_test"].iloc[0] > 0 and t["attn_context_test"].iloc[0] < 0.5
