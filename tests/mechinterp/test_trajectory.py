"""probe_trajectory: one checkpoint at a time, atomic per-checkpoint parts, resumable, errors keep work."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from cpi.errors import CpiError
from mechinterp.trajectory import ProbeConfig, probe_trajectory, read_probe_table
from tests.mechinterp.helpers import conflict_items, make_trajectory


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return make_trajectory(tmp_path_factory.mktemp("traj") / "run", "llama", steps=(10, 20, 30))


def test_resume_skips_done_checkpoints_and_matches_fresh_run(run_dir, tmp_path):
    items = conflict_items(4)
    first = [run_dir / "checkpoint-10", run_dir / "checkpoint-20"]
    out = tmp_path / "out"
    t1 = probe_trajectory(",".join(map(str, first)), items, out, batch_size=2)
    assert sorted(t1["step"].unique()) == [10, 20]
    part10 = out / "parts" / "checkpoint-10.csv"
    before = part10.stat().st_mtime_ns
    t2 = probe_trajectory(str(run_dir), items, out, batch_size=2)  # now all three
    assert part10.stat().st_mtime_ns == before  # not recomputed
    assert sorted(t2["step"].unique()) == [10, 20, 30]
    fresh = probe_trajectory(str(run_dir), items, tmp_path / "fresh", batch_size=3)
    a = t2.sort_values(["step", "category", "component", "layer", "head", "span", "metric"]).reset_index(drop=True)
    b = fresh.sort_values(["step", "category", "component", "layer", "head", "span", "metric"]).reset_index(drop=True)
    np.testing.assert_allclose(a["value"], b["value"], atol=1e-5)
    on_disk = read_probe_table(out)
    assert len(on_disk) == len(t2)
    assert set(on_disk["weights"]) == {"raw_hf"}
    assert {"checkpoint", "step", "dataset", "category", "component", "layer", "head", "span", "metric",
            "value", "std", "n"} <= set(on_disk.columns)
    # the steps really differ (different weights per checkpoint)
    ctx = on_disk[(on_disk.component == "head") & (on_disk.metric == "attn") & (on_disk.span == "context")
                  & (on_disk.category == "ALL")].groupby("step")["value"].mean()
    assert ctx.nunique() == 3


def test_failing_checkpoint_keeps_finished_work(run_dir, tmp_path):
    broken_root = tmp_path / "broken"
    shutil.copytree(run_dir / "checkpoint-10", broken_root / "checkpoint-10")
    shutil.copytree(run_dir / "checkpoint-20", broken_root / "checkpoint-20")
    (broken_root / "checkpoint-20" / "model.safetensors").write_bytes(b"not a safetensors file")
    out = tmp_path / "out"
    with pytest.raises(CpiError, match="checkpoint-20"):
        probe_trajectory(str(broken_root), conflict_items(2), out)
    assert (out / "parts" / "checkpoint-10.csv").is_file()
    kept = pd.read_csv(out / "probe.csv")
    assert set(kept["step"]) == {10}


def test_different_config_is_refused(run_dir, tmp_path):
    out = tmp_path / "out"
    probe_trajectory(str(run_dir / "checkpoint-10"), conflict_items(2), out,
                     config=ProbeConfig(checkpoints=str(run_dir / "checkpoint-10"), dataset="<items>", max_items=2))
    with pytest.raises(CpiError, match="different"):
        probe_trajectory(str(run_dir / "checkpoint-10"), conflict_items(2), out,
                         config=ProbeConfig(checkpoints=str(run_dir / "checkpoint-10"), dataset="<items>",
                                            template="plain", max_items=2))
    with pytest.raises(CpiError):
        ProbeConfig(template="nope")


def test_probe_trajectory_refuses_settings_given_twice(tmp_path):
    """With ``config=``, a keyword setting or an ``out_dir`` the config contradicts is an error, not ignored."""
    from cpi.errors import ConfigError

    cfg = ProbeConfig(checkpoints="x", dataset="<items>")
    with pytest.raises(ConfigError, match="batch_size, per_item given both as keyword and through config="):
        probe_trajectory("x", [], tmp_path / "o", batch_size=4, per_item=True, config=cfg)
    with pytest.raises(ConfigError, match="differs from config.out 'elsewhere'"):
        probe_trajectory("x", [], tmp_path / "o", config=cfg.replace(out="elsewhere"))
    assert not (tmp_path / "o").exists()
