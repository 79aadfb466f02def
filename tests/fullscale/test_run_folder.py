"""The finetuning run folder protocol (fullscale.run_folder): the checkpoint-name rule and ``finished``."""

from __future__ import annotations

import json

from fullscale.run_folder import checkpoint_step, finished, is_complete_checkpoint, list_checkpoints, resume_point


def _checkpoint(folder, step, complete=True):
    ck = folder / f"checkpoint-{step}"
    ck.mkdir(parents=True)
    (ck / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    if complete:
        (ck / "model.safetensors").write_bytes(b"x")
    return ck


def test_checkpoint_name_rule():
    assert checkpoint_step("checkpoint-12") == 12
    for name in ("checkpoint-", "checkpoint-1a", "interrupted-checkpoint-3", ".tmp-checkpoint-4", "checkpoint-5.old"):
        assert checkpoint_step(name) is None, name


def test_finished_needs_a_complete_checkpoint_at_or_after_the_step(tmp_path):
    assert not finished(tmp_path / "absent", 1)
    _checkpoint(tmp_path, 2)
    assert finished(tmp_path, 2) and finished(tmp_path, 1) and not finished(tmp_path, 3)
    _checkpoint(tmp_path, 4, complete=False)  # no weights: not a finished step 4
    assert not is_complete_checkpoint(tmp_path / "checkpoint-4") and not finished(tmp_path, 4)
    (tmp_path / "interrupted-checkpoint-5").mkdir()  # a resume point is not a checkpoint of the trajectory
    assert [s for s, _ in list_checkpoints(tmp_path)] == [2, 4] and not finished(tmp_path, 5)
    assert resume_point(tmp_path) == tmp_path / "checkpoint-2"
