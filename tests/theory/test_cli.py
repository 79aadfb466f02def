"""CLI: `cpi theory simulate|sweep|prove|figures`, bad input -> exit 2 and nothing written."""

import json

import pandas as pd
import pytest

from cpi.cli import main


def test_simulate_writes_outputs(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["theory", "simulate", "--out", str(out), "--set", "steps=40", "--set", "n_CS=8"]) == 0
    t = pd.read_csv(out / "trajectory.csv")
    assert len(t) == 41 and "M_C" in t and (t["n_CS"] == 8).all()
    meta = json.loads((out / "config.json").read_text())
    assert meta["config"]["steps"] == 40 and "git_hash" in meta["meta"]
    assert (out / "trajectory.png").stat().st_size > 0 and (out / "trajectory.pdf").exists()
    assert "peak" in capsys.readouterr().out


def test_simulate_from_config_file(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("steps: 5\nmode: full\n")
    out = tmp_path / "run"
    assert main(["theory", "simulate", "--config", str(cfg), "--out", str(out), "--no-figures"]) == 0
    assert pd.read_csv(out / "trajectory.csv")["mode"].eq("full").all()


@pytest.mark.parametrize(
    "sets, msg",
    [
        (["foo=1"], "unknown field 'foo'"),
        (["lr=abc"], "field 'lr'"),
        (["delta_M=0.3"], "delta_M"),
        (["K_A=40", "delta_C=0.05"], "delta_C"),
        (["o_r=2"], "o_r"),
        (["d=10"], "field 'd'"),
        (["init_noise=1.0e+308", "steps=3"], "non-finite loss"),
    ],
)
def test_bad_input_exit_2_nothing_written(tmp_path, capsys, sets, msg):
    out = tmp_path / "run"
    args = ["theory", "simulate", "--out", str(out)]
    for s in sets:
        args += ["--set", s]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cpi: error:") and msg in err and "\n" not in err
    assert not out.exists()


def test_bad_config_file(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["theory", "simulate", "--config", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert str(bad) in capsys.readouterr().err


def test_sweep_grid(tmp_path):
    out = tmp_path / "sw"
    assert main(["theory", "sweep", "--out", str(out), "--set", "steps=30",
                 "--grid", "n_CS=0,8,16", "--grid", "lr=1,4"]) == 0
    s = pd.read_csv(out / "summary.csv")
    assert len(s) == 6 and {"inversion", "t_peak"} <= set(s.columns)
    assert (out / "trajectory.csv").exists() and (out / "phase_diagram.png").exists()
    assert main(["theory", "sweep", "--out", str(tmp_path / "x"), "--grid", "bogus=1,2"]) == 2


def test_prove_passes(capsys):
    assert main(["theory", "prove", "--draws", "8"]) == 0
    out = capsys.readouterr().out
    assert "all checks passed" in out and "eta_min" in out and "[FINDING]" in out


@pytest.mark.parametrize("sets, msg", [(["K_A=1000000"], "field 'K_A'"), (["steps=1000000000000"], "field 'steps'"),
                                       (["o_c=1e16"], "field 'o_c'")])
def test_size_and_precision_caps_exit_2(tmp_path, capsys, sets, msg):
    out = tmp_path / "run"
    assert main(["theory", "simulate", "--out", str(out), "--set", sets[0]]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cpi: error:") and msg in err and "\n" not in err and not out.exists()


def test_sweep_over_optimizers(tmp_path):
    out = tmp_path / "opt"
    assert main(["theory", "sweep", "--out", str(out), "--set", "steps=20", "--set", "optimizer=sgd", "--set", "batch_size=8",
                 "--grid", "optimizer=sgd,adamw", "--grid", "lr=0.05,0.5", "--seeds", "0", "1", "--no-trajectory"]) == 0
    s = pd.read_csv(out / "summary.csv")
    assert len(s) == 8 and set(s["optimizer"]) == {"sgd", "adamw"} and "regime" in s


def test_figures_only_a_subset(tmp_path, capsys):
    assert main(["theory", "figures", "--quick", "--out", str(tmp_path), "--only", "theory_eta_star"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["theory_eta_star.pdf", "theory_eta_star.png"]
    assert main(["theory", "figures", "--out", str(tmp_path), "--only", "bogus"]) == 2
    assert "unknown figure 'bogus'" in capsys.readouterr().err
