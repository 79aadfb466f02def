"""The probe's tidy tables: per-item rows from the metric units' arrays, and their aggregate over items."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

from mechinterp.metrics import LEVELS, METRICS, Metric
from mechinterp.targets import SPANS, ProbeItem

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

#: Columns of the per-item tidy table returned by :func:`mechinterp.probe.probe_items`.
PROBE_COLUMNS: tuple[str, ...] = (
    "item_id", "dataset", "category", "component", "layer", "head", "span", "metric", "value", "weights",
)


def arrays_to_table(pitems: Sequence[ProbeItem], arrays: Mapping[str, Any], weights: str = "raw_hf",
                    metrics: Sequence[Metric] = METRICS) -> "pd.DataFrame":
    """The tidy per-item table (columns :data:`PROBE_COLUMNS`): every unit's rows, by level (head × span,
    per layer, per item) and within a level in ``metrics`` order.

    With the default units: ``component="head"`` × layer × head × span with metrics ``attn`` (mass)
    and ``logit_diff`` (value contribution); ``mlp``/``attn_bias`` per layer and ``embed``,
    ``final_bias`` (span ``"all"``, head −1) with metric ``logit_diff``; and ``component="model"``
    rows (layer −1, head −1, span ``"all"``): ``logit_diff`` (real), ``recon``, ``recon_rel_err``,
    ``final_norm_scale``, ``cf_top1``, ``param_top1``, ``prefers_context`` (real logit diff > 0),
    ``shared_prefix_len``.
    """
    import numpy as np
    import pandas as pd

    n = len(pitems)
    ids = np.array([it.item_id for it in pitems], dtype=object)
    ds = np.array([it.dataset for it in pitems], dtype=object)
    cat = np.array([it.category for it in pitems], dtype=object)
    frames = []
    columns = [c for m in metrics for c in m.columns]
    for col in sorted(columns, key=lambda c: LEVELS.index(c.level)):  # stable: by level, then in unit order
        vals = col.values(arrays, pitems)
        if col.level == "head_span":  # item x layer x head x span
            _, L, H, N = vals.shape
            ii, ll, hh, ss = np.meshgrid(np.arange(n), np.arange(L), np.arange(H), np.arange(N), indexing="ij")
            frames.append(pd.DataFrame({"item": ii.ravel(), "layer": ll.ravel(), "head": hh.ravel(),
                                        "span": np.array(SPANS, dtype=object)[ss.ravel()], "component": col.component,
                                        "metric": col.metric, "value": vals.ravel()}))
        elif col.level == "layer":  # item x layer
            il, ll2 = np.meshgrid(np.arange(n), np.arange(vals.shape[1]), indexing="ij")
            frames.append(pd.DataFrame({"item": il.ravel(), "layer": ll2.ravel(), "head": -1, "span": "all",
                                        "component": col.component, "metric": col.metric, "value": vals.ravel()}))
        else:
            frames.append(pd.DataFrame({"item": np.arange(n), "layer": -1, "head": -1, "span": "all",
                                        "component": col.component, "metric": col.metric,
                                        "value": np.asarray(vals, dtype=np.float64)}))
    df = pd.concat(frames, ignore_index=True)
    item = df.pop("item").to_numpy()
    df.insert(0, "item_id", ids[item])
    df.insert(1, "dataset", ds[item])
    df.insert(2, "category", cat[item])
    df["weights"] = weights
    df["value"] = df["value"].astype(float)
    return df[list(PROBE_COLUMNS)]


def aggregate(table: "pd.DataFrame", by: Sequence[str] = ("dataset", "category")) -> "pd.DataFrame":
    """Mean, std and n over items for every (component, layer, head, span, metric), per ``by`` group.

    Adds a ``category="ALL"`` group per dataset. Output columns: ``*by, component, layer,
    head, span, metric, value (mean), std (sample std over items; NaN where n = 1), n, weights``.
    """
    import pandas as pd

    keys = list(by) + ["component", "layer", "head", "span", "metric", "weights"]
    frames = [table]
    if "category" in by:
        frames.append(table.assign(category="ALL"))
    full = pd.concat(frames, ignore_index=True) if len(frames) > 1 else table
    g = full.groupby(keys, sort=False, dropna=False)["value"]
    out = g.agg(value="mean", std="std", n="count").reset_index()  # std: sample std, NaN where n = 1
    cols = list(by) + ["component", "layer", "head", "span", "metric", "value", "std", "n", "weights"]
    out = out[cols]
    out = out.drop_duplicates(subset=[c for c in cols if c not in ("value", "std", "n")])
    return out.reset_index(drop=True)
