"""SimConfig validation: the model's assumptions are enforced with one-line errors naming the field."""

import json

import pytest

from cpi.errors import ConfigError
from theory.config import SimConfig


def test_default_is_admissible_and_round_trips(tmp_path):
    cfg = SimConfig()
    assert cfg.delta_M > 2 * cfg.delta_C and cfg.delta_C > 3 / (cfg.k_a - 1) and cfg.o_r <= cfg.o_c
    assert cfg.k_a > cfg.k_s and cfg.dim >= cfg.n_tokens + 2
    path = tmp_path / "c.json"
    cfg.save(path)
    assert SimConfig.from_file(path) == cfg
    assert SimConfig.from_dict(json.loads(cfg.to_json())) == cfg


@pytest.mark.parametrize(
    "changes, field",
    [
        (dict(delta_M=0.4), "delta_M"),  # delta_M <= 2 delta_C
        (dict(K_A=40, delta_C=0.05), "delta_C"),  # delta_C <= 3/(K_A - 1)
        (dict(o_r=2.0), "o_r"),  # o_r > o_c
        (dict(d=20), "'d'"),  # d too small for the vocabulary
        (dict(K_A=10), "K_A"),  # too few answer tokens for the data
        (dict(K_S=3), "K_S"),
        (dict(lr=-1.0), "lr"),
        (dict(delta_C=1.5), "delta_C"),
        (dict(n_C=0, n_CS=0), "n_C"),
        (dict(mode="sgd"), "mode"),
    ],
)
def test_assumption_violations_name_the_field(changes, field):
    with pytest.raises(ConfigError, match=field):
        SimConfig().replace(**changes)


def test_overrides_unknown_key_and_wrong_type():
    with pytest.raises(ConfigError, match="unknown field 'foo'"):
        SimConfig().with_overrides(["foo=1"])
    with pytest.raises(ConfigError, match="field 'lr'"):
        SimConfig().with_overrides(["lr=abc"])
    with pytest.raises(ConfigError, match="field 'n_C'"):
        SimConfig().with_overrides(["n_C=2.5"])
    assert SimConfig().with_overrides(["mode=full", "relation_logit=-2"]).mode == "full"


@pytest.mark.parametrize(
    "changes, field, text",
    [
        (dict(K_A=1_000_000), "K_A", "TiB"),  # value table [10^6, 10^6] float64
        (dict(steps=10**12), "steps", "TiB"),
        (dict(n_C=100_000), "n_C", "TiB"),
    ],
)
def test_size_cap_names_the_field_and_the_memory(changes, field, text):
    with pytest.raises(ConfigError, match=f"field '{field}': this configuration would need about .* {text}"):
        SimConfig().replace(**changes)


def test_size_cap_follows_the_environment(monkeypatch):
    cfg = SimConfig(K_A=400)
    monkeypatch.setenv("CPI_THEORY_MAX_GB", "0.001")
    with pytest.raises(ConfigError, match="field 'K_A'.*CPI_THEORY_MAX_GB"):
        cfg.replace(lr=1.0)
    monkeypatch.setenv("CPI_THEORY_MAX_GB", "lots")
    with pytest.raises(ConfigError, match="CPI_THEORY_MAX_GB"):
        cfg.replace(lr=1.0)


@pytest.mark.parametrize("field, value", [("o_c", 1e16), ("o_r", -1e7), ("relation_logit", -1e300)])
def test_precision_destroying_logits_refused(field, value):
    with pytest.raises(ConfigError, match=f"field '{field}'"):
        SimConfig().replace(**{field: value})


def test_just_below_the_logit_bound_stays_exact():
    """At |o_c| = 1e6 M_C(0) still equals the closed form; at 1e16 it was silently 0.119 instead of 0.290."""
    import numpy as np

    from theory.simulator import simulate

    m0 = simulate(SimConfig(o_c=1e6, o_r=0.5, steps=1), show_progress=False)["M_C"].iloc[0]
    assert m0 == pytest.approx(0.28989794855663564, rel=1e-8)
    assert np.isfinite(m0)


@pytest.mark.parametrize(
    "changes, field",
    [
        (dict(optimizer="sgd"), "batch_size"),  # sgd needs minibatches
        (dict(batch_size=4), "batch_size"),  # gd is full-batch
        (dict(optimizer="adam", batch_size=40), "batch_size"),  # more than the 32 points
        (dict(optimizer="adam", beta2=1.0), "beta2"),
        (dict(warmup_steps=500), "warmup_steps"),
        (dict(overlap=1.0), "overlap"),
        (dict(delta_M_spread=0.5), "delta_M_spread"),  # some C+S points would have delta_M < 2 delta_C
        (dict(delta_C_spread=0.9, K_A=40), "delta_C_spread"),  # some delta_C <= 3/(K_A-1)
        (dict(filter_fraction=1.0), "filter_fraction"),
        (dict(n_distractors=-1), "n_distractors"),
        (dict(overlap=0.5, d=76), "'d'"),  # overlap needs two more dimensions
    ],
)
def test_training_and_point_options_validated(changes, field):
    with pytest.raises(ConfigError, match=field):
        SimConfig().replace(**changes)
