"""The sympy derivation: Lemma 2 vs differentiation, derived expressions vs the simulator,
and every place where the derivation disagrees with the paper/notes."""

import numpy as np
import pytest

from theory import symbolic as S
from theory.config import SimConfig
from theory.simulator import simulate


@pytest.fixture(scope="module")
def N():
    return S.numeric_functions()


def test_lemma2_matches_differentiation_and_signs():
    r = S.check_lemma2(n_points=4)
    assert r["lemma_C"] < 1e-10 and r["lemma_S"] < 1e-10
    # sigma_r = 0: theta_C -> +sigma_c sigma_s m / sqrt2, theta_S -> -... (the paper's Lemma 2 sentence has them swapped)
    assert r["sign_theta_C_minus_simpl"] < 1e-10 and r["sign_theta_S_plus_simpl"] < 1e-10
    # the paper's printed theta_C formula has sigma_s sigma_r where the derivation gives sigma_c sigma_r
    assert r["paper_lemma_C"] > 1e-3


def test_derived_expressions_equal_paper_where_they_should(N):
    a = S.theory_args(SimConfig())  # n_C = n_CS
    for k, v in S.compare_with_paper(a).items():
        assert abs(v) < 1e-10, k
    D = S.derive_all()
    assert D["g_C_factorisation_residual"] == 0 and D["g_CS_factorisation_residual"] == 0
    # A_1 generalises the paper's ((n+2)/n) m_C + m_CS to n_C != n_CS
    a2 = S.theory_args(SimConfig(n_C=12, n_CS=4))
    n = 16
    assert N.A_1(*a2) == pytest.approx(2 * (13 * N.m_C(*a2) + 4 * N.m_CS(*a2)) / n, rel=1e-12)


def test_prop1_and_theorem1_at_eta_star_match_simulator(N):
    base = SimConfig()
    a = S.theory_args(base)
    eta_min = S.find_eta_star(a)
    assert eta_min == pytest.approx(16.8723242053, rel=1e-9)  # the number quoted in docs/theory.md
    eta = 1.35 * eta_min  # inside the second-phase region, where the t=1 push is strong
    t = simulate(base.replace(lr=eta, steps=2), show_progress=False).set_index("step")
    g, gs, M = t["grad_theta_C"], t["grad_theta_S"], t["M_C"]
    assert g[0] > 0 > gs[0] and g[1] < 0 < gs[1]  # Proposition 1
    assert M[1] > M[0] and M[1] > M[2]  # Theorem 1
    assert g[0] == pytest.approx(N.G0(*a), rel=1e-9)
    assert g[1] == pytest.approx(N.G1(*a, eta), rel=1e-9)
    for k in range(3):
        assert M[k] == pytest.approx(N.M_C(*a, eta, t=k), rel=1e-9)
    s1C, s1CS = N.sigma1(*a, eta)
    assert t["attn_context_C"][1] == pytest.approx(s1C, rel=1e-9)
    assert t["attn_context_CS"][1] == pytest.approx(s1CS, rel=1e-9)
    # below eta_min there is no second phase
    t2 = simulate(base.replace(lr=0.9 * eta_min, steps=1), show_progress=False)
    assert t2["grad_theta_C"].iloc[1] > 0


def test_eta_star_symbolic_equals_simulator_bisection():
    from theory.sweep import find_eta_star_sim

    base = SimConfig(n_C=6, n_CS=4, delta_C=0.25, delta_M=0.7, o_c=1.5, o_r=0.2)
    assert find_eta_star_sim(base) == pytest.approx(S.find_eta_star(S.theory_args(base)), rel=1e-8)


def test_lemma6_counterexample_first_phase_fails(N):
    """Disagreement with the paper: |m_C| > |m_C+S| (Lemma 6) is false for some admissible parameters,
    and then Proposition 1's first phase fails (attention moves to the subject from t = 0)."""
    cfg = SimConfig(n_C=2, n_CS=2, n_test=2, K_S=10, K_A=50, delta_C=0.097, delta_M=0.657, o_c=0.97, o_r=0.65, steps=1)
    a = S.theory_args(cfg)
    assert abs(N.m_C(*a)) < abs(N.m_CS(*a))
    t = simulate(cfg, show_progress=False)
    assert t["grad_theta_C"].iloc[0] < 0 and t["M_C"].iloc[1] < t["M_C"].iloc[0]


def test_eq107_is_not_sufficient(N):
    """Disagreement with the paper: Eq. 107 relies on the bound log Z - o_c <= log K_A (Eq. 103), which is
    false unless K_S + e^{o_r} <= e^{o_c}. Counterexample (n_C = n_C+S): Eq. 107 holds, yet the simulator's
    t = 1 theta_C projection is still positive (no second phase at this eta)."""
    assert not N.eq103_bound_valid(*S.theory_args(SimConfig()))
    cfg = SimConfig(n_C=7, n_CS=7, n_test=2, K_A=59, K_S=44, delta_C=0.06277625429290178, delta_M=0.19421251244405047,
                    o_c=0.47540825142874465, o_r=0.2465188279302677, lr=12.3155, steps=1)
    a = S.theory_args(cfg)
    assert not N.eq103_bound_valid(*a)
    assert N.eq107_holds(*a, cfg.lr)
    g1 = simulate(cfg, show_progress=False)["grad_theta_C"].iloc[1]
    assert g1 > 1e-3 and g1 == pytest.approx(N.G1(*a, cfg.lr), rel=1e-9)
