"""Summary statistics of item tables: bootstrap intervals, memorization ratio, per-group summaries.

:func:`bootstrap_ci` also serves :mod:`mechinterp` and :mod:`experiments`.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from cpi.config import check_fits_memory
from cpi.errors import CpiError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

log = logging.getLogger(__name__)

#: The most bootstrap resamples :func:`bootstrap_ci` draws (``n_boot`` beyond it is refused, not allocated).
MAX_N_BOOT = 1_000_000


def summarize_reliance(df: "pd.DataFrame") -> dict[str, float]:
    """``mean_reliance``, ``mean_margin``, ``context_pref_rate``, ``mean_mem_ratio_lp``, ``n`` of a score_logprob table."""
    n = int(len(df))
    if n == 0:
        return {"n": 0, "mean_reliance": float("nan"), "mean_margin": float("nan"),
                "context_pref_rate": float("nan"), "mean_mem_ratio_lp": float("nan")}
    return {
        "n": n,
        "mean_reliance": float(df["reliance"].mean()),
        "mean_margin": float(df["margin"].mean()),
        "context_pref_rate": float(df["prefers_context"].astype(float).mean()),
        "mean_mem_ratio_lp": float((1.0 - df["reliance"]).mean()),
    }


def memorization_ratio(outcomes: Iterable[str]) -> float:
    """Parametric / (parametric + context) over exclusive generation outcomes (``both``/``neither`` excluded)."""
    outs = list(outcomes)
    p, c = outs.count("parametric"), outs.count("context")
    return p / (p + c) if p + c else float("nan")



def bootstrap_ci(values: Sequence[float], n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean of ``values`` (resampling items, fixed seed)."""
    import numpy as np

    x = np.asarray(list(values), dtype=float)
    x = x[~np.isnan(x)]
    if n_boot > MAX_N_BOOT:
        raise CpiError(f"n_boot: must be <= {MAX_N_BOOT}, got {n_boot}")
    if len(x) == 0:
        return float("nan"), float("nan")
    if n_boot <= 0 or len(x) == 1:
        return float(x.mean()), float(x.mean())
    check_fits_memory(n_boot * len(x) * 16.0, f"n_boot {n_boot} resamples of {len(x)} items")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(x), size=(n_boot, len(x)))
    means = x[idx].mean(axis=1)
    alpha = (1 - level) / 2
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


def summarize_items(items: "pd.DataFrame", by: Sequence[str] = ("checkpoint", "step", "dataset", "category"),
                    n_boot: int = 1000, seed: int = 0, add_all_category: bool = True) -> "pd.DataFrame":
    """Per-group accuracy/reliance table from an items table (one row per group).

    Columns (those whose inputs exist): ``n``, ``n_truncated`` and ``n_answer_cut``
    (items whose context was truncated, and those whose context answer it removed), ``cf_acc``, ``param_acc``,
    ``both_rate``, ``neither_rate``, ``memorization_ratio``, with bootstrap
    ``*_lo``/``*_hi`` for ``cf_acc`` and ``param_acc``; ``mean_margin``,
    ``mean_reliance``, ``context_pref_rate`` (all from the summed log-probs); the length-robust
    ``mean_margin_first_token`` (with ``_lo``/``_hi``), ``mean_margin_per_token``,
    ``first_token_pref_rate`` and ``length_decided_rate`` (share of items whose summed and
    first-token margins disagree in sign); closed-book ``cb_param_acc``,
    ``known_rate``, and ``cf_acc_known``/``param_acc_known`` (only items the
    model knows closed-book). With ``add_all_category`` each
    checkpoint × dataset also gets a ``category == "ALL"`` row.
    """
    import pandas as pd

    by = [c for c in by if c in items.columns]
    frames = [items]
    if add_all_category and "category" in by:
        frames.append(items.assign(category="ALL"))
    data = pd.concat(frames, ignore_index=True)
    rows = []
    for key, g in data.groupby(by, sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        row: dict[str, Any] = dict(zip(by, key))
        row["n"] = len(g)
        for flag in ("truncated", "answer_cut"):
            if flag in g:
                row[f"n_{flag}"] = int(g[flag].astype(bool).sum())
        if "cf_correct" in g:
            for col, name in (("cf_correct", "cf_acc"), ("param_correct", "param_acc")):
                v = g[col].astype(float)
                row[name] = float(v.mean())
                row[f"{name}_lo"], row[f"{name}_hi"] = bootstrap_ci(v, n_boot=n_boot, seed=seed)
            row["both_rate"] = float((g["outcome"] == "both").mean())
            row["neither_rate"] = float((g["outcome"] == "neither").mean())
            row["memorization_ratio"] = memorization_ratio(g["outcome"])
        if "margin" in g:
            gm = g
            bad = ~g["margin"].map(lambda v: math.isfinite(float(v)))
            if bad.any():  # a broken model (NaN weights) or an impossible answer: flagged, never averaged
                row["n_nonfinite_margin"] = int(bad.sum())
                log.warning("%s: %d of %d items have a non-finite margin; they are left out of the margin means",
                            dict(zip(by, key)), int(bad.sum()), len(g))
                gm = g[~bad]
            row["mean_margin"] = float(gm["margin"].mean())
            row["mean_margin_lo"], row["mean_margin_hi"] = bootstrap_ci(gm["margin"], n_boot=n_boot, seed=seed)
            row["mean_reliance"] = float(gm["reliance"].mean())
            row["context_pref_rate"] = float(gm["prefers_context"].astype(float).mean())
        if "margin_first_token" in g:
            row["mean_margin_first_token"] = float(gm["margin_first_token"].mean())
            row["mean_margin_first_token_lo"], row["mean_margin_first_token_hi"] = bootstrap_ci(
                gm["margin_first_token"], n_boot=n_boot, seed=seed)
            row["mean_margin_per_token"] = float(gm["margin_per_token"].mean())
            row["first_token_pref_rate"] = float((gm["margin_first_token"] > 0).astype(float).mean())
            row["length_decided_rate"] = float(gm["decided_by_length"].astype(float).mean())
        if "knows_parametric" in g:
            known = g["knows_parametric"].astype(bool)
            row["known_rate"] = float(known.mean())
            if "cb_param_correct" in g:
                row["cb_param_acc"] = float(g["cb_param_correct"].astype(float).mean())
            if "cf_correct" in g:
                gk = g[known]
                row["n_known"] = int(known.sum())
                row["cf_acc_known"] = float(gk["cf_correct"].astype(float).mean()) if len(gk) else float("nan")
                row["param_acc_known"] = float(gk["param_correct"].astype(float).mean()) if len(gk) else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)

