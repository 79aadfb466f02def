"""Training schedules of the simulator: learning-rate schedules, seeded minibatches, the filter.

The updates themselves (gd / sgd / momentum / adam / adamw) are batched in
:mod:`theory.simulator`; this module holds what is decided before training:

* :func:`lr_factors`: the multiplier of ``lr`` at each step (linear warm-up,
  then constant, linear or cosine decay), the same formulas as transformers'
  ``get_{constant,linear,cosine}_schedule_with_warmup`` (a test compares them);
* :func:`minibatch_schedule`: which finetuning points each step's minibatch
  holds (every epoch a seeded reshuffle of the kept points, the last batch of an
  epoch may be smaller, as a ``DataLoader(shuffle=True)``);
* :func:`filter_points`: the paper's filtering mitigation with a noisy proxy
  score, and the filter's precision.

Random streams are derived from the run's seed and kept apart:
``default_rng(seed)`` is ``init_noise``'s, ``[seed, 1]`` the per-point deltas',
``[seed, 2]`` the filter's noise and ``[seed, 3]`` the minibatch order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from theory.config import SimConfig
from theory.data import CAT_AUG, CAT_C, CAT_CS, Dataset


def lr_factors(cfg: SimConfig, steps: int | None = None) -> np.ndarray:
    """Multiplier of ``cfg.lr`` for updates t = 0 .. steps-1 [steps] (``steps`` defaults to cfg.steps).

    Warm-up: t / warmup_steps for t < warmup_steps. Then, with
    progress = (t - warmup) / (cfg.steps - warmup): "constant" 1, "linear"
    max(0, 1 - progress), "cosine" max(0, (1 + cos(pi * progress)) / 2).
    """
    n = cfg.steps if steps is None else steps
    t = np.arange(n, dtype=np.float64)
    w = cfg.warmup_steps
    if cfg.schedule == "constant":
        after = np.ones(n)
    else:
        progress = (t - w) / max(1, cfg.steps - w)
        if cfg.schedule == "linear":
            after = np.maximum(0.0, (cfg.steps - t) / max(1, cfg.steps - w))
        else:
            after = np.maximum(0.0, 0.5 * (1.0 + np.cos(math.pi * progress)))
    return np.where(t < w, t / max(1, w), after)


def minibatch_schedule(kept: np.ndarray, batch_size: int, steps: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices [steps, batch_size] int, weights [steps, batch_size] float) of each step's minibatch.

    ``kept``: indices of the finetuning points that train. Each epoch is a
    permutation of ``kept`` (``default_rng([seed, 3])``) cut into batches of
    ``batch_size``; a short last batch is padded with index 0 and weight 0.
    The weight of a real slot is 1 / (its batch's size): the minibatch loss is a mean.
    """
    rng = np.random.default_rng([seed, 3])
    n = kept.size
    per_epoch = -(-n // batch_size)
    epochs = -(-steps // per_epoch)
    idx = np.zeros((epochs * per_epoch, batch_size), dtype=np.int64)
    wt = np.zeros((epochs * per_epoch, batch_size), dtype=np.float64)
    for e in range(epochs):
        perm = kept[rng.permutation(n)]
        for j in range(per_epoch):
            chunk = perm[j * batch_size : (j + 1) * batch_size]
            row = e * per_epoch + j
            idx[row, : chunk.size] = chunk
            wt[row, : chunk.size] = 1.0 / chunk.size
    return idx[:steps], wt[:steps]


@dataclass(frozen=True)
class FilterResult:
    """Which finetuning points the filter keeps, and how well it found the C+S points.

    keep: [n_train] bool. score: [n_train] the noisy proxy (NaN for points without a
    context, which are never dropped). precision: share of dropped points that are
    C+S (non-context-critical); recall: share of C+S points dropped (NaN without any).
    """

    keep: np.ndarray
    score: np.ndarray
    n_dropped: int
    precision: float
    recall: float


def filter_points(cfg: SimConfig, data: Dataset, V0: np.ndarray, seed: int) -> FilterResult:
    """The paper's filtering mitigation with an imperfect score.

    Context-criticality of a point [c, s, r] -> c is proxied by the perplexity
    of its target without the context, -log softmax(V0[:, s])_c (high for C
    points, whose subject value is uniform; low for C+S points, whose subject
    is memorized with answer c), plus ``filter_noise`` * N(0, 1) from
    ``default_rng([seed, 2])``. The ``round(filter_fraction * n)`` points with
    the lowest score among the n points with a context are dropped.
    ``V0`` [n_tokens, n_tokens] is the run's starting value table.
    """
    n = data.train_cat.size
    has_ctx = np.isin(data.train_cat, (CAT_C, CAT_CS, CAT_AUG))
    score = np.full(n, np.nan)
    n_cs = int((data.train_cat == CAT_CS).sum())
    if cfg.filter_fraction == 0:  # no filter: nothing to score
        return FilterResult(np.ones(n, dtype=bool), score, 0, float("nan"), 0.0 if n_cs else float("nan"))
    cols = V0[:, data.train_subject]  # [n_tokens, n_train]: the subject's value column
    logp = cols - np.logaddexp.reduce(cols, axis=0)
    score[has_ctx] = -logp[data.train_target, np.arange(n)][has_ctx]
    if cfg.filter_noise > 0:
        score[has_ctx] += cfg.filter_noise * np.random.default_rng([seed, 2]).standard_normal(int(has_ctx.sum()))
    n_drop = int(round(cfg.filter_fraction * int(has_ctx.sum())))
    keep = np.ones(n, dtype=bool)
    if n_drop:
        cand = np.flatnonzero(has_ctx)
        drop = cand[np.argsort(score[cand], kind="stable")[:n_drop]]
        keep[drop] = False
    dropped_cs = int(((~keep) & (data.train_cat == CAT_CS)).sum())
    return FilterResult(
        keep=keep,
        score=score,
        n_dropped=n_drop,
        precision=dropped_cs / n_drop if n_drop else float("nan"),
        recall=dropped_cs / n_cs if n_cs else float("nan"),
    )
