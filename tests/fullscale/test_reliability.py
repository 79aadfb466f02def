"""Results you can trust after interruptions, collisions and reruns (issue 13).

Resume keyed by content (weights, dataset contents, settings), a lock per results folder, failed
commands that leave a finished run untouched, recorded finetuning segments, byte-identical
reruns on one machine, and an interrupted ``cpi run --quick`` that keeps its checkpoint cadence.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from cpi.cli import main
from cpi.errors import CpiError
from tests.mechinterp.helpers import conflict_items, make_trajectory, write_jsonl

REPO = Path(__file__).parents[2]
FAST = ["--modes", "logprob", "--n-boot", "10", "--no-plot", "--batch-size", "4"]


@pytest.fixture(scope="module")
def traj(tmp_path_factory):
    root = tmp_path_factory.mktemp("rel")
    run = make_trajectory(root / "run", steps=(10, 20))
    data = write_jsonl(conflict_items(4), root / "items.jsonl")
    return {"root": root, "run": run, "data": data}


def _evaluate(traj, out, *extra, run=None, data=None):
    return main(["evaluate", "--checkpoints", str(run or traj["run"]), "--datasets", str(data or traj["data"]),
                 "--out", str(out), *FAST, *extra])


def _tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------- text in tables


def test_evaluate_resumes_after_rows_with_carriage_returns(traj, tmp_path, capsys):
    """Issue 9's crash: a context (so the prompt column) holding \\r, \\r\\n, quotes and commas; the run
    resumes from its own rows without splitting them, and every cell reads back as written."""
    from fullscale.conflicts import ConflictItem, items_to_jsonl
    from fullscale.evaluate import load_results

    nasty = [ConflictItem(id=f"cr-{i}", dataset="CF_CR", category="capital",
                          context=f"In this story{sep}the capital of France is Lyon, \"truly\".{sep}Lyon.",
                          question="What is the capital of France?", context_answer="Lyon", parametric_answer="Paris")
             for i, sep in enumerate(["\r", "\r\n", "\n", "\x0b", " ünï "])]
    data = items_to_jsonl(nasty, tmp_path / "cr.jsonl")
    out = tmp_path / "out"
    one = make_trajectory(tmp_path / "one", steps=(10,))
    assert _evaluate(traj, out, run=one, data=data) == 0
    items, _ = load_results(out)
    assert len(items) == 5 and items["prompt"].str.contains("\r").sum() == 2
    assert all(it.context in p for it, p in zip(nasty, items.sort_values("item_id")["prompt"]))
    # resume: adds a checkpoint, reads the stored rows back (the old writer split them and crashed here)
    make_trajectory(tmp_path / "one", steps=(10, 20))
    capsys.readouterr()
    assert _evaluate(traj, out, run=one, data=data) == 0
    items2, summary = load_results(out)
    assert len(items2) == 10 and set(items2["step"]) == {10, 20}
    first = items2[items2["step"] == 10].reset_index(drop=True)
    pd.testing.assert_frame_equal(first, items.reset_index(drop=True))
    assert summary.loc[summary["category"] == "ALL", "n"].tolist() == [5, 5]


# --------------------------------------------------------------------------- resume keyed by content


def test_evaluate_never_reuses_rows_of_other_weights(traj, tmp_path, capsys):
    from fullscale.evaluate import load_results
    from tests.tiny_models import make_tiny_checkpoint, make_tokenizer

    run = tmp_path / "run"
    shutil.copytree(traj["run"], run)
    out = tmp_path / "out"
    assert _evaluate(traj, out, run=run) == 0
    before, _ = load_results(out)
    # the same folder name now holds other weights (a retrained run): refused, with both fingerprints
    make_tiny_checkpoint(run / "checkpoint-20", "llama", tokenizer=make_tokenizer("sp"), seed=7)
    snapshot = _tree(out)
    capsys.readouterr()
    assert _evaluate(traj, out, run=run) == 2
    err = capsys.readouterr().err
    assert "stored results of checkpoint checkpoint-20 differ in checkpoint weights" in err
    assert _tree(out) == snapshot  # nothing written
    # --overwrite recomputes that checkpoint only: its numbers change, the unchanged one's do not
    assert _evaluate(traj, out, "--overwrite", run=run) == 0
    after, _ = load_results(out)
    old20 = before[before["step"] == 20]["margin"].to_numpy()
    new20 = after[after["step"] == 20]["margin"].to_numpy()
    assert not (old20 == new20).all()
    assert (before[before["step"] == 10]["margin"].to_numpy() == after[after["step"] == 10]["margin"].to_numpy()).all()
    meta = json.loads((out / "config.json").read_text())["meta"]
    assert len({c["weights"] for c in meta["checkpoints"]}) == 2


def test_evaluate_skip_is_said_at_normal_verbosity(traj, tmp_path):
    out = tmp_path / "out"
    assert _evaluate(traj, out) == 0
    proc = subprocess.run([sys.executable, "-m", "cpi.cli", "evaluate", "--checkpoints", str(traj["run"]),
                           "--datasets", str(traj["data"]), "--out", str(out), *FAST], cwd=REPO,
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    skipped = [line for line in proc.stderr.splitlines() if "skipped, already evaluated" in line]
    assert len(skipped) == 2 and all("same weights" in line for line in skipped)


def test_probe_never_reuses_parts_of_other_weights_or_items(traj, tmp_path, capsys):
    from mechinterp.trajectory import read_probe_table
    from tests.tiny_models import make_tiny_checkpoint, make_tokenizer

    run = tmp_path / "run"
    shutil.copytree(traj["run"], run)
    out = tmp_path / "probe"
    data = tmp_path / "items.jsonl"
    shutil.copy(traj["data"], data)
    argv = ["probe", "--checkpoints", str(run), "--dataset", str(data), "--out", str(out), "--no-figures"]
    assert main(argv) == 0
    table = read_probe_table(out)
    assert main(argv) == 0 and read_probe_table(out).equals(table)  # same content: resumed, same numbers
    snapshot = _tree(out)  # after the resume (config.json carries the time it was written, to the second)
    # the dataset file edited in place (same name, one context changed): refused, nothing written
    import dataclasses

    items = conflict_items(4)
    write_jsonl([dataclasses.replace(it, context=it.context + " Really.") if i == 0 else it
                 for i, it in enumerate(items)], data)
    capsys.readouterr()
    assert main(argv) == 2
    assert "differ in settings or dataset contents" in capsys.readouterr().err
    shutil.copy(traj["data"], data)
    # other weights under the same folder name: refused
    make_tiny_checkpoint(run / "checkpoint-10", "llama", tokenizer=make_tokenizer("sp"), seed=9)
    assert main(argv) == 2
    assert "differ in checkpoint weights" in capsys.readouterr().err
    assert _tree(out) == snapshot


def test_failed_probe_leaves_nothing_that_blocks_the_fix(traj, tmp_path, capsys):
    out = tmp_path / "probe"
    bad = ["probe", "--checkpoints", str(tmp_path / "missing"), "--dataset", str(traj["data"]), "--out", str(out),
           "--template", "plain", "--no-figures"]
    assert main(bad) == 2
    assert not out.exists()
    fixed = ["probe", "--checkpoints", str(traj["run"]), "--dataset", str(traj["data"]), "--out", str(out),
             "--template", "alpaca", "--max-items", "2", "--no-figures"]
    assert main(fixed) == 0


# --------------------------------------------------------------------------- lock


def test_two_concurrent_writers(traj, tmp_path, capsys):
    """A second writer into a folder in use gets an error naming the holder's PID and writes nothing;
    once the holder is killed, its stale lock is taken over and the run completes."""
    from tests.cpi.test_lock import hold_lock

    out = tmp_path / "out"
    holder = hold_lock(out)
    try:
        capsys.readouterr()
        assert _evaluate(traj, out, "--seed", "1") == 2
        err = capsys.readouterr().err
        assert f"in use by another process (PID {holder.pid}" in err
        assert sorted(p.name for p in out.iterdir()) == [".cpi.lock"]
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert _evaluate(traj, out, "--seed", "1") == 0
    assert (out / "items.csv").is_file() and not (out / ".cpi.lock").exists()


# --------------------------------------------------------------------------- finetune segments


@pytest.fixture(scope="module")
def ft_env(tmp_path_factory):
    from tests.fullscale.ft_helpers import alpaca_records, make_base, write_jsonl as write_records

    root = tmp_path_factory.mktemp("ft_rel")
    return {"root": root, "base": make_base(root), "data": write_records(root / "ift.jsonl", alpaca_records(16))}


def test_failed_finetune_on_a_finished_run_changes_nothing(ft_env, tmp_path):
    from fullscale.finetune import run_finetune
    from tests.fullscale.ft_helpers import base_config

    data = tmp_path / "ift.jsonl"
    shutil.copy(ft_env["data"], data)
    cfg = base_config(ft_env["base"], data, tmp_path / "run", max_steps=4, save_steps=2)
    out = run_finetune(cfg)
    snapshot = _tree(out)
    with pytest.raises(CpiError, match=r"resuming with changed learning_rate \(0\.003 -> 0\.01\)"):
        run_finetune(cfg.replace(learning_rate=1e-2))
    lines = data.read_text().splitlines()
    data.write_text("\n".join(lines[:-1]) + "\n")  # the data file edited in place, same name
    with pytest.raises(CpiError, match="resuming with changed contents of data"):
        run_finetune(cfg)
    with pytest.raises(CpiError, match=r"base_model .*: no such folder"):
        run_finetune(cfg.replace(base_model=str(tmp_path / "gone" / "model")))
    assert _tree(out) == snapshot  # the finished run's config, checkpoints and logs are untouched
    # forced: trains on, and the record keeps both segments with their settings and start steps
    run_finetune(cfg.replace(max_steps=6, learning_rate=1e-3, force_resume=True))
    record = json.loads((out / "finetune_config.json").read_text())
    seg = record["segments"]
    assert [(s["start_step"], s["config"]["learning_rate"], s["config"]["max_steps"]) for s in seg] == [
        (0, 3e-3, 4), (4, 1e-3, 6)]
    assert seg[0]["inputs"]["data"] != seg[1]["inputs"]["data"]
    assert set(seg[1]["forced_changes"]) == {"learning_rate (0.003 -> 0.001)", "max_steps (4 -> 6)",
                                            "contents of data"}
    assert record["config"]["learning_rate"] == 1e-3


def test_max_steps_zero_means_epochs(ft_env, tmp_path):
    from fullscale.finetune import run_finetune
    from tests.fullscale.ft_helpers import base_config

    out = run_finetune(base_config(ft_env["base"], ft_env["data"], tmp_path / "ep", max_steps=0, num_epochs=1,
                                   save_steps=2))
    # 16 examples / batch 4 = 4 steps in one epoch, never a single step at learning rate 0
    state = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4 and state["max_steps"] == 4
    assert all(row.get("learning_rate", 1) > 0 for row in state["log_history"] if "loss" in row)


def test_same_seed_same_bytes_on_one_machine(ft_env, traj, tmp_path):
    """"Same seed, same numbers" as documented: bitwise on one machine and kernel path."""
    from fullscale.finetune import run_finetune
    from tests.fullscale.ft_helpers import base_config

    a = run_finetune(base_config(ft_env["base"], ft_env["data"], tmp_path / "a", max_steps=3, save_steps=3))
    b = run_finetune(base_config(ft_env["base"], ft_env["data"], tmp_path / "b", max_steps=3, save_steps=3))
    assert (a / "checkpoint-3/model.safetensors").read_bytes() == (b / "checkpoint-3/model.safetensors").read_bytes()
    assert _evaluate(traj, tmp_path / "e1") == 0 and _evaluate(traj, tmp_path / "e2") == 0
    for name in ("items.csv", "summary.csv"):
        assert (tmp_path / "e1" / name).read_bytes() == (tmp_path / "e2" / name).read_bytes()
    env = json.loads((tmp_path / "e1" / "config.json").read_text())["meta"]["environment"]
    assert {"cpu_capability", "threads", "blas", "torch_build", "torch"} <= set(env)


# --------------------------------------------------------------------------- interrupt in `cpi run`


@pytest.mark.slow
def test_interrupt_mid_finetune_in_cpi_organism_run_keeps_the_cadence(tmp_path):
    """SIGTERM while `cpi organism run --quick` finetunes: exit 130, one line saying how to resume; the rerun's
    checkpoints, evaluation and probe have exactly the uninterrupted run's steps (no off-cadence step)."""
    out = tmp_path / "org"
    sets = ["--set", "pretrain.steps=60", "--set", "pretrain.warmup=6", "--set", "finetune.steps=30",
            "--set", "finetune.save_steps=10", "--set", "ift.n_examples=200"]
    argv = [sys.executable, "-m", "cpi.cli", "organism", "run", "--quick", "--out", str(out), "--figures",
            str(tmp_path / "fig"), *sets]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 300
    while time.time() < deadline and not (out / "finetune" / "checkpoint-10").is_dir() and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)  # lands after step 10: an off-cadence step is in progress
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("cpi: interrupted by SIGTERM at step ") and "run the same command again to resume" in last
    step = int(last.split("at step ")[1].split(";")[0])
    assert 10 <= step < 30
    visible = sorted(int(p.name.split("-")[1]) for p in (out / "finetune").glob("checkpoint-*"))
    assert visible == list(range(10, step + 1, 10))  # the interrupt's own save is not a trajectory checkpoint
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    steps = [0, 10, 20, 30]  # what the uninterrupted run gives: base + every save_steps
    assert sorted(int(p.name.split("-")[1]) for p in (out / "finetune").glob("checkpoint-*")) == steps[1:]
    assert not list((out / "finetune").glob("interrupted-checkpoint-*"))
    summary = pd.read_csv(out / "eval" / "summary.csv")
    assert sorted(set(summary["step"])) == steps
    probe = pd.read_csv(out / "probe" / "probe.csv")
    assert sorted(set(probe["step"])) == steps
