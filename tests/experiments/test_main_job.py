"""``cpi run``'s command line: flags generated from MainConfig, ``--quick`` and ``--no-theory`` on top."""

from __future__ import annotations

import pytest

from cpi.cli import build_parser, main
from experiments.cli import main_config
from experiments.main_job import MAIN_THEORY_FIGURES, MainConfig


def config(*argv: str) -> MainConfig:
    return main_config(build_parser().parse_args(["run", *argv]))


def test_documented_command_lines_give_their_configs():
    assert config() == MainConfig()
    assert config("--quick") == MainConfig.quick()
    cfg = config("--out", "r1", "--figures", "figs", "--no-theory")
    assert (cfg.out, cfg.figures, cfg.theory_figures) == ("r1", "figs", ())
    assert cfg.experiment == MainConfig().experiment
    cfg = config("--quick", "--set", "experiment.seeds=[0,1,2,3,4]", "--set", "conditions=[rho_low,rho_1]")
    assert (cfg.experiment.seeds, cfg.conditions, cfg.out) == ((0, 1, 2, 3, 4), ("rho_low", "rho_1"), "runs/main_quick")
    assert cfg.experiment.finetune == MainConfig.quick().experiment.finetune  # --quick is the base, --set on top


def test_every_field_has_its_generated_flag():
    cfg = config("--conditions", "rho_1", "--theory-figures", "theory_trajectory", "--theory-quick")
    assert (cfg.conditions, cfg.theory_figures, cfg.theory_quick) == (("rho_1",), ("theory_trajectory",), True)
    assert config("--quick", "--no-theory-quick").theory_quick is False
    assert config().theory_figures == MAIN_THEORY_FIGURES


def test_precedence_config_file_then_flags_then_set(tmp_path):
    f = tmp_path / "main.yaml"
    f.write_text("out: from_file\nconditions: [rho_low, rho_1]\nexperiment:\n  seeds: [4]\n")
    cfg = config("--config", str(f))
    assert (cfg.out, cfg.conditions, cfg.experiment.seeds) == ("from_file", ("rho_low", "rho_1"), (4,))
    assert config("--config", str(f), "--quick") == cfg  # --quick picks the base only when there is no file
    assert config("--config", str(f), "--out", "flag").out == "flag"
    assert config("--config", str(f), "--out", "flag", "--set", "out=set").out == "set"


def test_bad_values_are_one_line_errors(tmp_path, capsys):
    assert main(["run", "--conditions", "rho_nope", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cpi: error: ") and "unknown condition 'rho_nope'" in err and err.count("\n") == 1
    assert not (tmp_path / "r").exists()
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["run", "--quick", "--no-such-flag"])
    assert exc.value.code == 2


def test_a_user_rho_runs_against_the_control_and_a_setting_no_condition_keeps_is_refused(tmp_path, capsys):
    from experiments.controlled.conditions import compose, load_conditions
    from experiments.main_job import reference_experiment

    cfg = config("--set", "experiment.mixture.rho=0.3")
    got = compose(cfg.experiment, cfg.conditions, load_conditions(), reference_experiment(cfg))
    assert [got[n].config.mixture.rho for n in ("inside", "outside", "control")] == [0.3, 0.3, 1.0]
    assert main(["run", "--set", "experiment.mixture.rho=0.3", "--conditions", "rho_low,rho_1",
                 "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "field 'experiment.mixture.rho': set to 0.3, but every condition" in err
    assert not (tmp_path / "r").exists()
    assert (config().error_rate_sims, config("--quick").error_rate_sims, config("--error-rate-sims", "0").error_rate_sims) \
        == (200, 100, 0)


def test_a_partial_experiment_in_a_config_file_keeps_the_main_jobs_other_settings(tmp_path):
    f = tmp_path / "main.yaml"
    f.write_text("experiment:\n  seeds: [4]\n  mixture:\n    n_examples: 64\n")
    cfg = config("--config", str(f))
    default = MainConfig().experiment
    assert cfg.experiment.seeds == (4,) and cfg.experiment.mixture.n_examples == 64
    assert cfg.experiment.mixture.replace(n_examples=48) == default.mixture  # rho, min_known_margin, ... kept
    assert cfg.experiment.finetune == default.finetune and cfg.experiment.knowledge == default.knowledge


def test_the_theory_runs_at_each_conditions_measured_parameters_and_positive_controls_are_labelled(tmp_path):
    import pandas as pd

    from experiments.controlled.regime_run import RegimeResult
    from experiments.main_job import MAIN_CONDITIONS, is_positive_control, regime_lines, theory_configs

    assert [n for n in MAIN_CONDITIONS if is_positive_control(n)] == ["positive_control_20"]
    pred = pd.DataFrame([
        {"arm": "inside", "n_C": 12, "n_CS_inside": 20, "delta_c_inside": 0.2, "delta_m_inside": 0.9,
         "sim_steps": 300, "sim_lr": 2.0, "prediction": "rise, then fall"},
        {"arm": "outside", "n_C": 12, "n_CS_inside": 0, "delta_c_inside": float("nan"), "delta_m_inside": float("nan"),
         "sim_steps": float("nan"), "sim_lr": float("nan"), "prediction": "rise, no fall (no C+S record inside the regime)"},
    ])
    summary = pd.DataFrame([{"arm": "inside", "source": "record", "kind": "CS", "n": 20, "delta_m_median": 0.9,
                             "delta_m_q1": 0.8, "delta_m_q3": 0.95, "delta_c_median": 0.2, "delta_c_q1": 0.1,
                             "delta_c_q3": 0.3, "m_mean": -1.5, "n_C": 0, "n_CS_inside": 20, "n_CS_outside": 0}])
    res = RegimeResult(out=tmp_path, table=pd.DataFrame(), summary=summary, prediction=pred, lines=["[inside] ..."])
    sims = theory_configs(res)
    assert set(sims) == {"inside"}  # the outside arm is not simulated: nothing inside the regime
    s = sims["inside"]
    assert (s.n_C, s.n_CS, s.delta_C, s.delta_M, s.steps) == (12, 20, 0.2, 0.9, 300)
    lines = regime_lines(res)
    assert lines[0].startswith("before training") and "delta_C 0.20 [0.10, 0.30]" in lines[1]
    assert lines[-1] == "  prediction [inside] ..."


def test_the_longer_documented_configs_load_and_change_only_what_they_say():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "experiments" / "configs"
    default = MainConfig().experiment
    powered = config("--config", str(root / "main_powered.yaml"))
    assert powered.experiment.seeds == (0, 1, 2, 3, 4, 5) and powered.experiment.evaluate.max_items == 40
    assert powered.experiment.mixture == default.mixture and powered.experiment.finetune == default.finetune
    assert powered.conditions == MainConfig().conditions and powered.error_rate_sims == 400
    gemma = config("--config", str(root / "main_gemma.yaml"))
    assert gemma.experiment.model == "gemma-3-270m" and gemma.experiment.finetune.learning_rate == 1e-4
    assert gemma.experiment.mixture == default.mixture and gemma.theory_figures == ()
    fall = config("--config", str(root / "main_fall.yaml"))
    assert fall.conditions == ("fall_band", "outside", "control") and fall.experiment.seeds == tuple(range(8))
    assert (fall.experiment.finetune.steps, fall.experiment.finetune.save_steps) == (36, 9)
    assert fall.experiment.finetune.replace(steps=12, save_steps=4) == default.finetune
    assert fall.experiment.mixture == default.mixture and fall.experiment.evaluate.max_items == 40
    # the fall test on Gemma: only the base, the seeds and the arms differ from main_fall
    fall_gemma = config("--config", str(root / "main_fall_gemma.yaml"))
    assert fall_gemma.conditions == ("fall_band", "control") and fall_gemma.experiment.seeds == (0, 1, 3)
    assert fall_gemma.experiment.replace(model="smollm2-135m-instruct", seeds=fall.experiment.seeds) == fall.experiment
    # the long run: the fall test's records for 8 x the steps, checkpoints on a log scale
    long = config("--config", str(root / "long_fall.yaml"))
    assert long.conditions == ("fall_band", "control") and long.experiment.seeds == (0, 1, 2)
    ft = long.experiment.finetune
    assert (ft.steps, ft.save_steps, ft.save_schedule) == (288, 9, "log")
    assert [s for s in range(1, ft.steps + 1) if ft.finetune_config("b", "d", "o", 0).is_save_step(s)] == \
        [9, 18, 36, 72, 144, 288]
    assert long.experiment.replace(finetune=fall.experiment.finetune, seeds=fall.experiment.seeds) == fall.experiment


def test_outcome_lines_set_the_prediction_beside_the_fall_test(tmp_path):
    from types import SimpleNamespace

    import pandas as pd

    from experiments.controlled.regime_run import RegimeResult
    from experiments.main_job import outcome_lines

    def run(verdict, fall, lo, hi, net=(0.0, -0.01, 0.01)):
        return SimpleNamespace(verdict={"verdict": verdict, "fall": fall, "fall_lo": lo, "fall_hi": hi,
                                        "net": net[0], "net_lo": net[1], "net_hi": net[2]})

    runs = {"inside": run("rise, no significant fall", 0.02, -0.01, 0.05),
            "outside": run("rise then fall", 0.08, 0.03, 0.12),
            "positive_control_20": run("fall (no significant rise)", 0.13, 0.05, 0.22)}
    pred = pd.DataFrame({"arm": ["inside", "outside"], "prediction": ["rise only", "rise, then fall"]})
    regime = RegimeResult(out=tmp_path, table=pd.DataFrame(), summary=pd.DataFrame(), prediction=pred, lines=[])
    result = SimpleNamespace(regime=regime, sweep=SimpleNamespace(runs=runs), config=MainConfig())
    lines = outcome_lines(result)
    assert "[inside] theory: no fall (rise only); observed: no significant fall (fall +2.0 pts [-1.0, +5.0]" in lines[1]
    assert lines[1].endswith("-> agrees") and lines[2].endswith("-> agrees")
    assert "the pipeline DETECTS a fall" in lines[3]
    # "fall (no significant rise)" rests on the end below the start: that is the interval printed
    runs["outside"] = run("fall (no significant rise)", -0.035, -0.26, 0.28, net=(-0.205, -0.31, -0.09))
    said = outcome_lines(result)[2]
    assert "observed: a significant fall (end - start -20.5 pts [-31.0, -9.0], from the peak -3.5 pts [-26.0, +28.0]" in said
    assert said.endswith("-> agrees")
    runs["positive_control_20"] = run("rise, no significant fall", 0.01, -0.02, 0.04)
    runs["outside"] = run("still rising at the last checkpoint (no interior peak)", -0.03, -0.06, -0.01)
    lines = outcome_lines(result)
    assert lines[2].endswith("-> DISAGREES") and "did NOT detect the planted fall" in lines[3]
    # every regime of the simulator that ends below its peak or its start is a predicted fall
    from theory.sweep import FALLING_REGIMES, REGIMES

    for shape in REGIMES:
        pred.loc[1, "prediction"] = shape
        said = outcome_lines(result)[2]
        assert (f"theory: a fall ({shape})" in said) == (shape in FALLING_REGIMES), shape
    assert set(FALLING_REGIMES) == {"rise, then fall", "dip, rise, fall", "fall only"}
    assert said.endswith("-> agrees")           # "flat" predicts no fall; outside shows none
