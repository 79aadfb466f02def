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
