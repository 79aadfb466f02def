"""Control for the filter mitigation: drop a RANDOM 25% of context-bearing records (same n kept).

Run after `cpi organism sweep --out runs/organism_sweep_default --seeds 0,1,2 --rhos 0.3,1.0` (it reuses that
sweep's pretrained bases): `python figures/organism_random_drop_control.py 0,1,2`. Its `sweep.csv` joins the
mitigation figure (`figures/organism_sweep_mitigations.png`); see docs/organism.md, Results section 3.
"""
import sys, time
from pathlib import Path
import numpy as np, pandas as pd, torch
torch.set_num_threads(1)
from cpi.io import atomic_write_table
from experiments.organism.experiment import OrganismConfig, run_organism
from experiments.organism.sweep import share_base

sweep = Path("runs/organism_sweep_default")
out = Path("runs/organism_sweep_default_ctrl")
rows = []
for seed in [int(s) for s in sys.argv[1].split(",")]:
    cache = sweep / "_base" / f"seed{seed}"
    while not (cache / "pretrain" / "done.json").is_file():
        time.sleep(10)
    cell = out / "random_drop_rho=0.3" / f"seed{seed}"
    cfg = OrganismConfig(seed=seed, out=str(cell)).replace(**{"finetune.filter_fraction": 0.25})
    cell.mkdir(parents=True, exist_ok=True)
    share_base(cache, cell)
    if not (cell / "data" / "filter_scores.csv").is_file():
        run_organism(cfg, probe=False, stages=("data",))
        n = sum(1 for _ in open(cell / "data" / "ift.jsonl"))
        rng = np.random.default_rng(1000 + seed)
        r = rng.random(n)
        atomic_write_table(pd.DataFrame({"example_id": [f"ift-{i:05d}" for i in range(n)], "has_context": True,
                                         "loss_with_context": 0.0, "loss_without_context": r, "gap": r}),
                           cell / "data" / "filter_scores.csv")
    run = run_organism(cfg, probe=False)
    t = run.trajectory(); t.insert(0, "variant", "random drop 25% (rho=0.3)"); t.insert(1, "rho", 0.3); t.insert(2, "seed", seed)
    t["recall"] = run.closed_book_recall
    rows.append(t)
    atomic_write_table(pd.concat(rows, ignore_index=True), out / "sweep.csv")
    print(t[["step", "cf_acc", "param_acc"]].to_string(), flush=True)
