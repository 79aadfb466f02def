"""``cpi probe-link``: put a probe trajectory next to the theory and the evaluation, in one folder.

:func:`run_link` reads a ``cpi probe`` table (and optionally a theory trajectory and ``cpi evaluate``'s
``summary.csv``), computes the tables of :mod:`mechinterp.link` and draws their figures
(:mod:`mechinterp.plots`) into ``config.out``: ``correlation.csv``, ``correlations.csv``,
``head_change.csv``, ``head_change_summary.csv``, ``theory_link.csv`` (with a theory table), the
matching PNG figures and ``config.json``.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from cpi.config import Config, check_at_least
from cpi.errors import CpiError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class LinkConfig(Config):
    """What ``cpi probe-link`` runs (its flags are these fields)."""

    probe: str = ""
    "a `cpi probe` output folder or its probe.csv"
    theory: Optional[str] = None
    "theory.simulate table (CSV), or 'default' to simulate the default SimConfig"
    eval_summary: Optional[str] = None
    "summary.csv from `cpi evaluate`"
    dataset_name: Optional[str] = None
    "restrict to this dataset (None: average of all)"
    category: str = "ALL"
    "restrict to this category"
    top_k: int = 10
    "heads listed in head_change_summary.csv"
    out: str = "link"
    "output folder"

    def validate(self) -> None:
        check_at_least(self, top_k=1)


def run_link(config: LinkConfig) -> "dict[str, pd.DataFrame]":
    """Write the link tables and figures of ``config`` into ``config.out``; returns the tables by name.

    The head-change tables need two checkpoints; with one they are left out (said at WARNING level).
    """
    import pandas as pd

    from cpi.io import check_input_file, check_out_dir, save_run
    from mechinterp import link, plots
    from mechinterp.trajectory import read_probe_table

    out = check_out_dir(config.out)
    probe = Path(config.probe)
    check_input_file(probe / "probe.csv" if probe.is_dir() else probe, "probe table")
    if config.eval_summary is not None:
        if not Path(config.eval_summary).is_file():
            raise CpiError(f"{config.eval_summary}: evaluation summary not found")
        check_input_file(config.eval_summary, "evaluation summary")
    table = read_probe_table(config.probe)
    ev = None
    if config.eval_summary is not None:
        ev = pd.read_csv(config.eval_summary, keep_default_na=False, na_values=[""])
    where = {"dataset": config.dataset_name, "category": config.category}
    tables: dict[str, pd.DataFrame] = {}
    figs = {}
    corr = link.correlation_table(table, ev, **where)
    tables["correlation"] = corr
    tables["correlations"] = link.correlations(corr)
    figs["correlation.png"] = plots.plot_correlation(corr)
    try:
        heads = link.head_change_table(table, **where)
        tables["head_change"] = heads
        tables["head_change_summary"] = link.head_change_summary(heads, top_k=config.top_k)
        figs["attention_change_heatmap.png"] = plots.plot_attention_change(heads)
        figs["head_drop_vs_value.png"] = plots.plot_head_drop_vs_value(heads)
    except CpiError as exc:
        log.warning("skipping head-change tables: %s", exc)
    if config.theory is not None:
        if config.theory == "default":
            from theory import SimConfig, simulate

            th = simulate(SimConfig(), show_progress=False)
        else:
            if not Path(config.theory).is_file():
                raise CpiError(f"{config.theory}: theory table not found")
            th = pd.read_csv(config.theory)
        lt = link.theory_link_table(th, table, ev, **where)
        tables["theory_link"] = lt
        figs["theory_link.png"] = plots.plot_theory_link(lt)
    save_run(out, config, tables=tables)
    for name, fig in figs.items():
        plots.save_figure(fig, out / name)
    return tables
