"""Agreement of two controlled runs that differ only in precision (``cpi controlled compare A B``).

:func:`compare_runs` reads two run folders of :func:`~experiments.controlled.experiment.run_controlled`
(``items.csv``, ``verdict.json``, ``controlled_config.json``, the knowledge stage's ``known.csv``) whose
configs are the same but for ``dtype`` (and where the run goes: ``workers``, ``threads``,
``knowledge_cache``), and measures, B against A:

* ``knowledge``: the facts both closed-book stages scored, and the share whose ``known`` differs (a
  changed known table changes the mixture, hence the held-out items: only shared items are compared);
* ``steps`` (one row per seed x step, and ``seed = "ALL"`` per step): the items both runs evaluated
  there, the share whose containment ``outcome`` differs, whose ``answer_text`` differs, the max and mean
  absolute difference of the log-prob ``margin`` and of ``m_c``;
* ``verdicts`` (one row per metric of ``verdict.json``): both verdicts and whether they are equal, and
  whether both report a significant fall or both do not (``same_fall``: the fall test's decision, which
  the main job's outcome rests on; a label can differ on whether a small rise is significant); for
  the rise, the fall and the net change both estimates with their intervals and whether the intervals
  overlap; and the paired difference B - A at the last step over the shared seed x item units
  (:func:`~experiments.controlled.statistics.paired_difference`) with its interval.

Nothing here computes a model: it is pandas on the two folders' tables.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from cpi.config import Config
from cpi.errors import ConfigError, CpiError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

#: ControlledConfig fields that may differ between the two runs: the precision and where the run goes
MAY_DIFFER = ("dtype", "workers", "threads", "knowledge_cache")
#: the verdict's paired changes compared (estimate ``x``, interval ``x_lo`` .. ``x_hi``)
CHANGES = ("rise", "fall", "net")
KEYS = ("seed", "step", "item_id")


@dataclass(frozen=True)
class CompareConfig(Config):
    """``cpi controlled compare A B``: the two run folders (A is the reference, e.g. the float32 run)."""

    a: str = ""
    "first run folder (the reference, e.g. float32)"
    b: str = ""
    "second run folder (e.g. the bfloat16 run of the same config)"
    out: Optional[str] = None
    "folder for the agreement tables (agreement_steps.csv, agreement_verdicts.csv, config.json); none: print only"
    n_boot: int = 2000
    "bootstrap resamples of the paired difference B - A"

    NOT_CONTENT = ("out",)

    def validate(self) -> None:
        if self.n_boot < 1:
            raise ConfigError(f"field 'n_boot': must be >= 1, got {self.n_boot}")


@dataclass
class Agreement:
    """What :func:`compare_runs` measured (see the module doc); ``dtypes``: the resolved dtype of A and B."""

    a: Path
    b: Path
    dtypes: tuple[str, str]
    knowledge: dict[str, Any]
    steps: "pd.DataFrame"
    verdicts: "pd.DataFrame"


def _read_run(folder: Path) -> dict[str, Any]:
    import pandas as pd

    for name in ("items.csv", "verdict.json", "controlled_config.json"):
        if not (folder / name).is_file():
            raise CpiError(f"{folder}: no {name} (not a finished controlled run folder?)")
    try:
        config = json.loads((folder / "controlled_config.json").read_text())
        verdict = json.loads((folder / "verdict.json").read_text())
        items = pd.read_csv(folder / "items.csv", keep_default_na=False, na_values=[""])
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CpiError(f"{folder}: unreadable run tables ({str(exc).splitlines()[0] if str(exc) else exc!r})") from exc
    missing = [c for c in (*KEYS, "margin", "outcome") if c not in items.columns]
    if missing:
        raise CpiError(f"{folder / 'items.csv'}: no column {missing[0]!r}")
    return {"config": config.get("config", {}), "meta": config.get("meta", {}), "verdict": verdict, "items": items}


def _known(folder: Path, config: dict[str, Any]) -> "pd.DataFrame | None":
    """The run's closed-book known table (None when its knowledge folder is not to be found)."""
    import pandas as pd

    cache = Path(config["knowledge_cache"]) if config.get("knowledge_cache") else folder / "knowledge"
    if not cache.is_absolute() and not cache.exists():
        cache = folder / cache
    found = sorted(cache.glob("*/known.csv")) if cache.is_dir() else []
    if len(found) != 1:
        return None  # none, or a cache shared by several models / precisions: ambiguous
    return pd.read_csv(found[0], keep_default_na=False, na_values=[""])


def _knowledge(a: "pd.DataFrame | None", b: "pd.DataFrame | None") -> dict[str, Any]:
    if a is None or b is None or "known" not in a or "known" not in b:
        return {"n_facts": 0, "known_differs": None}
    both = a[["item_id", "known"]].merge(b[["item_id", "known"]], on="item_id", suffixes=("_a", "_b"))
    n = len(both)
    differs = int((both["known_a"].astype(bool) != both["known_b"].astype(bool)).sum())
    return {"n_facts": n, "known_differs": differs / n if n else None, "n_known_differs": differs}


def step_agreement(items_a: "pd.DataFrame", items_b: "pd.DataFrame") -> "pd.DataFrame":
    """One row per seed x step (and ``seed = "ALL"`` per step) over the items both tables hold there:
    ``n`` shared, ``n_only_a`` / ``n_only_b``, ``outcome_differs`` / ``answer_differs`` (shares),
    ``margin_absdiff_max`` / ``_mean`` and ``m_c_absdiff_max`` / ``_mean``."""
    import pandas as pd

    keys = list(KEYS)
    cols = [c for c in ("margin", "m_c", "outcome", "answer_text") if c in items_a.columns and c in items_b.columns]
    both = items_a[keys + cols].merge(items_b[keys + cols], on=keys, suffixes=("_a", "_b"))
    count_a = items_a.groupby(["seed", "step"]).size()
    count_b = items_b.groupby(["seed", "step"]).size()

    def row(g: "pd.DataFrame", seed: Any, step: int, n_a: int, n_b: int) -> dict[str, Any]:
        out: dict[str, Any] = {"seed": seed, "step": int(step), "n": len(g), "n_only_a": n_a - len(g),
                               "n_only_b": n_b - len(g)}
        for col in ("outcome", "answer_text"):
            if f"{col}_a" in g:
                differs = g[f"{col}_a"].astype(str) != g[f"{col}_b"].astype(str)
                out[f"{col.split('_')[0]}_differs"] = float(differs.mean()) if len(g) else math.nan
        for col in [c for c in ("margin", "m_c") if f"{c}_a" in g]:
            d = (g[f"{col}_a"].astype(float) - g[f"{col}_b"].astype(float)).abs()
            out[f"{col}_absdiff_max"] = float(d.max()) if len(g) else math.nan
            out[f"{col}_absdiff_mean"] = float(d.mean()) if len(g) else math.nan
        return out

    rows = []
    for (seed, step) in sorted(set(count_a.index) | set(count_b.index)):
        g = both[(both["seed"] == seed) & (both["step"] == step)]
        rows.append(row(g, seed, step, int(count_a.get((seed, step), 0)), int(count_b.get((seed, step), 0))))
    for step in sorted(set(items_a["step"]) | set(items_b["step"])):
        g = both[both["step"] == step]
        rows.append(row(g, "ALL", step, int((items_a["step"] == step).sum()), int((items_b["step"] == step).sum())))
    return pd.DataFrame(rows)


def verdict_agreement(verdict_a: dict[str, Any], verdict_b: dict[str, Any], items_a: "pd.DataFrame",
                      items_b: "pd.DataFrame", n_boot: int = 2000) -> "pd.DataFrame":
    """One row per metric both verdicts hold (see the module doc)."""
    import pandas as pd

    from experiments.controlled.statistics import FALL_VERDICTS, paired_difference

    rows = []
    for metric in [m for m in verdict_a if m != "primary" and m in verdict_b]:
        va, vb = verdict_a[metric], verdict_b[metric]
        if not isinstance(va, dict) or not isinstance(vb, dict):
            continue
        row: dict[str, Any] = {"metric": metric, "verdict_a": va.get("verdict"), "verdict_b": vb.get("verdict"),
                               "same_verdict": va.get("verdict") == vb.get("verdict"),
                               "same_fall": (va.get("verdict") in FALL_VERDICTS) == (vb.get("verdict") in FALL_VERDICTS)}
        for ch in CHANGES:
            a, b = [(v.get(ch), v.get(f"{ch}_lo"), v.get(f"{ch}_hi")) for v in (va, vb)]
            row.update({f"{ch}_a": a[0], f"{ch}_a_lo": a[1], f"{ch}_a_hi": a[2], f"{ch}_b": b[0], f"{ch}_b_lo": b[1],
                        f"{ch}_b_hi": b[2]})
            known = None not in (*a[1:], *b[1:])
            row[f"{ch}_overlap"] = bool(a[1] <= b[2] and b[1] <= a[2]) if known else None
        if metric in items_a.columns and metric in items_b.columns:
            d = paired_difference(items_a, items_b, metric=metric, n_boot=n_boot, seed=0)
            row.update({"last_step": d["step"], "paired": d["paired"], "n_pairs": d["n_pairs"],
                        "diff_b_minus_a": d["diff"], "diff_lo": d["lo"], "diff_hi": d["hi"],
                        "diff_excludes_0": bool(d["lo"] > 0 or d["hi"] < 0)})
        rows.append(row)
    return pd.DataFrame(rows)


def compare_runs(a: str | Path, b: str | Path, n_boot: int = 2000) -> Agreement:
    """The agreement of run folder ``b`` with run folder ``a`` (module doc); CpiError naming the folder
    or the config field when they are not two runs of one config."""
    from experiments.controlled.statistics import add_metrics

    a, b = Path(a), Path(b)
    ra, rb = _read_run(a), _read_run(b)
    differs = sorted(k for k in set(ra["config"]) | set(rb["config"])
                     if k not in MAY_DIFFER and ra["config"].get(k) != rb["config"].get(k))
    if differs:
        raise CpiError(f"{b}: not the config of {a} but for its dtype: field '{differs[0]}' differs "
                       f"({ra['config'].get(differs[0])!r} vs {rb['config'].get(differs[0])!r})")
    items_a, items_b = add_metrics(ra["items"]), add_metrics(rb["items"])
    dtypes = (str(ra["meta"].get("dtype", ra["config"].get("dtype", "?"))),
              str(rb["meta"].get("dtype", rb["config"].get("dtype", "?"))))
    return Agreement(a=a, b=b, dtypes=dtypes, knowledge=_knowledge(_known(a, ra["config"]), _known(b, rb["config"])),
                     steps=step_agreement(items_a, items_b),
                     verdicts=verdict_agreement(ra["verdict"], rb["verdict"], items_a, items_b, n_boot=n_boot))


def agreement_lines(ag: Agreement) -> list[str]:
    """What ``cpi controlled compare`` prints."""
    from experiments.controlled.statistics import FALL_VERDICTS

    def said(verdict: Any) -> str:
        return "a significant fall" if verdict in FALL_VERDICTS else "no significant fall"

    lines = [f"A = {ag.a} ({ag.dtypes[0]}), B = {ag.b} ({ag.dtypes[1]})"]
    k = ag.knowledge
    if k.get("known_differs") is not None:
        lines.append(f"closed-book knowledge: 'known' differs for {k['n_known_differs']} of {k['n_facts']} facts "
                     f"({k['known_differs']:.1%})")
    else:
        lines.append("closed-book knowledge: not compared (no single known.csv in a run's knowledge folder)")
    for _, r in ag.steps[ag.steps["seed"] == "ALL"].iterrows():
        lines.append(f"step {r.step}: {r.n} shared items (only in A {r.n_only_a}, only in B {r.n_only_b}); outcome "
                     f"differs {r.outcome_differs:.1%}, answer text differs {r.answer_differs:.1%}; |margin| diff "
                     f"max {r.margin_absdiff_max:.3f} mean {r.margin_absdiff_mean:.3f} nats; |M_C| diff max "
                     f"{r.m_c_absdiff_max:.4f} mean {r.m_c_absdiff_mean:.4f}")
    for _, r in ag.verdicts.iterrows():
        overlap = ", ".join(f"{ch} {'overlap' if r[f'{ch}_overlap'] else 'DO NOT overlap'}" for ch in CHANGES
                            if r[f"{ch}_overlap"] is not None)
        fall = "" if "same_fall" not in r else (
            f"; fall test {'agrees' if r.same_fall else 'DIFFERS'} ({said(r.verdict_a)} / {said(r.verdict_b)})")
        line = (f"{r.metric}: verdicts {'equal' if r.same_verdict else 'DIFFER'} ({r.verdict_a!r} / {r.verdict_b!r})"
                f"{fall}; intervals: {overlap}")
        if "diff_b_minus_a" in r and r.diff_b_minus_a == r.diff_b_minus_a:
            line += (f"; B - A at step {int(r.last_step)}: {r.diff_b_minus_a:+.4f} [{r.diff_lo:+.4f}, {r.diff_hi:+.4f}] "
                     f"({'paired' if r.paired else 'UNPAIRED'}, {int(r.n_pairs)} units)")
        lines.append(line)
    return lines


def run_compare(config: CompareConfig) -> Agreement:
    """``cpi controlled compare``: :func:`compare_runs`, its tables written to ``config.out`` when given."""
    from cpi.io import check_out_dir, save_run

    for name in ("a", "b"):
        if not getattr(config, name):
            raise ConfigError(f"field '{name}': give a controlled run folder")
    out = check_out_dir(config.out) if config.out else None
    ag = compare_runs(config.a, config.b, n_boot=config.n_boot)
    if out is not None:
        save_run(out, config, tables={"agreement_steps": ag.steps, "agreement_verdicts": ag.verdicts},
                 dtypes=list(ag.dtypes), knowledge=ag.knowledge)
    return ag


__all__ = ["Agreement", "CHANGES", "CompareConfig", "MAY_DIFFER", "agreement_lines", "compare_runs", "run_compare",
           "step_agreement", "verdict_agreement"]
