"""Context-criticality of IFT examples: scoring, filtering and the dataset-composition histogram.

The paper (§4.3–4.4) splits context-bearing IFT examples into *context-critical*
ones (the response cannot be produced without the input context) and
*non-context-critical* ones (the model's parametric knowledge, or teacher
forcing on the response, makes the context redundant), and shows that
dropping the 25% least context-critical examples keeps context reliance from
falling during finetuning.

:func:`score_context_criticality` measures it with the base model: the mean
per-token loss of the response *with* the input context and *without* it;
``gap = loss_without_context - loss_with_context`` is the example's
context-criticality (how much the context helps predict the response). The
paper's literal rule ranks by ``loss_without_context`` alone
(``criterion="loss_without_context"``); ``gap`` (the default) additionally
discounts responses that are just hard to predict either way. "Without context"
means the Alpaca ``input`` removed; for evaluation-shaped QA records
(``input`` = ``"Background: ...\nQuestion: ..."``) it is the closed-book form of
the same question, so the question itself is never removed
(:meth:`fullscale.ift_data.IFTExample.without_context`).

:func:`lexical_overlap_scores` is a cheap model-free heuristic for when no
model can be run: the share of the response's content words that appear in
the context but not in the instruction.

:func:`filter_examples` drops the lowest-scoring ``fraction`` of the examples
that *have* a context; examples without a context have no criticality score
and are kept (they are the paper's subject-only points; drop them separately
if you want the paper's "context-only" subset).

:func:`run_score_context` (``cpi data score-context``) does all of it for one data file, from a
:class:`ScoreContextConfig`, and writes the results folder.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Optional, Sequence

from cpi.config import check_at_least, check_in_interval
from cpi.errors import ConfigError, CpiError
from fullscale.checkpoints import ModelSettings

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from fullscale.ift_data import IFTExample

log = logging.getLogger(__name__)

CRITERIA = ("gap", "loss_without_context")
SCORE_COLUMNS = ("example_id", "has_context", "n_response_tokens", "loss_with_context", "loss_without_context",
                 "gap", "method")

_STOPWORDS = frozenset(
    "a an the and or but if of to in on at by for with from as is are was were be been being it its this that these "
    "those there here he she they we you i me my your his her their our them us not no do does did so than then too "
    "very can will would should could may might must have has had what which who whom whose when where why how all "
    "any each few more most other some such only own same just into over under again further once about above below "
    "up down out off".split()
)


def response_losses(model: Any, tokenizer: Any, features: Sequence[dict[str, list[int]]], batch_size: int,
                    desc: str, response_logits_only: bool = True) -> list[tuple[float, int]]:
    """Mean next-token NLL over each feature's labelled (response) tokens, and their count.

    ``features``: dicts with ``input_ids`` and ``labels`` (``-100`` = not scored), as made by
    :func:`fullscale.ift_data.format_example`. The loss at position ``pos`` predicts token ``pos + 1``.
    A model that takes ``logits_to_keep`` (:func:`fullscale.collate.accepts_logits_to_keep`) projects
    only the scored positions onto the vocabulary, as finetuning does: on Gemma-3's 262k-token
    output layer the full ``(batch, pos, d_vocab)`` logits would be most of the time and memory.
    ``response_logits_only=False`` computes them all (the baseline of ``benchmarks/score_context.py``).
    """
    import torch

    from cpi.progress import progress
    from fullscale.batching import pad_batch, pad_token_id
    from fullscale.collate import accepts_logits_to_keep, next_token_targets

    device = next(model.parameters()).device
    pad = pad_token_id(tokenizer)
    only_scored = response_logits_only and accepts_logits_to_keep(model)
    order = sorted(range(len(features)), key=lambda i: -len(features[i]["input_ids"]))
    out: list[tuple[float, int]] = [(math.nan, 0)] * len(features)
    batches = [order[i: i + batch_size] for i in range(0, len(order), batch_size)]
    was_training = model.training
    model.eval()
    try:
        for batch in progress(batches, desc=desc, total=len(batches)):
            ids, mask = pad_batch([features[i]["input_ids"] for i in batch], pad, side="right")
            labels, _ = pad_batch([features[i]["labels"] for i in batch], -100, side="right")
            targets, keep = (t.to(device) for t in next_token_targets(labels))  # batch pos, batch pos
            inputs = {"input_ids": ids.to(device), "attention_mask": mask.to(device)}
            with torch.no_grad():
                if only_scored:
                    logits = model(**inputs, logits_to_keep=keep).logits.float()  # (n_kept, d_vocab), maybe batched
                else:
                    logits = model(**inputs).logits.float()[keep]  # (n_kept, d_vocab)
            logits = logits.reshape(-1, logits.shape[-1])  # n_kept d_vocab, in row-major (batch, pos) order
            nll = torch.nn.functional.cross_entropy(logits, targets[keep], reduction="none")  # n_kept
            rows = keep.nonzero()[:, 0]  # n_kept: the batch row of each scored position
            sums = torch.zeros(len(batch), dtype=nll.dtype, device=nll.device).index_add_(0, rows, nll)  # batch
            counts = keep.sum(dim=1)  # batch
            for r, i in enumerate(batch):
                c = int(counts[r])
                out[i] = (float(sums[r]) / c if c else math.nan, c)
    finally:
        model.train(was_training)
    return out


def score_context_criticality(model: Any, tokenizer: Any, examples: Sequence["IFTExample"], template: str = "alpaca",
                              batch_size: int = 8, max_length: int | None = 1024,
                              response_logits_only: bool = True) -> "pd.DataFrame":
    """Per-example response loss with and without the input context (the base model's).

    One row per example: ``example_id``, ``has_context``, ``n_response_tokens``
    (scored tokens of the final response), ``loss_with_context``,
    ``loss_without_context`` (mean NLL per response token, nats), ``gap`` =
    without − with (NaN without a context), ``method`` = ``"loss"``. Only the
    *final* response is scored (for multi-turn chats the earlier turns are the
    context). Examples whose response does not fit ``max_length`` get NaN. The base computes the
    logits of the response positions only (``response_logits_only``, :func:`response_losses`).
    """
    import pandas as pd

    from fullscale.ift_data import format_example

    feats_with, feats_without = [], []
    for ex in examples:
        f = format_example(ex, tokenizer, template, max_length)
        feats_with.append(_last_response_only(f))
        g = format_example(ex.without_context(), tokenizer, template, max_length) if ex.has_context else None
        feats_without.append(_last_response_only(g))
    idx_with = [i for i, f in enumerate(feats_with) if f is not None]
    idx_without = [i for i, f in enumerate(feats_without) if f is not None]
    with_l = response_losses(model, tokenizer, [feats_with[i] for i in idx_with], batch_size, "loss with context",
                             response_logits_only)
    without_l = response_losses(model, tokenizer, [feats_without[i] for i in idx_without], batch_size,
                                "loss without context", response_logits_only)
    lw = {i: v for i, v in zip(idx_with, with_l)}
    lwo = {i: v for i, v in zip(idx_without, without_l)}
    rows = []
    for i, ex in enumerate(examples):
        w, n = lw.get(i, (math.nan, 0))
        wo = lwo[i][0] if i in lwo else (w if not ex.has_context else math.nan)
        rows.append({"example_id": ex.id, "has_context": ex.has_context, "n_response_tokens": n,
                     "loss_with_context": w, "loss_without_context": wo,
                     "gap": (wo - w) if ex.has_context else math.nan, "method": "loss"})
    return pd.DataFrame(rows, columns=list(SCORE_COLUMNS))


def _last_response_only(feat: dict[str, list[int]] | None) -> dict[str, list[int]] | None:
    """Keep only the last contiguous run of labelled tokens (the final response)."""
    if feat is None:
        return None
    labels = list(feat["labels"])
    idx = [i for i, lab in enumerate(labels) if lab != -100]
    if not idx:
        return None
    end = idx[-1]
    start = end
    while start - 1 >= 0 and labels[start - 1] != -100:
        start -= 1
    new = [-100] * len(labels)
    new[start: end + 1] = labels[start: end + 1]
    return {**feat, "labels": new}


def _content_words(text: str) -> list[str]:
    return [w for w in re.findall(r"[\w']+", text.lower()) if w not in _STOPWORDS]


def lexical_overlap_scores(examples: Sequence["IFTExample"]) -> "pd.DataFrame":
    """Model-free context-criticality: share of the response's content words found in the context
    but not in the instruction.

    Same columns as :func:`score_context_criticality`; ``gap`` holds the share
    (0–1, NaN without context), the loss columns are NaN and ``method`` is
    ``"lexical"``. High = the response copies from the context.
    """
    import pandas as pd

    rows = []
    for ex in examples:
        resp = _content_words(ex.response)
        if ex.is_chat:
            last_user = max(i for i, (r, _) in enumerate(ex.messages) if r == "user")
            instr = ex.messages[last_user][1]
        else:
            instr = ex.instruction + " " + (ex.qa_question or "")
        ctx = set(_content_words(ex.context))
        ins = set(_content_words(instr))
        share = (sum(1 for w in resp if w in ctx and w not in ins) / len(resp)) if resp else 0.0
        rows.append({"example_id": ex.id, "has_context": ex.has_context, "n_response_tokens": len(resp),
                     "loss_with_context": math.nan, "loss_without_context": math.nan,
                     "gap": share if ex.has_context else math.nan, "method": "lexical"})
    return pd.DataFrame(rows, columns=list(SCORE_COLUMNS))


def read_scores(path: str | Path) -> "pd.DataFrame":
    """Read a score table written by ``cpi data score-context`` (CSV or Parquet)."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise CpiError(f"{path}: score table not found (make one with `cpi data score-context`)")
    table = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, dtype={"example_id": str})
    missing = [c for c in ("example_id", "has_context") if c not in table.columns]
    if missing:
        raise CpiError(f"{path}: score table lacks column '{missing[0]}'")
    table["example_id"] = table["example_id"].astype(str)
    return table


def select_lowest(scores: "pd.DataFrame", fraction: float = 0.25, criterion: str = "gap") -> set[str]:
    """Ids of the ``fraction`` of context-bearing examples with the lowest criticality.

    ``criterion``: ``gap`` (low = context helps least) or ``loss_without_context``
    (low = response predictable without context; the paper's rule). Ties are
    broken by ``example_id`` so the selection is deterministic.
    """
    if criterion not in CRITERIA:
        raise CpiError(f"unknown criterion {criterion!r} (choose from: {', '.join(CRITERIA)})")
    if not 0 <= fraction < 1:
        raise CpiError(f"fraction must be in [0, 1), got {fraction}")
    if criterion not in scores.columns:
        raise CpiError(f"score table has no column {criterion!r}")
    pool = scores[scores["has_context"].astype(bool) & scores[criterion].notna()]
    n_drop = int(math.floor(fraction * len(pool) + 1e-9))
    if n_drop == 0:
        return set()
    ranked = pool.assign(_id=pool["example_id"].astype(str)).sort_values([criterion, "_id"], kind="mergesort")
    return set(ranked["_id"].iloc[:n_drop])


def filter_examples(examples: Sequence["IFTExample"], scores: "pd.DataFrame", fraction: float = 0.25,
                    criterion: str = "gap", source: str = "score table") -> tuple[list["IFTExample"], list["IFTExample"]]:
    """Split ``examples`` into ``(kept, dropped)`` by :func:`select_lowest` on ``scores``.

    Every example id must appear in ``scores`` (else :class:`CpiError` naming
    the first missing id and ``source``).
    """
    known = set(scores["example_id"].astype(str))
    for ex in examples:
        if ex.id not in known:
            raise CpiError(f"{source}: no score for example {ex.id!r} ({ex.where}); re-run `cpi data score-context` "
                           "on this data file")
    mine = scores[scores["example_id"].astype(str).isin({ex.id for ex in examples})]
    if criterion in mine.columns and fraction > 0:
        ctx = mine[mine["has_context"].astype(bool)]
        unscored = int(ctx[criterion].isna().sum())
        if len(ctx) and unscored == len(ctx):
            raise CpiError(f"{source}: none of the {len(ctx)} context-bearing examples has a {criterion!r} score "
                           "(all NaN: every response was cut off by the length limit?); nothing to filter on")
        if unscored:
            log.warning("%s: %d of %d context-bearing examples have no %r score (NaN: response cut off by the length "
                        "limit) and are kept unfiltered", source, unscored, len(ctx), criterion)
    drop = select_lowest(mine, fraction, criterion)
    kept = [ex for ex in examples if ex.id not in drop]
    dropped = [ex for ex in examples if ex.id in drop]
    log.info("context-criticality filter (%s, fraction %.2f): dropped %d of %d examples", criterion, fraction,
             len(dropped), len(examples))
    return kept, dropped


def plot_criticality_histogram(table: "pd.DataFrame", ax: Any = None, column: str = "gap",
                               fraction: float | None = None, bins: int = 40) -> Any:
    """Histogram of ``column`` over context-bearing examples (the dataset's composition).

    With ``fraction``, a dashed line marks the filter threshold (the
    ``fraction`` quantile) and the text gives how many examples fall below it.
    Examples without context are counted in the title. Returns the figure.
    """
    import matplotlib.pyplot as plt
    import numpy as np

    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 3.5))
    else:
        fig = ax.figure
    has = table["has_context"].astype(bool)
    values = table.loc[has, column].dropna().to_numpy(dtype=float)
    n_none = int((~has).sum())
    if len(values):
        ax.hist(values, bins=bins, color="#4C72B0", alpha=0.85)
    method = str(table["method"].iloc[0]) if "method" in table.columns and len(table) else "loss"
    label = {"gap": "context-criticality: loss without − with context (nats/token)" if method == "loss"
             else "context-criticality: response words found in context (share)",
             "loss_without_context": "response loss without context (nats/token)"}.get(column, column)
    ax.set_xlabel(label)
    ax.set_ylabel("examples")
    ax.set_title(f"{len(values)} examples with context, {n_none} without")
    if fraction and len(values):
        thr = float(np.quantile(values, fraction))
        ax.axvline(thr, color="#C44E52", linestyle="--", label=f"lowest {fraction:.0%} (≤ {thr:.3g}) filtered")
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    return fig


@dataclasses.dataclass(frozen=True)
class ScoreContextConfig(ModelSettings):
    """What ``cpi data score-context`` runs (its flags are these fields)."""

    data: str = ""
    "IFT data (.jsonl/.json/.parquet, Alpaca or messages records)"
    out: str = "curation"
    "output folder"
    model: Optional[str] = None
    "base model folder or hub name (needed for method loss)"
    fraction: float = 0.25
    "fraction of context-bearing examples to drop"
    method: Literal["loss", "lexical"] = "loss"
    "loss: base-model response loss with/without context; lexical: word overlap (no model)"
    criterion: Literal["gap", "loss_without_context"] = "gap"
    "rank by the loss gap or by the loss without context (the paper's literal rule)"
    data_format: Literal["auto", "alpaca", "tulu", "ultrachat"] = "auto"
    "record format of the data file"
    batch_size: int = 8
    "examples per forward pass"
    max_length: int = 1024
    "tokens per example"
    max_examples: Optional[int] = None
    "score only the first N examples"

    def validate(self) -> None:
        super().validate()
        check_at_least(self, batch_size=1, max_length=1, max_examples=1)
        check_in_interval(self, fraction="[0, 1)")
        if self.method == "loss" and not self.model:
            raise ConfigError("field 'model': --model is needed for --method loss (or use --method lexical)")


@dataclasses.dataclass(frozen=True)
class ScoreContextResult:
    """What :func:`run_score_context` wrote: the folder, the score table and the filter's counts."""

    out: Path
    scores: "pd.DataFrame"
    n_kept: int
    n_dropped: int
    n_unscored: int


def run_score_context(config: ScoreContextConfig) -> ScoreContextResult:
    """Score ``config.data`` and filter it (``cpi data score-context``).

    Writes ``scores.csv`` (one row per example), ``filtered.jsonl`` (kept examples),
    ``dropped_ids.txt``, ``histogram.png`` and ``config.json`` into ``config.out``, which is locked
    while the run writes. Bad input raises :class:`CpiError` before anything is written.
    """
    from cpi.io import atomic_save_figure, atomic_write_text, check_input_file, check_out_dir, save_run
    from cpi.lock import FolderLock
    from fullscale.ift_data import check_template, load_ift_data, write_ift_jsonl

    out = check_out_dir(config.out)
    check_template(config.template)
    if Path(config.data).exists() and Path(config.data).suffix != ".parquet":
        check_input_file(config.data, "--data")  # Parquet is binary by design
    examples = load_ift_data(config.data, config.data_format, max_examples=config.max_examples)
    with FolderLock(out, "cpi data score-context"):
        if config.method == "loss":
            from fullscale.checkpoints import load_checkpoint

            model, tokenizer = load_checkpoint(config.model, device=config.device, dtype=config.dtype,
                                               tokenizer=config.tokenizer)
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token
            scores = score_context_criticality(model, tokenizer, examples, template=config.template,
                                               batch_size=config.batch_size, max_length=config.max_length)
            criterion = config.criterion
        else:
            scores = lexical_overlap_scores(examples)
            criterion = "gap"
        ctx = scores[scores["has_context"].astype(bool)]
        if len(ctx) and ctx[criterion].isna().all():
            raise CpiError(f"--max-length {config.max_length}: no context-bearing example of {config.data} fits with "
                           f"its response ({len(ctx)} scored NaN); raise --max-length")
        kept, dropped = filter_examples(examples, scores, config.fraction, criterion=criterion, source="scores")
        write_ift_jsonl(kept, out / "filtered.jsonl")
        atomic_write_text(out / "dropped_ids.txt", "".join(f"{ex.id}\n" for ex in dropped))
        fig = plot_criticality_histogram(scores, column=criterion, fraction=config.fraction)
        atomic_save_figure(fig, out / "histogram.png", dpi=150)
        n_unscored = int(ctx[criterion].isna().sum())
        resolved = {"dtype": str(model.dtype).replace("torch.", "")} if config.method == "loss" else {}
        save_run(out, config, tables={"scores": scores}, criterion=criterion, n_examples=len(examples),
                 n_kept=len(kept), n_dropped=len(dropped), n_unscored=n_unscored, **resolved)
    return ScoreContextResult(out=out, scores=scores, n_kept=len(kept), n_dropped=len(dropped),
                              n_unscored=n_unscored)
