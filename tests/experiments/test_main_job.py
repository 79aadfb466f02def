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
