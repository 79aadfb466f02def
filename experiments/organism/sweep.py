"""The organism's experiment: sweep rho (incl. the rho = 1 control) and the paper's mitigations, over seeds.

Variants (each over ``seeds``; all other fields from the base :class:`OrganismConfig`):

* ``rho=<r>`` for every ``r`` in ``rhos`` (``rho=1`` is the control: no
  non-context-critical data, so the theory predicts no fall);
* at the base config's ``rho``: ``filter`` (drop the 25% of context-bearing
  examples whose response the *base* model finds easiest without the context,
  the paper's rule, scored here with the question kept and only the
  background removed, see :func:`context_criticality_scores`), ``augment``
  (10% counterfactual examples: known training subjects with a contradicting
  context, answered from the context) and ``qk_only`` (only the query and key
  projections train).

One pretrained base model per seed is shared by all variants of that seed.
The sweep is resumable: finished cells are read back, not recomputed.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import matplotlib.pyplot as plt
import pandas as pd
from transformers import AutoModelForCausalLM, AutoTokenizer

from cpi.config import Config
from cpi.errors import ConfigError
from cpi.io import atomic_save_figure, atomic_write_table, save_run
from cpi.progress import progress
from experiments.organism.experiment import OrganismConfig, run_organism
from experiments.organism.figures import plot_rho_sweep
from experiments.organism.ift import QA_INSTRUCTION_CLOSED
from fullscale.curation import response_losses
from fullscale.ift_data import format_example, IFTExample, load_ift_data


@dataclass(frozen=True)
class SweepConfig(Config):
    """Which variants and seeds to run."""
    seeds: tuple[int, ...] = (0, 1, 2)
    rhos: tuple[float, ...] = (0.1, 0.3, 0.5, 1.0)
    mitigations: bool = True
    filter_fraction: float = 0.25
    augment_fraction: float = 0.1
    probe: bool = False

    def validate(self) -> None:
        if not self.seeds:
            raise ConfigError("field 'seeds': give at least one seed")
        if not self.rhos or any(not 0.0 <= r <= 1.0 for r in self.rhos):
            raise ConfigError(f"field 'rhos': values must be in [0, 1], got {self.rhos}")


def variants(base: "OrganismConfig", sweep: SweepConfig) -> dict[str, "OrganismConfig"]:
    """Variant name -> config (seed still the base's; :func:`run_sweep` sets it)."""
    out = {f"rho={r:g}": base.replace(**{"ift.rho": float(r)}) for r in sweep.rhos}
    rho = base.ift.rho
    if sweep.mitigations:
        out[f"filter (rho={rho:g})"] = base.replace(**{"finetune.filter_fraction": sweep.filter_fraction})
        out[f"augment (rho={rho:g})"] = base.replace(**{"ift.augment_fraction": sweep.augment_fraction})
        out[f"qk_only (rho={rho:g})"] = base.replace(**{"finetune.method": "qk_only"})
    return out


def context_criticality_scores(base_model: str | Path, ift_jsonl: str | Path, batch_size: int = 64) -> "pd.DataFrame":
    """The base model's response loss with the record's background and with it removed (question kept).

    ``fullscale.curation`` removes a record's whole ``input``; the organism's
    records carry the question inside ``input`` (to match the evaluation
    prompt), so removing it would also remove the question. Here the
    "without context" prompt is the closed-book form of the same question,
    which is what the paper's rule means. Columns follow ``cpi data
    score-context``: ``example_id, has_context, loss_with_context,
    loss_without_context, gap``.
    """
    tok = AutoTokenizer.from_pretrained(base_model)
    model = AutoModelForCausalLM.from_pretrained(base_model)
    examples = load_ift_data(str(ift_jsonl), data_format="alpaca")
    with_f, without_f, has = [], [], []
    for ex in examples:
        with_f.append(format_example(ex, tok, "alpaca"))
        question = ex.input.split("\nQuestion: ", 1)[1] if "\nQuestion: " in ex.input else ""
        has.append(bool(ex.input.strip()) and bool(question))
        closed = IFTExample(ex.id, f"{QA_INSTRUCTION_CLOSED}\nQuestion: {question}", "", ex.output) if question else ex
        without_f.append(format_example(closed, tok, "alpaca"))
    lw = response_losses(model, tok, with_f, batch_size, "loss with context")
    lwo = response_losses(model, tok, without_f, batch_size, "loss without context")
    rows = []
    for ex, h, (a, _), (b, _) in zip(examples, has, lw, lwo):
        rows.append({"example_id": ex.id, "has_context": h, "loss_with_context": a,
                     "loss_without_context": b if h else float("nan"), "gap": (b - a) if h else float("nan")})
    return pd.DataFrame(rows)


def share_base(cache: Path, cell: Path) -> None:
    """Copy a pretrained base (``base/`` + ``pretrain/``) from ``cache`` into ``cell`` if the cell has none."""
    for sub in ("base", "pretrain"):
        if (cache / sub).is_dir() and not (cell / sub).exists():
            shutil.copytree(cache / sub, cell / sub)


def run_sweep(base: "OrganismConfig", sweep: SweepConfig, out_dir: str | Path) -> "pd.DataFrame":
    """Run every variant x seed into ``out_dir/<variant>/seed<k>/``; return the long table.

    Table: ``variant, rho, seed, step, cf_acc, param_acc, mean_margin, recall`` (evaluation
    summary, category ALL), also saved as ``out_dir/sweep.csv`` with ``config.json``.
    """
    out = Path(out_dir)
    frames = []
    cells = [(name, cfg, seed) for name, cfg in variants(base, sweep).items() for seed in sweep.seeds]
    for name, cfg, seed in progress(cells, desc="sweep cells", total=len(cells)):
        cfg = cfg.replace(seed=seed)
        cell = out / _slug(name) / f"seed{seed}"
        cache = out / "_base" / f"seed{seed}"
        if not (cache / "pretrain" / "done.json").is_file():
            run_organism(base.replace(seed=seed, out=str(cache)), probe=False, stages=("data", "pretrain"))
        cell.mkdir(parents=True, exist_ok=True)
        share_base(cache, cell)
        cfg = cfg.replace(out=str(cell))
        if cfg.finetune.filter_fraction > 0 and not (cell / "data" / "filter_scores.csv").is_file():
            run_organism(cfg, probe=False, stages=("data",))
            scores = context_criticality_scores(cell / "base" / "checkpoint-0", cell / "data" / "ift.jsonl")
            atomic_write_table(scores, cell / "data" / "filter_scores.csv")
        run = run_organism(cfg, probe=sweep.probe)
        traj = run.trajectory()
        traj.insert(0, "variant", name)
        traj.insert(1, "rho", cfg.ift.rho)
        traj.insert(2, "seed", seed)
        traj["recall"] = run.closed_book_recall
        frames.append(traj)
        atomic_write_table(pd.concat(frames, ignore_index=True), out / "sweep.csv")
    table = pd.concat(frames, ignore_index=True)
    save_run(out, sweep, tables={"sweep": table}, base_config=base.to_dict())
    return table


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9.=-]+", "_", name).strip("_")


def sweep_summary(table: "pd.DataFrame") -> "pd.DataFrame":
    """Per variant x seed: cf_acc at step 0, its peak (and step), final value, drop = peak - final."""
    rows = []
    for (variant, seed), g in table.groupby(["variant", "seed"], sort=False):
        g = g.sort_values("step")
        peak = g.loc[g["cf_acc"].idxmax()]
        rows.append({"variant": variant, "seed": seed, "cf_start": float(g["cf_acc"].iloc[0]),
                     "cf_peak": float(peak["cf_acc"]), "peak_step": int(peak["step"]),
                     "cf_final": float(g["cf_acc"].iloc[-1]), "drop": float(peak["cf_acc"] - g["cf_acc"].iloc[-1]),
                     "param_final": float(g["param_acc"].iloc[-1]) if "param_acc" in g else float("nan"),
                     "recall": float(g["recall"].iloc[0]) if "recall" in g else float("nan")})
    return pd.DataFrame(rows)


def plot_sweep(table: "pd.DataFrame", out_dir: str | Path, prefix: str = "organism_sweep") -> list[Path]:
    """The rho figure (cf_acc vs step per rho) and the mitigation figure; PNG + PDF."""
    out = Path(out_dir)
    paths: list[Path] = []
    rho_names = [v for v in dict.fromkeys(table["variant"]) if v.startswith("rho=")]
    other = [v for v in dict.fromkeys(table["variant"]) if not v.startswith("rho=")]
    groups: list[tuple[str, Sequence[str]]] = [("rho", rho_names)]
    if other:
        base_rho = other[0].split("rho=")[-1].rstrip(")")
        groups.append(("mitigations", [f"rho={base_rho}", *other]))
    for label, names in groups:
        names = [n for n in names if n in set(table["variant"])]
        if not names:
            continue
        fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
        plot_rho_sweep(table, ax=axes[0], metric="cf_acc", variants=names)
        plot_rho_sweep(table, ax=axes[1], metric="param_acc", variants=names)
        fig.tight_layout()
        for ext in ("png", "pdf"):
            paths.append(atomic_save_figure(fig, out / f"{prefix}_{label}.{ext}", dpi=150))
        plt.close(fig)
    return paths


__all__ = ["SweepConfig", "variants", "run_sweep", "sweep_summary", "plot_sweep", "context_criticality_scores"]
