"""One finetuning settings block (fullscale.finetune_config.FinetuneSettings) in the controlled experiment and the
organism: the driver configs and the controlled folder keys are the ones computed before the block was shared."""

from __future__ import annotations

from pathlib import Path

import pytest

from cpi.errors import ConfigError
from experiments.controlled.conditions import compose, load_conditions
from experiments.controlled.config import ControlledConfig, TrainSettings
from experiments.controlled.keys import content_key
from experiments.organism.experiment import OrganismConfig, OrganismFinetune
from fullscale.finetune_config import FinetuneSettings

# content_key(FinetuneConfig.content_dict()) (its to_dict() then) of each config's finetune_config(...) and content_key(config.finetune),
# both computed with the code before FinetuneSettings existed (TrainSettings, OrganismConfig.ft_* fields)
BEFORE_DRIVER = {"default": "9d420dcaeda5", "quick": "ca5a8b343f77", "main": "eee1ad50beeb",
                 "filter": "2b5fa78a25c1", "filter_gap": "e90a2c1ca1c6", "qk_only": "501ffc3acce8",
                 "positive_control_20": "96073823ed3b", "rho_low": "9d420dcaeda5"}
BEFORE_FOLDER = {"default": "539fa5224dba", "quick": "dbbecc878669", "main": "52c038191ce8",
                 "filter": "7905570e8e9d", "filter_gap": "faf0a82953ba", "qk_only": "fb521a2b9b39",
                 "positive_control_20": "16173df07817", "rho_low": "539fa5224dba"}


def _controlled(name: str) -> ControlledConfig:
    from experiments.main_job import default_experiment

    if name in ("default", "quick", "main"):
        return {"default": ControlledConfig, "quick": ControlledConfig.quick, "main": default_experiment}[name]()
    table = load_conditions(None)
    return compose(ControlledConfig(), [name], table)[name].config


@pytest.mark.parametrize("name", sorted(BEFORE_DRIVER))
def test_controlled_driver_config_and_folder_key_are_as_before(name):
    cfg = _controlled(name)
    driver = cfg.replace(dtype="float32").finetune_config("base", Path("d.jsonl"), Path("o"), 3)  # before: float32
    assert content_key(driver.content_dict()) == BEFORE_DRIVER[name]
    assert driver.replace(save_schedule="log").content_dict() != driver.content_dict()  # a log schedule is content
    assert content_key(cfg.finetune) == BEFORE_FOLDER[name]


ORGANISM_BEFORE = {  # name -> (changes, key without filter scores, key with a filter-scores table)
    "default": ({}, "9947795a0b0f", "9947795a0b0f"),
    "filter": ({"finetune.filter_fraction": 0.25}, "2dad11bba645", "d432d55ebc8c"),
    "qk": ({"finetune.method": "qk_only", "finetune.learning_rate": 3e-3}, "a94d5d87e23f", "a94d5d87e23f"),
}


@pytest.mark.parametrize("name", sorted(ORGANISM_BEFORE))
def test_organism_driver_config_is_as_before(name):
    changes, plain, scored = ORGANISM_BEFORE[name]
    cfg = OrganismConfig().replace(**changes)
    assert content_key(cfg.finetune_config(Path("b"), Path("d.jsonl"), Path("o")).content_dict()) == plain
    assert content_key(cfg.finetune_config(Path("b"), Path("d.jsonl"), Path("o"),
                                           filter_scores=Path("s.csv")).content_dict()) == scored
    quick = OrganismConfig.quick().replace(**{"finetune.lr_scheduler": "cosine", "finetune.steps": 50,
                                              "finetune.save_steps": 5, "finetune.batch_size": 4})
    assert content_key(quick.finetune_config(Path("b"), Path("d.jsonl"), Path("o")).content_dict()) == "2ce65a78844b"


def test_one_settings_class_each_experiment_states_its_own_defaults():
    assert issubclass(TrainSettings, FinetuneSettings) and issubclass(OrganismFinetune, FinetuneSettings)
    assert isinstance(ControlledConfig().finetune, TrainSettings) and isinstance(OrganismConfig().finetune,
                                                                                  OrganismFinetune)
    driver = FinetuneSettings()
    assert (driver.learning_rate, driver.lr_scheduler, driver.method) == (2e-5, "linear", "full")  # cpi finetune's
    assert (TrainSettings().learning_rate, TrainSettings().method) == (3e-4, "lora")
    assert (OrganismFinetune().learning_rate, OrganismFinetune().method) == (1e-3, "full")
    # the same check in both: one message
    for cfg in (ControlledConfig(), OrganismConfig.quick()):
        with pytest.raises(ConfigError, match=r"field 'finetune\.save_steps': must be <= finetune\.steps"):
            cfg.replace(**{"finetune.save_steps": 10_000})
        with pytest.raises(ConfigError, match=r"field 'finetune\.lr_scheduler': unknown schedule 'cosinus'"):
            cfg.replace(**{"finetune.lr_scheduler": "cosinus"})


@pytest.mark.parametrize("old,new", [("ft_lr=1e-3", "finetune.learning_rate"), ("qk_only=true", "finetune.method"),
                                     ("save_steps=5", "finetune.save_steps")])
def test_organism_refuses_the_flat_names_with_their_new_key(old, new):
    with pytest.raises(ConfigError, match=rf"moved into the finetune block: {new.replace('.', '[.]')}"):
        OrganismConfig().with_overrides([old])
    with pytest.raises(ConfigError, match="moved into the finetune block"):
        OrganismConfig.from_dict({old.split("=")[0]: 1})


def test_an_organism_folder_stored_with_flat_fields_is_the_same_run():
    cfg = OrganismConfig.quick().replace(**{"finetune.method": "qk_only", "finetune.learning_rate": 3e-3})
    stored = {k: v for k, v in cfg.to_dict().items() if k != "finetune"}
    stored.update(ft_lr=3e-3, ft_steps=120, ft_batch_size=16, ft_scheduler="constant", save_steps=20, qk_only=True,
                  filter_fraction=0.0, filter_criterion="loss_without_context")  # as the earlier version saved it
    assert OrganismConfig.content_of(stored) == cfg.content_dict()
    assert OrganismConfig.from_stored(dict(stored, out=cfg.out)) == cfg  # figures/organism_run.py reads it back
    stored["ft_lr"] = 1e-3
    assert OrganismConfig.content_of(stored) != cfg.content_dict()
