"""Untested explanations for the missing fall (docs/organism.md, Results section 5): longer finetuning and LR.

Reuses the pretrained bases of `cpi organism sweep --out runs/organism_sweep_default --seeds 0,1,2 ...` and
finetunes the default rho = 0.3 mixture with the changes below (evaluation unchanged, every 25 steps):
  steps2x : ft_steps 300 -> 600        lr3x : ft_lr 1e-3 -> 3e-3        lr0.3x : ft_lr 1e-3 -> 3e-4
  lr3x_steps2x, lr0.3x_steps2x : both changes (extra)
Run in docs/organism.md section 5: seeds 0,1,2 x steps2x,lr3x,lr0.3x, then seeds 0,1,2 x the two combined variants.
Usage: `python figures/organism_explore.py SEEDS VARIANTS` e.g. `python figures/organism_explore.py 0 steps2x,lr3x,lr0.3x`
(one process per seed list; each writes runs/organism_explore/traj_<seeds>_<variants>.csv).
`python figures/organism_explore.py summary` prints the peak -> final table over all traj_*.csv files.

Section 6 (session 2) adds the explanations left untested by section 5, with probing on (attention to the
context span, layer x head mean, joins the table as `ctx_attn`):
  cosine, cosine_lr3x : decaying (cosine) learning-rate schedule at ft_lr 1e-3 / 3e-3
  qk_lr3x, qk_lr10x   : QK-only finetuning (the theory's exact regime: W_V and MLPs frozen) at 3e-3 / 1e-2
  pretrain2x, pretrain2x_qk : knowledge strength: a new base pretrained 3000 steps instead of 1500
                              (full finetuning / QK-only at the default 1e-3)
  d256, d256_qk       : capacity: d_model 256, d_mlp 1024 (new base, 1500 steps)
  d256_plr1e-3, d256_plr1e-3_qk : the same at pretraining LR 1e-3 (at 3e-3 the d256 base recalled only 27 %)
  d256_plr1e-3_steps2x : that base finetuned 600 steps (does seed 0's drop at step 300 continue?)
  default, qk         : section 3's rho = 0.3 full / QK-only runs again, now probed (the reference rows)
`python figures/organism_explore.py figure` draws figures/organism_explore.{png,pdf} from the section-6 rows:
one row of panels per variant (cf_acc, param_acc, ctx_attn vs step, one line per seed).
Variants that change the base pretrain it once per seed into runs/organism_explore/_base_<name>/seed<k>.
"""
import sys, time
from pathlib import Path
import pandas as pd, torch
torch.set_num_threads(1)
from cpi.io import atomic_write_table

sweep = Path("runs/organism_sweep_default")
out = Path("runs/organism_explore")
VARIANTS = {"default": {}, "qk": dict(qk_only=True), "steps2x": dict(ft_steps=600), "lr3x": dict(ft_lr=3e-3), "lr0.3x": dict(ft_lr=3e-4),
            "lr3x_steps2x": dict(ft_lr=3e-3, ft_steps=600), "lr0.3x_steps2x": dict(ft_lr=3e-4, ft_steps=600),
            "cosine": dict(ft_scheduler="cosine"), "cosine_lr3x": dict(ft_scheduler="cosine", ft_lr=3e-3),
            "qk_lr3x": dict(qk_only=True, ft_lr=3e-3), "qk_lr10x": dict(qk_only=True, ft_lr=1e-2),
            "pretrain2x": dict(pretrain_steps=3000), "pretrain2x_qk": dict(pretrain_steps=3000, qk_only=True),
            "d256": dict(d_model=256, d_mlp=1024), "d256_qk": dict(d_model=256, d_mlp=1024, qk_only=True),
            "d256_plr1e-3": dict(d_model=256, d_mlp=1024, pretrain_lr=1e-3),
            "d256_plr1e-3_qk": dict(d_model=256, d_mlp=1024, pretrain_lr=1e-3, qk_only=True),
            "d256_plr1e-3_steps2x": dict(d_model=256, d_mlp=1024, pretrain_lr=1e-3, ft_steps=600)}
BASE_FIELDS = ("pretrain_steps", "pretrain_lr", "d_model", "d_mlp")  # variants changing these need their own base
# the short names above (kept: they name the cached bases) -> OrganismConfig's nested fields
NESTED = {"pretrain_steps": "pretrain.steps", "pretrain_lr": "pretrain.lr", "d_model": "pretrain.d_model",
          "d_mlp": "pretrain.d_mlp", "ft_steps": "finetune.steps", "ft_lr": "finetune.learning_rate",
          "ft_scheduler": "finetune.lr_scheduler", "qk_only": "finetune.method"}
PROBED = {"default", "qk", "cosine", "cosine_lr3x", "qk_lr3x", "qk_lr10x", "pretrain2x", "pretrain2x_qk", "d256", "d256_qk",
          "d256_plr1e-3", "d256_plr1e-3_qk", "d256_plr1e-3_steps2x"}


def base_cache(name: str, seed: int) -> Path:
    """Where the pretrained base of this variant and seed lives (shared with section 3 unless the base changes)."""
    changed = {k: v for k, v in VARIANTS[name].items() if k in BASE_FIELDS}
    if not changed:
        return sweep / "_base" / f"seed{seed}"
    return out / ("_base_" + "_".join(f"{k}={v}" for k, v in sorted(changed.items()))) / f"seed{seed}"


def context_attention(probe: pd.DataFrame) -> pd.DataFrame:
    """Per step: mean attention mass on the context span (`ctx_attn`) and on the question (`q_attn`),
    averaged over items, layers and heads (final prompt position)."""
    heads = probe[(probe["component"] == "head") & (probe["metric"] == "attn") & (probe["category"] == "ALL")]
    table = heads.pivot_table(index="step", columns="span", values="value", aggfunc="mean")
    return table[["context", "question"]].rename(columns={"context": "ctx_attn", "question": "q_attn"}).reset_index()


def summary() -> pd.DataFrame:
    t = pd.concat([pd.read_csv(p) for p in sorted(out.glob("traj_*.csv"))], ignore_index=True)
    rows = []
    for (v, s), g in t.groupby(["variant", "seed"]):
        g = g.sort_values("step"); ic = g["cf_acc"].idxmax(); ip = g["param_acc"].idxmax()
        rows.append(dict(variant=v, seed=s, cf_peak=g.loc[ic, "cf_acc"], cf_peak_step=g.loc[ic, "step"],
                         cf_final=g["cf_acc"].iloc[-1], param_peak=g.loc[ip, "param_acc"],
                         param_peak_step=g.loc[ip, "step"], param_final=g["param_acc"].iloc[-1],
                         final_step=g["step"].iloc[-1]))
        if "ctx_attn" in g.columns and g["ctx_attn"].notna().all():
            ia = g["ctx_attn"].idxmax()
            rows[-1].update(attn_0=g["ctx_attn"].iloc[0], attn_peak=g.loc[ia, "ctx_attn"],
                            attn_peak_step=g.loc[ia, "step"], attn_final=g["ctx_attn"].iloc[-1])
    return pd.DataFrame(rows)


SECTION6 = ["default", "cosine", "cosine_lr3x", "pretrain2x", "d256", "d256_plr1e-3", "d256_plr1e-3_steps2x", "qk",
            "qk_lr3x", "qk_lr10x", "pretrain2x_qk", "d256_qk", "d256_plr1e-3_qk"]


def figure() -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from cpi.io import atomic_save_figure
    from experiments.organism.figures import plot_seeds

    t = pd.concat([pd.read_csv(p) for p in sorted(out.glob("traj_*.csv"))], ignore_index=True)
    names = [v for v in SECTION6 if v in set(t["variant"])]
    metrics = ["cf_acc", "param_acc", "ctx_attn"]
    fig, axes = plt.subplots(len(names), len(metrics), figsize=(11, 2.3 * len(names)), squeeze=False, sharex=True)
    for row, name in zip(axes, names):
        for ax, metric in zip(row, metrics):
            plot_seeds(t, name, metric=metric, ax=ax)
            ax.set_ylim(-0.02, 1.02 if metric != "ctx_attn" else 0.6)
            if ax is not row[0]:
                ax.get_legend().remove()
    fig.suptitle("Organism, rho = 0.3: explanations of the missing fall (docs/organism.md section 6)")
    fig.tight_layout(rect=(0, 0, 1, 0.99))
    return [atomic_save_figure(fig, Path("figures") / f"organism_explore.{ext}") for ext in ("png", "pdf")]


if __name__ == "__main__":
    if sys.argv[1] == "summary":
        print(summary().to_string(index=False)); sys.exit()
    if sys.argv[1] == "figure":
        print("\n".join(map(str, figure()))); sys.exit()
    from experiments.organism.experiment import OrganismConfig, run_organism
    from experiments.organism.sweep import share_base
    seeds = [int(s) for s in sys.argv[1].split(",")]
    names = sys.argv[2].split(",")
    rows = []
    for seed in seeds:
        for name in names:
            cfg = OrganismConfig(seed=seed).replace(**{"ift.rho": 0.3}, **{NESTED.get(k, k): ("qk_only" if k == "qk_only" else v) for k, v in VARIANTS[name].items()})
            cache = base_cache(name, seed)
            if not (cache / "pretrain" / "done.json").is_file():
                assert cache.parent != sweep / "_base", f"no pretrained base in {cache}: run section 3's sweep first"
                run_organism(cfg.replace(out=str(cache)), probe=False, stages=("data", "pretrain"))
            cell = out / f"{name}_rho=0.3" / f"seed{seed}"
            cell.mkdir(parents=True, exist_ok=True)
            share_base(cache, cell)
            t0 = time.time()
            run = run_organism(cfg.replace(out=str(cell)), probe=name in PROBED)
            t = run.trajectory(); t.insert(0, "variant", name); t.insert(1, "seed", seed)
            if run.probe is not None:
                t = t.merge(context_attention(run.probe), on="step", how="left")
            t["recall"] = run.closed_book_recall
            rows.append(t)
            atomic_write_table(pd.concat(rows, ignore_index=True),
                               out / f"traj_{sys.argv[1].replace(',', '-')}_{sys.argv[2].replace(',', '-')}.csv")
            print(f"{name} seed{seed} {time.time() - t0:.0f}s\n", t[["step", "cf_acc", "param_acc"]].to_string(), flush=True)
