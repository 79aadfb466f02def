"""Untested explanations for the missing fall (docs/organism.md, Results section 5): longer finetuning and LR.

Reuses the pretrained bases of `cpi organism sweep --out runs/organism_sweep_default --seeds 0,1,2 ...` and
finetunes the default rho = 0.3 mixture with the changes below (evaluation unchanged, every 25 steps):
  steps2x : ft_steps 300 -> 600        lr3x : ft_lr 1e-3 -> 3e-3        lr0.3x : ft_lr 1e-3 -> 3e-4
  lr3x_steps2x, lr0.3x_steps2x : both changes (extra)
Run in docs/organism.md section 5: seeds 0,1,2 x steps2x,lr3x,lr0.3x, then seeds 0,1,2 x the two combined variants.
Usage: `python figures/organism_explore.py SEEDS VARIANTS` e.g. `python figures/organism_explore.py 0 steps2x,lr3x,lr0.3x`
(one process per seed list; each writes runs/organism_explore/traj_<seeds>_<variants>.csv).
`python figures/organism_explore.py summary` prints the peak -> final table over all traj_*.csv files.
"""
import sys, time
from pathlib import Path
import pandas as pd, torch
torch.set_num_threads(1)
from cpi.io import atomic_write_table

sweep = Path("runs/organism_sweep_default")
out = Path("runs/organism_explore")
VARIANTS = {"steps2x": dict(ft_steps=600), "lr3x": dict(ft_lr=3e-3), "lr0.3x": dict(ft_lr=3e-4),
            "lr3x_steps2x": dict(ft_lr=3e-3, ft_steps=600), "lr0.3x_steps2x": dict(ft_lr=3e-4, ft_steps=600)}


def summary() -> pd.DataFrame:
    t = pd.concat([pd.read_csv(p) for p in sorted(out.glob("traj_*.csv"))], ignore_index=True)
    rows = []
    for (v, s), g in t.groupby(["variant", "seed"]):
        g = g.sort_values("step"); ic = g["cf_acc"].idxmax(); ip = g["param_acc"].idxmax()
        rows.append(dict(variant=v, seed=s, cf_peak=g.loc[ic, "cf_acc"], cf_peak_step=g.loc[ic, "step"],
                         cf_final=g["cf_acc"].iloc[-1], param_peak=g.loc[ip, "param_acc"],
                         param_peak_step=g.loc[ip, "step"], param_final=g["param_acc"].iloc[-1],
                         final_step=g["step"].iloc[-1]))
    return pd.DataFrame(rows)


if __name__ == "__main__":
    if sys.argv[1] == "summary":
        print(summary().to_string(index=False)); sys.exit()
    from fullscale.organism.experiment import OrganismConfig, run_organism
    from fullscale.organism.sweep import _share_base
    seeds = [int(s) for s in sys.argv[1].split(",")]
    names = sys.argv[2].split(",")
    rows = []
    for seed in seeds:
        for name in names:
            cache = sweep / "_base" / f"seed{seed}"
            assert (cache / "pretrain" / "done.json").is_file(), f"no pretrained base in {cache}"
            cfg = OrganismConfig(seed=seed, rho=0.3, **VARIANTS[name])
            cell = out / f"{name}_rho=0.3" / f"seed{seed}"
            cell.mkdir(parents=True, exist_ok=True)
            _share_base(cache, cell)
            t0 = time.time()
            run = run_organism(cfg, cell, probe=False)
            t = run.trajectory(); t.insert(0, "variant", name); t.insert(1, "seed", seed)
            t["recall"] = run.closed_book_recall
            rows.append(t)
            atomic_write_table(pd.concat(rows, ignore_index=True),
                               out / f"traj_{sys.argv[1].replace(',', '-')}_{sys.argv[2].replace(',', '-')}.csv")
            print(f"{name} seed{seed} {time.time() - t0:.0f}s\n", t[["step", "cf_acc", "param_acc"]].to_string(), flush=True)
