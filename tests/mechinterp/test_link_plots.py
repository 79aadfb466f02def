"""Link tables on hand-made probe tables with known answers, and the figures drawn from them."""

from __future__ import annotations

import itertools

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from cpi.errors import CpiError
from mechinterp import link, plots

SPANS = ("context", "question", "bos", "other")


def fake_probe_table(ctx_by_step=None, L=2, H=2):
    """An aggregated probe table: context attention per step is known; head (1, 1) loses its context
    attention after step 10 and carries the largest context value contribution."""
    ctx_by_step = ctx_by_step or {0: 0.2, 10: 0.6, 20: 0.3}
    rows = []
    for step, c in ctx_by_step.items():
        for layer, head in itertools.product(range(L), range(H)):
            drop = (layer, head) == (1, 1) and step == 20
            ctx = 0.05 if drop else c
            masses = {"context": ctx, "question": (1 - ctx) / 2, "bos": (1 - ctx) / 4, "other": (1 - ctx) / 4}
            value = 1.0 if (layer, head) == (1, 1) else 0.1
            for span in SPANS:
                rows.append((step, "head", layer, head, span, "attn", masses[span]))
                rows.append((step, "head", layer, head, span, "logit_diff", value if span == "context" else 0.0))
        for layer in range(L):
            rows.append((step, "mlp", layer, -1, "all", "logit_diff", 0.5))
        rows.append((step, "model", -1, -1, "all", "logit_diff", 2.0))
        rows.append((step, "model", -1, -1, "all", "cf_top1", c))
    df = pd.DataFrame(rows, columns=["step", "component", "layer", "head", "span", "metric", "value"])
    df.insert(0, "checkpoint", df["step"].map(lambda s: f"checkpoint-{s}"))
    df.insert(2, "dataset", "CF_Test")
    df.insert(3, "category", "ALL")
    return df


def test_steps_table_averages_layers_and_heads():
    st = link.steps_table(fake_probe_table())
    assert list(st["step"]) == [0, 10, 20]
    np.testing.assert_allclose(st["attn_context"], [0.2, 0.6, (3 * 0.3 + 0.05) / 4])
    np.testing.assert_allclose(st["value_context"], [1.3, 1.3, 1.3])
    np.testing.assert_allclose(st["mlp"], [1.0, 1.0, 1.0])
    np.testing.assert_allclose(st[[f"attn_{s}" for s in SPANS]].sum(1), 1.0)
    with pytest.raises(CpiError):
        link.steps_table(fake_probe_table(), dataset="missing")


def test_steps_table_columns_come_from_the_metric_units():
    """Column order: per-span summaries (span-major), then the per-layer and per-item ones; the headline
    PROBE_METRICS are among them; ``layers`` restricts the per-span summaries only."""
    import mechinterp
    from mechinterp.metrics import step_summaries

    st = link.steps_table(fake_probe_table())
    per_span = [f"{k}_{s}" for s in SPANS for k in ("attn", "value")]
    assert list(st.columns) == ["step", "checkpoint"] + per_span + ["mlp", "logit_diff", "cf_top1"]
    names = [n for summary in step_summaries() for n in summary.names()]
    assert set(st.columns) - {"step", "checkpoint"} <= set(names)
    assert mechinterp.PROBE_METRICS == ("attn_context", "attn_question", "value_context", "value_question")
    assert set(mechinterp.PROBE_METRICS) <= set(st.columns)
    only1 = link.steps_table(fake_probe_table(), layers=[1])
    np.testing.assert_allclose(only1["value_context"], [1.1, 1.1, 1.1])  # heads (1, 0) and (1, 1)
    np.testing.assert_allclose(only1["mlp"], st["mlp"])


def test_theory_link_normalises_steps():
    theory = pd.DataFrame({"seed": [0] * 5 + [1] * 5, "step": list(range(5)) * 2,
                           "attn_context_test": [0.5, 0.7, 0.6, 0.55, 0.5] * 2,
                           "attn_subject_test": [0.5, 0.3, 0.4, 0.45, 0.5] * 2,
                           "M_C": [0.3, 0.6, 0.5, 0.4, 0.35] * 2})
    ev = pd.DataFrame({"step": [0, 10, 20, 0], "dataset": "CF_Test", "category": ["ALL", "ALL", "ALL", "capital"],
                       "cf_acc": [0.3, 0.8, 0.4, 0.9]})
    t = link.theory_link_table(theory, fake_probe_table(), ev)
    assert set(t["source"]) == {"theory", "probe", "eval"}
    for _, g in t.groupby("source"):
        assert g["step_norm"].min() == 0 and g["step_norm"].max() == 1
    peak = t[(t.source == "theory") & (t.metric == "attn_context")].sort_values("value").iloc[-1]
    assert peak["step_norm"] == pytest.approx(0.25) and peak["value_norm"] == 1
    e = t[(t.source == "eval")].sort_values("step")
    np.testing.assert_allclose(e["value"], [0.3, 0.8, 0.4])  # the 'capital' row is not mixed in
    fig = plots.plot_theory_link(t)
    assert len(fig.axes[0].lines) == 6
    plt.close(fig)


def test_correlation_and_head_change():
    table = fake_probe_table()
    corr = link.correlation_table(table)
    assert (corr["cf_acc_source"] == "probe_top1").all()
    r = link.correlations(corr)
    assert r.set_index("x").loc["attn_context", "pearson"] > 0.9
    ev = pd.DataFrame({"step": [0, 10, 20], "dataset": "CF_Test", "category": "ALL", "cf_acc": [0.1, 0.2, 0.9]})
    corr_ev = link.correlation_table(table, ev)
    assert (corr_ev["cf_acc_source"] == "evaluate").all() and list(corr_ev["cf_acc"]) == [0.1, 0.2, 0.9]
    heads = link.head_change_table(table)
    assert heads["from_step"].iloc[0] == 10 and heads["to_step"].iloc[0] == 20  # peak -> last
    d = heads.set_index(["layer", "head"])["delta_attn_context"]
    assert d.loc[(1, 1)] == pytest.approx(0.05 - 0.6) and d.loc[(0, 0)] == pytest.approx(0.3 - 0.6)
    s = link.head_change_summary(heads, top_k=1).iloc[0]
    assert s["top_k_value_share"] == pytest.approx(1.0 / 1.3)
    assert s["uniform_share"] == pytest.approx(0.25)
    assert s["pearson_drop_vs_value"] > 0.99
    with pytest.raises(CpiError, match="step 99"):
        link.head_change_table(table, from_step=99)


def test_plots_use_given_axes_and_return_figures():
    table = fake_probe_table()
    st = link.steps_table(table)
    heads = link.head_change_table(table)
    corr = link.correlation_table(table)
    fig, axes = plt.subplots(2, 3)
    calls = [(plots.plot_context_vs_subject, st), (plots.plot_value_contributions, st),
             (plots.plot_attention_change, heads), (plots.plot_correlation, corr),
             (plots.plot_head_drop_vs_value, heads)]
    for ax, (fn, tab) in zip(axes.ravel(), calls):
        assert fn(tab, ax=ax) is fig
    assert len(axes[0, 0].lines) == 2
    np.testing.assert_allclose(axes[0, 0].lines[0].get_ydata(), st["attn_context"])
    img = axes[0, 2].images[0].get_array()
    assert img.shape == (2, 2) and img[1, 1] == pytest.approx(-0.55)
    plt.close(fig)
    alone = plots.plot_context_vs_subject(st)
    assert alone is not fig
    plt.close(alone)
    with pytest.raises(CpiError, match="lacks columns"):
        plots.plot_correlation(st.drop(columns=["attn_context"]))


def test_head_table_known_values_and_heatmaps():
    """Per head at one step: masses and contributions from the hand-made table; both heat maps drawn
    layer x head with the right values and colour scales."""
    t = fake_probe_table()
    ht = link.head_table(t).set_index(["layer", "head"])  # default: the last step (20)
    assert set(ht["step"]) == {20}
    assert ht.loc[(1, 1), "attn_context"] == pytest.approx(0.05) and ht.loc[(0, 0), "attn_context"] == pytest.approx(0.3)
    assert ht.loc[(1, 1), "value_total"] == pytest.approx(1.0) and ht.loc[(0, 1), "value_context"] == pytest.approx(0.1)
    assert ht.loc[(0, 0), "attn_question"] == pytest.approx(0.35)
    first = link.head_table(t, step=0).set_index(["layer", "head"])
    assert first.loc[(1, 1), "attn_context"] == pytest.approx(0.2)
    with pytest.raises(CpiError, match="step 5"):
        link.head_table(t, step=5)
    for column, cmap in (("attn_context", "viridis"), ("value_total", "RdBu_r")):
        fig = plots.plot_head_heatmap(link.head_table(t), column)
        ax = fig.axes[0]
        img = ax.images[0]
        grid = np.asarray(img.get_array())
        assert grid.shape == (2, 2) and img.get_cmap().name == cmap
        expected = link.head_table(t).pivot(index="layer", columns="head", values=column).to_numpy()
        np.testing.assert_allclose(grid, expected)
        if cmap == "RdBu_r":
            assert img.get_clim()[0] == pytest.approx(-img.get_clim()[1])  # centred at 0
        assert ax.get_xlabel() == "head" and ax.get_ylabel() == "layer" and "step 20" in ax.get_title()
        plt.close(fig)
    _, ax = plt.subplots()
    assert plots.plot_head_heatmap(link.head_table(t), "attn_context", ax=ax) is ax.figure
    plt.close(ax.figure)


def test_new_figures_keep_their_labels_inside_the_canvas():
    """The x-label and tick labels of every probe figure lie inside the saved canvas (no clipping)."""
    st = link.steps_table(fake_probe_table())
    for fig in (plots.plot_context_vs_subject(st), plots.plot_value_contributions(st),
                plots.plot_head_heatmap(link.head_table(fake_probe_table()), "value_total"),
                plots.plot_attention_change(link.head_change_table(fake_probe_table()))):
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        W, H = fig.bbox.width, fig.bbox.height
        for ax in fig.axes[:1]:
            lo, hi = sorted(ax.get_xlim())
            drawn = [t for t, x in zip(ax.get_xticklabels(), ax.get_xticks()) if lo <= x <= hi]
            for text in [ax.xaxis.label, ax.yaxis.label, ax.title, *drawn]:
                if not text.get_text():
                    continue
                bb = text.get_window_extent(renderer)
                assert bb.x0 >= -1 and bb.y0 >= -1 and bb.x1 <= W + 1 and bb.y1 <= H + 1, text.get_text()
        plt.close(fig)
