"""Tables that put the measured probe trajectory next to the theory and the evaluation.

All functions take tidy tables and return tidy tables (no plotting here):

* :func:`steps_table` — per checkpoint step: layer×head-averaged attention mass on each
  span (``attn_<span>``; the paper's Fig. 3b quantity), summed value contributions per span
  (``value_<span>``), MLP/embedding totals, mean real logit difference and top-1
  counterfactual accuracy — from the aggregated ``probe.csv``.
* :func:`theory_link_table` — theory simulator trajectory (``theory.simulate``: attention on
  context/subject for test points, ``M_C``, ``cf_acc``) and the measured trajectory (and,
  optionally, ``cf_acc`` from ``cpi evaluate``'s ``summary.csv``) on a normalised step axis
  ``step_norm`` ∈ [0, 1], long format (``source, step, step_norm, metric, value, value_norm``).
* :func:`correlation_table` / :func:`correlations` — per checkpoint attention-to-context against
  counterfactual accuracy, and Pearson/Spearman correlations across checkpoints.
* :func:`head_table` — per (layer, head) at one checkpoint: attention mass on the context and the
  question, the head's total contribution to the logit difference and its context-path part
  (the single-checkpoint heat maps).
* :func:`head_change_table` / :func:`head_change_summary` — per head, the change of
  attention-to-context between two checkpoints (default: the peak of the layer-averaged
  context attention and the last checkpoint) beside the head's context-path value
  contribution: do the heads whose context attention falls carry the context-path value?
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from cpi.errors import CpiError
from mechinterp.targets import SPANS

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from mechinterp.metrics import Metric

_THEORY_METRICS = {"attn_context_test": "attn_context", "attn_subject_test": "attn_subject", "M_C": "M_C",
                   "cf_acc": "cf_acc"}


def _select(probe_table: "pd.DataFrame", dataset: str | None, category: str) -> "pd.DataFrame":
    need = {"step", "component", "layer", "head", "span", "metric", "value"}
    missing = need - set(probe_table.columns)
    if missing:
        raise CpiError(f"probe table lacks columns {sorted(missing)} (is it a probe.csv from `cpi probe`?)")
    t = probe_table
    if "category" in t.columns:
        t = t[t["category"].astype(str).str.upper() == category.upper()] if category.upper() == "ALL" else \
            t[t["category"] == category]
    if dataset is not None and "dataset" in t.columns:
        t = t[t["dataset"] == dataset]
    if t.empty:
        raise CpiError(f"probe table has no rows for dataset={dataset!r}, category={category!r}")
    return t


def steps_table(probe_table: "pd.DataFrame", dataset: str | None = None, category: str = "ALL",
                layers: Sequence[int] | None = None, metrics: "Sequence[Metric] | None" = None) -> "pd.DataFrame":
    """One row per step (and checkpoint), a column per summary the metric units declare
    (:func:`mechinterp.metrics.step_summaries`; default units: ``attn_<span>`` = mean over (selected)
    layers and heads of the attention mass on the span, ``value_<span>`` = sum over layers and heads of
    the span's value contribution to the logit difference, ``mlp``, ``embed``, ``attn_bias``,
    ``final_bias`` (sums), ``logit_diff`` (real, mean over items), ``cf_top1``/``param_top1``
    (first-token top-1 accuracy), ``recon_rel_err``). ``layers`` restricts the per-span summaries.
    With several datasets, their means are averaged."""
    from mechinterp.metrics import METRICS, step_summaries

    t = _select(probe_table, dataset, category)
    keys = ["step"] + (["checkpoint"] if "checkpoint" in t.columns else [])
    ds = ["dataset"] if "dataset" in t.columns else []
    out = None

    def add(rows: "pd.DataFrame", how: str, name: str) -> None:
        nonlocal out
        per_dataset = getattr(rows.groupby(keys + ds)["value"], how)()
        frame = per_dataset.groupby(keys).mean().rename(name).reset_index()
        out = frame if out is None else out.merge(frame, on=keys, how="outer")

    summaries = step_summaries(METRICS if metrics is None else metrics)
    for span in SPANS:
        for st in (s for s in summaries if s.per_span):
            rows = t[t["component"] == st.component]
            if layers is not None:
                rows = rows[rows["layer"].isin(list(layers))]
            add(rows[(rows["metric"] == st.metric) & (rows["span"] == span)], st.how, st.name.format(span=span))
    for st in (s for s in summaries if not s.per_span):
        rows = t[(t["component"] == st.component) & (t["metric"] == st.metric)]
        if not rows.empty:
            add(rows, st.how, st.name)
    assert out is not None
    return out.sort_values("step", kind="stable").reset_index(drop=True)


def _norm(x: "pd.Series") -> "pd.Series":
    lo, hi = x.min(), x.max()
    return (x - lo) / (hi - lo) if hi > lo else x * 0.0


def _eval_cf(eval_summary: "pd.DataFrame", dataset: str | None, category: str) -> "pd.DataFrame":
    need = {"step", "cf_acc"}
    if not need <= set(eval_summary.columns):
        raise CpiError(f"evaluation summary lacks columns {sorted(need - set(eval_summary.columns))} "
                       "(expected cpi evaluate's summary.csv)")
    e = eval_summary
    if "category" in e.columns:
        e = e[e["category"].astype(str).str.upper() == category.upper()]
    if dataset is not None and "dataset" in e.columns:
        e = e[e["dataset"] == dataset]
    if e.empty:
        raise CpiError(f"evaluation summary has no rows for dataset={dataset!r}, category={category!r}")
    ds = ["dataset"] if "dataset" in e.columns else []
    return e.groupby(["step"] + ds)["cf_acc"].mean().groupby("step").mean().rename("cf_acc").reset_index()


def theory_link_table(theory_table: "pd.DataFrame", probe_table: "pd.DataFrame",
                      eval_summary: "pd.DataFrame | None" = None, dataset: str | None = None,
                      category: str = "ALL") -> "pd.DataFrame":
    """Long table ``source, step, step_norm, metric, value, value_norm``.

    ``source="theory"``: ``theory.simulate`` output averaged over seeds (and configs — pass one
    config's rows), metrics ``attn_context``/``attn_subject`` (test points), ``M_C``, ``cf_acc``.
    ``source="probe"``: layer×head-averaged ``attn_context``/``attn_subject`` (question span),
    ``value_context``/``value_subject`` and first-token ``cf_top1``. ``source="eval"``: ``cf_acc``
    from ``summary.csv``. ``step_norm`` = (step − first)/(last − first) per source;
    ``value_norm`` = min-max of the value per source × metric (for overlaying shapes only).
    """
    import pandas as pd

    if "step" not in theory_table.columns:
        raise CpiError("theory table lacks a 'step' column (expected theory.simulate output)")
    present = [c for c in _THEORY_METRICS if c in theory_table.columns]
    if not present:
        raise CpiError(f"theory table has none of the columns {sorted(_THEORY_METRICS)}")
    th = theory_table.groupby("step")[present].mean().rename(columns=_THEORY_METRICS).reset_index()
    frames = [th.melt(id_vars="step", var_name="metric", value_name="value").assign(source="theory")]
    st = steps_table(probe_table, dataset=dataset, category=category)
    pm = st[["step", "attn_context", "attn_question", "value_context", "value_question", "cf_top1"]].rename(
        columns={"attn_question": "attn_subject", "value_question": "value_subject"})
    frames.append(pm.melt(id_vars="step", var_name="metric", value_name="value").assign(source="probe"))
    if eval_summary is not None:
        ev = _eval_cf(eval_summary, dataset, category)
        frames.append(ev.melt(id_vars="step", var_name="metric", value_name="value").assign(source="eval"))
    out = pd.concat(frames, ignore_index=True)
    out["step_norm"] = out.groupby("source")["step"].transform(_norm)
    out["value_norm"] = out.groupby(["source", "metric"])["value"].transform(_norm)
    return out[["source", "step", "step_norm", "metric", "value", "value_norm"]]


def correlation_table(probe_table: "pd.DataFrame", eval_summary: "pd.DataFrame | None" = None,
                      dataset: str | None = None, category: str = "ALL") -> "pd.DataFrame":
    """Per checkpoint: ``step, attn_context, attn_subject, value_context, cf_acc, cf_acc_source``.

    ``cf_acc`` comes from the evaluation summary (generation, containment scoring) when given,
    else from the probe's first-token top-1 accuracy (``cf_acc_source`` says which).
    """
    st = steps_table(probe_table, dataset=dataset, category=category)
    out = st[["step", "attn_context", "attn_question", "value_context", "value_question", "cf_top1"]].rename(
        columns={"attn_question": "attn_subject", "value_question": "value_subject"})
    if "checkpoint" in st.columns:
        out.insert(1, "checkpoint", st["checkpoint"])
    if eval_summary is not None:
        ev = _eval_cf(eval_summary, dataset, category)
        out = out.merge(ev, on="step", how="inner")
        if out.empty:
            raise CpiError("no step of the evaluation summary matches a probed checkpoint step")
        out["cf_acc_source"] = "evaluate"
    else:
        out["cf_acc"] = out["cf_top1"]
        out["cf_acc_source"] = "probe_top1"
    return out.reset_index(drop=True)


def correlations(corr_table: "pd.DataFrame", y: str = "cf_acc",
                 xs: Sequence[str] = ("attn_context", "attn_subject", "value_context")) -> "pd.DataFrame":
    """Pearson and Spearman correlation across checkpoints of each ``x`` with ``y`` (NaN if < 3 points)."""
    import pandas as pd

    rows = []
    for x in xs:
        d = corr_table[[x, y]].dropna()
        ok = len(d) >= 3 and d[x].nunique() > 1 and d[y].nunique() > 1
        rows.append({"x": x, "y": y, "n": len(d),
                     "pearson": float(d[x].corr(d[y])) if ok else float("nan"),
                     "spearman": float(d[x].rank().corr(d[y].rank())) if ok else float("nan")})
    return pd.DataFrame(rows)


def head_change_table(probe_table: "pd.DataFrame", from_step: int | None = None, to_step: int | None = None,
                      dataset: str | None = None, category: str = "ALL") -> "pd.DataFrame":
    """Per (layer, head): ``attn_context_from``, ``attn_context_to``, ``delta_attn_context``,
    ``value_context_from``, ``value_context_to``, ``delta_value_context`` (same for the question span
    as ``*_subject``), with ``from_step`` / ``to_step`` columns.

    Defaults: ``from_step`` = the step where the layer×head-averaged context attention peaks,
    ``to_step`` = the last step.
    """
    import pandas as pd

    t = _select(probe_table, dataset, category)
    heads = t[t["component"] == "head"]
    steps = sorted(heads["step"].unique())
    if len(steps) < 2 and (from_step is None or to_step is None):
        raise CpiError("head_change_table needs at least two probed checkpoints")
    if from_step is None:
        st = steps_table(probe_table, dataset=dataset, category=category)
        from_step = int(st.loc[st["attn_context"].idxmax(), "step"])
        if from_step == steps[-1]:
            from_step = int(steps[0])
    if to_step is None:
        to_step = int(steps[-1])
    for s in (from_step, to_step):
        if s not in set(int(x) for x in steps):
            raise CpiError(f"step {s} is not in the probe table (steps: {', '.join(map(str, steps))})")
    ds = ["dataset"] if "dataset" in heads.columns else []

    def grab(step: int, metric: str, span: str) -> "pd.Series":
        h = heads[(heads["step"] == step) & (heads["metric"] == metric) & (heads["span"] == span)]
        return h.groupby(["layer", "head"] + ds)["value"].mean().groupby(["layer", "head"]).mean()

    cols = {}
    for metric, prefix in (("attn", "attn"), ("logit_diff", "value")):
        for span, label in (("context", "context"), ("question", "subject")):
            a, b = grab(from_step, metric, span), grab(to_step, metric, span)
            cols[f"{prefix}_{label}_from"] = a
            cols[f"{prefix}_{label}_to"] = b
            cols[f"delta_{prefix}_{label}"] = b - a
    out = pd.DataFrame(cols).reset_index()
    out["from_step"] = from_step
    out["to_step"] = to_step
    return out


def head_change_summary(head_table: "pd.DataFrame", top_k: int = 10) -> "pd.DataFrame":
    """Do the heads whose context attention falls carry the context-path value contribution?

    One row: Pearson/Spearman correlation across heads between the attention drop
    (−``delta_attn_context``) and ``value_context_from``; and the share of the total absolute
    context-path value contribution (at ``from_step``) carried by the ``top_k`` heads with the
    largest attention drop, beside the share ``top_k`` random heads would carry on average
    (``top_k / n_heads``).
    """
    import pandas as pd

    drop = -head_table["delta_attn_context"]
    val = head_table["value_context_from"]
    k = min(top_k, len(head_table))
    top = drop.nlargest(k).index
    total = val.abs().sum()
    share = float(val.loc[top].abs().sum() / total) if total > 0 else float("nan")
    ok = len(head_table) >= 3 and drop.nunique() > 1 and val.nunique() > 1
    return pd.DataFrame([{
        "n_heads": len(head_table), "top_k": k,
        "pearson_drop_vs_value": float(drop.corr(val)) if ok else float("nan"),
        "spearman_drop_vs_value": float(drop.rank().corr(val.rank())) if ok else float("nan"),
        "top_k_value_share": share, "uniform_share": k / len(head_table) if len(head_table) else float("nan"),
        "from_step": int(head_table["from_step"].iloc[0]), "to_step": int(head_table["to_step"].iloc[0]),
    }])


def head_table(probe_table: "pd.DataFrame", step: int | None = None, dataset: str | None = None,
               category: str = "ALL") -> "pd.DataFrame":
    """Per (layer, head) at one checkpoint ``step`` (default: the last): ``attn_context``,
    ``attn_question`` (mean attention mass over items), ``value_total`` (the head's contribution to
    the logit difference, summed over spans, mean over items), ``value_context`` (its context-path
    part), with ``step`` and ``n`` (items) columns. With several datasets, their means are averaged."""
    import pandas as pd

    t = _select(probe_table, dataset, category)
    heads = t[t["component"] == "head"]
    steps = sorted(int(s) for s in heads["step"].unique())
    if step is None:
        step = steps[-1]
    if step not in steps:
        raise CpiError(f"step {step} is not in the probe table (steps: {', '.join(map(str, steps))})")
    h = heads[heads["step"] == step]
    ds = ["dataset"] if "dataset" in h.columns else []

    def grab(metric: str, spans: Sequence[str]) -> "pd.Series":
        sel = h[(h["metric"] == metric) & (h["span"].isin(spans))]
        per = sel.groupby(["layer", "head"] + ds + ["span"])["value"].mean().groupby(["layer", "head"] + ds).sum()
        return per.groupby(["layer", "head"]).mean()

    out = pd.DataFrame({"attn_context": grab("attn", ["context"]), "attn_question": grab("attn", ["question"]),
                        "value_total": grab("logit_diff", SPANS), "value_context": grab("logit_diff", ["context"])})
    out = out.reset_index()
    out["step"] = step
    n = h[(h["metric"] == "attn") & (h["span"] == "context")]
    out["n"] = int(n.groupby(ds)["n"].max().sum()) if "n" in n.columns and ds else (
        int(n["n"].max()) if "n" in n.columns else -1)
    return out
