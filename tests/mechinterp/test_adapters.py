"""The probe over a LoRA trajectory with the base loaded once (adapters applied in place) equals the
probe of each checkpoint loaded and merged afresh."""

from __future__ import annotations

import pandas as pd
import pytest

from fullscale.checkpoints import discover_checkpoints
from fullscale.random_checkpoint import write_random_checkpoint, write_random_lora_trajectory
from tests.tiny_models import make_tokenizer
from tests.fullscale.evalkit import one_torch_thread

_threads = pytest.fixture(scope="module", autouse=True)(one_torch_thread)


@pytest.fixture(scope="module")
def traj(tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    make_tokenizer("sp").save_pretrained(root / "tok")  # a small vocabulary keeps the probe fast
    base = write_random_checkpoint(root / "base", "tiny-mistral", tokenizer=root / "tok", shard_bytes=1 << 14)
    write_random_lora_trajectory(root / "run", base, steps=(5, 10, 15), targets=("q_proj", "v_proj", "o_proj"))
    return root


def test_probe_of_swapped_trajectory_equals_merged(traj):
    from mechinterp.load import iter_bridges, load_bridge
    from mechinterp.probe import probe_items
    from tests.mechinterp.helpers import conflict_items

    items = conflict_items(3)
    ckpts = discover_checkpoints(traj / "run")
    swapped = [probe_items(b, tok, items, batch_size=2) for _, b, tok in iter_bridges(ckpts, "cpu", "float32")]
    for ck, table in zip(ckpts, swapped):
        bridge, tok = load_bridge(ck, device="cpu", dtype="float32")
        merged = probe_items(bridge, tok, items, batch_size=2)
        # the logits are bitwise equal (tests/fullscale/test_large_models.py); inside the bridge float32
        # summation differs at 1e-7, and recon_rel_err, itself a rounding error, only has to stay < 1e-3
        err = table["metric"] == "recon_rel_err"
        pd.testing.assert_frame_equal(table[~err], merged[~err], check_exact=False, rtol=1e-5, atol=1e-6)
        assert (table.loc[err, "value"] < 1e-3).all() and (merged.loc[err, "value"] < 1e-3).all()
    assert not swapped[0]["value"].equals(swapped[1]["value"])




def test_probe_trajectory_reuses_one_bridge(traj, tmp_path, bf16_allowed):
    from mechinterp.load import iter_bridges
    from mechinterp.trajectory import ProbeConfig, run_probe

    ckpts = discover_checkpoints(traj / "run")
    bridges = {id(b) for _, b, _ in iter_bridges(ckpts, "cpu", "float32")}
    assert len(bridges) == 1
    # compatibility mode rewrites weights: every checkpoint is loaded afresh
    fresh = [b for _, b, _ in iter_bridges(ckpts, "cpu", "float32", compatibility_mode=True)]
    assert len({id(b) for b in fresh}) == len(ckpts)
    from tests.mechinterp.helpers import conflict_items, write_jsonl

    data = write_jsonl(conflict_items(3), tmp_path / "d.jsonl")
    table = run_probe(ProbeConfig(checkpoints=str(traj / "run"), dataset=str(data), out=str(tmp_path / "p"),
                                  batch_size="auto", figures=False, dtype="bfloat16"))
    assert sorted(table["step"].unique()) == [5, 10, 15]
