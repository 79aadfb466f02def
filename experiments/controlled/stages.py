"""The stages of one condition: the base's knowledge, and per seed the mixture, finetuning, evaluation, probe.

Each stage writes its own folder named by :func:`~experiments.controlled.keys.content_key` of its
inputs and is skipped when that folder is complete (:func:`finished` for finetuning; the evaluation and
the probe resume per checkpoint themselves).
"""

from __future__ import annotations

import json
import logging
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence

from cpi.errors import CpiError
from cpi.io import atomic_write_json, atomic_write_table, save_run
from experiments.controlled.config import ControlledConfig, KnowledgeSettings
from experiments.controlled.keys import content_key, dtype_parts, items_key, safe_name
from experiments.controlled.mixture import build_mixture, write_records
from fullscale.run_folder import finished

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from experiments.controlled.selection import BandSelector

log = logging.getLogger(__name__)

#: the answer ends at the first line break (after leading whitespace); the evaluation's own stops stay
ANSWER_STOPS = ("\n",)
#: in the finetune folder's key when records are filtered: the filter's no-context form was fixed
#: (it kept only the instruction for every mixture layout); older filtered folders are not reused
FILTER_FORM = "no-context form keeps the question (v2)"


def knowledge_items(cfg: KnowledgeSettings) -> list[Any]:
    """The question-answer items of ``cfg.datasets`` (the first ``max_items`` of each)."""
    from fullscale.conflicts import load_conflicts

    items: list[Any] = []
    for name in cfg.datasets:
        qa = [it for it in load_conflicts(name) if it.task == "qa"]
        if not qa:
            raise CpiError(f"field 'knowledge.datasets': {name} has no question-answer items")
        items += qa[: cfg.max_items] if cfg.max_items else qa
    return items


def stage_knowledge(cfg: ControlledConfig, model_dir: Path, model_fp: str, cache: Path,
                    items: Sequence[Any]) -> "tuple[pd.DataFrame, pd.DataFrame]":
    """Closed-book known table and per-relation rates of the base, cached under ``cache``."""
    import pandas as pd

    from fullscale.checkpoints import load_checkpoint
    from fullscale.knowledge import known_facts, known_rates

    k, dtype = cfg.knowledge, cfg.resolved_dtype()
    key = content_key(model_fp, k.template, k.n_candidates, k.length_normalise, items_key(items), *dtype_parts(dtype))
    folder = cache / f"{safe_name(cfg.model)}-{key}"
    known_path, rates_path = folder / "known.csv", folder / "rates.csv"
    if known_path.is_file() and rates_path.is_file():
        log.info("%s: closed-book knowledge already measured; reading it back", folder)
        return pd.read_csv(known_path, keep_default_na=False, na_values=[""]), pd.read_csv(rates_path)
    model, tok = load_checkpoint(model_dir, dtype=dtype)  # log-probs in float32 from the model's logits
    try:
        table = known_facts(model, tok, items, template=k.template, n_candidates=k.n_candidates,
                            batch_size=k.batch_size, length_normalise=k.length_normalise)
    finally:
        del model
    rates = known_rates(table)
    atomic_write_table(table, known_path)
    atomic_write_table(rates, rates_path)
    save_run(folder, k, model=cfg.model, model_fingerprint=model_fp, dtype=dtype)
    return table, rates


@dataclass(frozen=True)
class SeedData:
    """One seed's mixture on disk, and the held-out conflicts evaluated (at most ``evaluate.max_items``
    of the held-out ones, sampled with the seed)."""

    folder: Path
    key: str
    counts: dict[str, int]
    heldout: list[Any]
    evaluated: list[Any]


def evaluated_items(heldout: Sequence[Any], max_items: Optional[int], seed: int) -> list[Any]:
    """The held-out conflicts a seed evaluates: all of them, or ``max_items`` drawn with ``seed`` (in id order).
    Every condition of a seed draws the same ones (paired comparisons), and the regime stage measures them."""
    if max_items is None or len(heldout) <= max_items:
        return list(heldout)
    return sorted(random.Random(seed).sample(list(heldout), max_items), key=lambda it: it.id)


def stage_mixture(cfg: ControlledConfig, seed: int, items: Sequence[Any], known: "pd.DataFrame",
                  seed_dir: Path, select: Optional["BandSelector"] = None) -> SeedData:
    """Build (or read back) the seed's mixture and held-out conflicts. ``select``: the selector of a band
    arm (:func:`~experiments.controlled.selection.mixture_selector`); its measurement of the candidate
    records is written beside the records (``selection.csv``)."""
    import pandas as pd

    from fullscale.conflicts import items_to_jsonl, load_conflicts

    mcfg = cfg.mixture.replace(seed=seed)
    known_sig = sorted(zip(known["item_id"].astype(str), known["known"].astype(bool)))
    key = content_key(mcfg, items_key(items), known_sig, *((select.identity,) if select else ()))
    folder = seed_dir / f"data-{key}"
    done = folder / "counts.json"
    if not done.is_file():
        mix = build_mixture(items, known, mcfg, select)
        if select is not None and select.table is not None:
            atomic_write_table(select.table, folder / "selection.csv")
        write_records(mix.records, folder / "ift.jsonl")
        atomic_write_table(pd.DataFrame([{k: r[k] for k in ("id", "kind", "item_id", "category")}
                                         for r in mix.records]), folder / "records.csv")
        items_to_jsonl(mix.heldout, folder / "heldout.jsonl")
        atomic_write_json(done, mix.counts)  # last: marks the folder complete
    heldout = load_conflicts(folder / "heldout.jsonl")
    evaluated = evaluated_items(heldout, cfg.evaluate.max_items, seed)
    counts = {**json.loads(done.read_text()), "evaluated": len(evaluated)}
    return SeedData(folder=folder, key=key, counts=counts, heldout=heldout, evaluated=evaluated)


def stage_finetune(cfg: ControlledConfig, seed: int, model_dir: Path, model_fp: str, data: SeedData,
                   seed_dir: Path) -> Path:
    """Finetune the base on the seed's records (resumes from the last complete checkpoint)."""
    from fullscale.finetune import run_finetune

    extra = (FILTER_FORM,) if cfg.finetune.filter_fraction > 0 else ()
    extra += dtype_parts(cfg.resolved_dtype())
    ft_dir = seed_dir / f"finetune-{content_key(model_fp, data.key, cfg.finetune, seed, *extra)}"
    if finished(ft_dir, cfg.finetune.steps):
        log.info("%s: finetuning already finished; reading it back", ft_dir)
        return ft_dir
    run_finetune(cfg.finetune_config(str(model_dir), data.folder / "ift.jsonl", ft_dir, seed))
    return ft_dir


def stage_evaluate(cfg: ControlledConfig, seed: int, base_link: Path, ft_dir: Path,
                   data: SeedData, seed_dir: Path) -> "tuple[pd.DataFrame, pd.DataFrame]":
    """Every checkpoint (the base as step 0) on the seed's evaluated held-out conflicts."""
    from fullscale.conflicts import items_to_jsonl
    from fullscale.evaluate import EvalConfig, evaluate_trajectory, load_results
    from fullscale.scoring import DEFAULT_STOPS, scorer_fingerprint

    e, dtype = cfg.evaluate, cfg.resolved_dtype()
    # the scorer's version is part of the key: results scored by an older scorer are recomputed, not refused
    key = content_key(ft_dir.name, e.template, e.modes, e.max_new_tokens, e.n_boot, seed, items_key(data.evaluated),
                      scorer_fingerprint(), *dtype_parts(dtype, e.batch_size))
    out = seed_dir / f"eval-{key}"
    if not (out / "eval.jsonl").is_file():
        items_to_jsonl(data.evaluated, out / "eval.jsonl")
    ev = EvalConfig(checkpoints=(str(base_link.parent), str(ft_dir)), datasets=(str(out / "eval.jsonl"),),
                    out=str(out), template=e.template, modes=e.modes, batch_size=e.batch_size,
                    max_new_tokens=e.max_new_tokens, n_boot=e.n_boot, seed=seed, plot=False, dtype=dtype,
                    stops=DEFAULT_STOPS + ANSWER_STOPS)  # generation stops where rescore_answers cuts
    evaluate_trajectory(ev)
    return load_results(out)


def stage_probe(cfg: ControlledConfig, seed: int, base_link: Path, ft_dir: Path, data: SeedData,
                seed_dir: Path) -> "pd.DataFrame":
    """Attention to context and value contributions per layer x head at every checkpoint."""
    from fullscale.checkpoints import discover_checkpoints
    from mechinterp.trajectory import probe_trajectory

    e, dtype = cfg.evaluate, cfg.resolved_dtype()
    items = data.evaluated[: e.probe_items]
    out = seed_dir / f"probe-{content_key(ft_dir.name, e.template, e.probe_items, items_key(items), *dtype_parts(dtype, e.probe_batch_size))}"
    ckpts = discover_checkpoints([str(base_link.parent), str(ft_dir)])
    return probe_trajectory(ckpts, items, out, template=e.template, batch_size=e.probe_batch_size, dtype=dtype)


def link_base(out: Path, model_dir: Path) -> Path:
    """``<out>/base/checkpoint-0``: a link to the base model folder (step 0 of every trajectory)."""
    link = out / "base" / "checkpoint-0"
    link.parent.mkdir(parents=True, exist_ok=True)
    target = model_dir.resolve()
    if link.is_symlink() and Path(os.readlink(link)) == target:
        return link
    if link.is_symlink() or link.exists():
        if not link.is_symlink():
            raise CpiError(f"{link}: exists and is not a link to the base model; use a fresh --out folder")
        link.unlink()
    tmp = link.with_name(".checkpoint-0.tmp")
    if tmp.is_symlink():
        tmp.unlink()
    tmp.symlink_to(target, target_is_directory=True)
    tmp.rename(link)
    return link




def rescore_answers(items: "pd.DataFrame", evaluated: Sequence[Any]) -> "pd.DataFrame":
    """The evaluation's per-item table with containment re-judged on the answer: the raw ``output`` cut
    at its first line break as well as the evaluation's stops (``answer_text``), then ``cf_correct``,
    ``param_correct``, ``outcome`` and ``matched_*`` from every accepted form of the two answers
    (:func:`fullscale.scoring.classify_output`). Log-prob columns are unchanged."""
    from fullscale.scoring import DEFAULT_STOPS, classify_output, cut_at_stops

    if "output" not in items.columns:
        return items
    by_id = {it.id: it for it in evaluated}
    missing = sorted(set(items["item_id"].astype(str)) - set(by_id))
    if missing:
        raise CpiError(f"evaluation table: item {missing[0]!r} is not among the evaluated conflicts")
    out = items.copy()
    texts = [cut_at_stops(str(o), DEFAULT_STOPS + ANSWER_STOPS) for o in out["output"].fillna("")]
    judged = [classify_output(t, by_id[str(i)].accepted_context, by_id[str(i)].accepted_parametric)
              for t, i in zip(texts, out["item_id"])]
    out["answer_text"] = texts
    for col in ("cf_correct", "param_correct", "outcome", "matched_context", "matched_parametric"):
        out[col] = [j[col] for j in judged]
    return out


__all__ = ["ANSWER_STOPS", "FILTER_FORM", "SeedData", "finished", "knowledge_items", "link_base", "rescore_answers",
           "stage_evaluate", "stage_finetune", "stage_knowledge", "stage_mixture", "stage_probe"]
