"""Finetuning and held-out test sets of the one-layer model, as token indices.

Token layout of the vocabulary T = S u A u {r} (``n_tokens = K_S + K_A + 1``):
subjects are indices ``0 .. K_S-1``, answer/context tokens ``K_S .. K_S+K_A-1``
and the relation token r is the last index. Every point gets fresh tokens
(Assumption 1: no subject-answer pair repeats) in this order:

* subjects: C, C+S, S, augmented, test, then unused ones;
* answers: contexts of C, contexts of C+S, answers of S points, contexts of
  augmented points, memorized answers of augmented subjects, test contexts,
  memorized answers of test subjects, then ``n_distractors`` distractor tokens
  for each C, C+S, augmented and test point (in that order), then unused ones.

An example is ``n_slots = 3 + n_distractors`` slots ``[context, subject,
relation, distractor...]`` (``slot`` axis); subject-only S points have the
context and distractor slots masked out, and when ``relation_logit is None``
(sigma_r = 0) the relation slot is masked too.

:func:`point_deltas` draws the per-point delta_C / delta_M of heterogeneous
finetuning sets (seeded, its own random stream).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from theory.config import SimConfig

CATEGORIES = ("C", "CS", "S", "AUG")
CAT_C, CAT_CS, CAT_S, CAT_AUG = range(4)


@dataclass(frozen=True)
class Dataset:
    """Index arrays of one configuration's finetuning and test points.

    Attributes (numpy arrays):
      train_tokens: [n_train, n_slots] int token index per slot (context, subject, relation, distractors).
      train_mask: [n_train, n_slots] bool, False for absent slots.
      train_target: [n_train] int target token (the context for [c, s, r] points).
      train_cat: [n_train] int category code (0=C, 1=C+S, 2=S, 3=augmented).
      memorized: [n_tokens] int, for each subject token the answer its
        pretrained value predicts (-1 = uniform / not a subject).
      train_subject: [n_train] the subject token of each point.
      test_tokens, test_mask: [n_test, n_slots]; test_context, test_param: [n_test]
        the context answer c and the memorized (parametric) answer a.
      is_subject, is_answer: [n_tokens] bool; relation: index of r.
    """

    train_tokens: np.ndarray
    train_mask: np.ndarray
    train_target: np.ndarray
    train_cat: np.ndarray
    train_subject: np.ndarray
    memorized: np.ndarray
    memorized_delta: np.ndarray
    test_tokens: np.ndarray
    test_mask: np.ndarray
    test_context: np.ndarray
    test_param: np.ndarray
    is_subject: np.ndarray
    is_answer: np.ndarray
    relation: int


def build_dataset(cfg: SimConfig) -> Dataset:
    """Lay out the tokens of ``cfg``'s finetuning and test points (deterministic)."""
    K_S, K_A = cfg.k_s, cfg.k_a
    T = K_S + K_A + 1
    r = T - 1
    subj = iter(range(K_S))
    ans = iter(range(K_S, K_S + K_A))
    memorized = np.full(T, -1, dtype=np.int64)
    mem_delta = np.zeros(T, dtype=np.float64)
    rows, masks, targets, cats = [], [], [], []
    use_r = cfg.relation_logit is not None
    k = cfg.n_distractors
    no_dis = (r,) * k

    for _ in range(cfg.n_C):
        s, c = next(subj), next(ans)
        rows.append((c, s, r)); masks.append((True, True, use_r)); targets.append(c); cats.append(CAT_C)
    for _ in range(cfg.n_CS):
        s, c = next(subj), next(ans)
        memorized[s], mem_delta[s] = c, cfg.delta_M
        rows.append((c, s, r)); masks.append((True, True, use_r)); targets.append(c); cats.append(CAT_CS)
    for _ in range(cfg.n_S):
        s, a = next(subj), next(ans)
        if cfg.s_memorized:
            memorized[s], mem_delta[s] = a, cfg.delta_S
        # the context slot is absent; point it at r and mask it out
        rows.append((r, s, r)); masks.append((False, True, use_r)); targets.append(a); cats.append(CAT_S)
    aug_s = [next(subj) for _ in range(cfg.n_aug)]
    aug_c = [next(ans) for _ in range(cfg.n_aug)]
    aug_a = [next(ans) for _ in range(cfg.n_aug)]
    for s, c, a in zip(aug_s, aug_c, aug_a):
        memorized[s], mem_delta[s] = a, cfg.delta_M
        rows.append((c, s, r)); masks.append((True, True, use_r)); targets.append(c); cats.append(CAT_AUG)
    test_s = [next(subj) for _ in range(cfg.n_test)]
    test_c = [next(ans) for _ in range(cfg.n_test)]
    test_a = [next(ans) for _ in range(cfg.n_test)]
    for s, a in zip(test_s, test_a):
        memorized[s], mem_delta[s] = a, cfg.delta_M
    # distractors: k fresh answer tokens in the context of every point that has one (S points: masked)
    rows = [row + (tuple(next(ans) for _ in range(k)) if m[0] else no_dis) for row, m in zip(rows, masks)]
    masks = [m + (m[0],) * k for m in masks]
    test_rows = [(c, s, r) + tuple(next(ans) for _ in range(k)) for c, s in zip(test_c, test_s)]

    is_subject = np.zeros(T, dtype=bool)
    is_subject[:K_S] = True
    is_answer = np.zeros(T, dtype=bool)
    is_answer[K_S : K_S + K_A] = True
    n_slots = cfg.n_slots
    train_tokens = np.asarray(rows, dtype=np.int64).reshape(-1, n_slots)
    return Dataset(
        train_tokens=train_tokens,
        train_mask=np.asarray(masks, dtype=bool).reshape(-1, n_slots),
        train_target=np.asarray(targets, dtype=np.int64),
        train_cat=np.asarray(cats, dtype=np.int64),
        train_subject=train_tokens[:, 1].copy(),
        memorized=memorized,
        memorized_delta=mem_delta,
        test_tokens=np.asarray(test_rows, dtype=np.int64).reshape(-1, n_slots),
        test_mask=np.asarray([(True, True, use_r) + (True,) * k] * cfg.n_test, dtype=bool).reshape(-1, n_slots),
        test_context=np.asarray(test_c, dtype=np.int64),
        test_param=np.asarray(test_a, dtype=np.int64),
        is_subject=is_subject,
        is_answer=is_answer,
        relation=r,
    )


def point_deltas(cfg: SimConfig, seed: int, data: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Per-point (delta_C [n_train], delta_M [n_train]) of the finetuning set for ``seed``.

    C and C+S points draw delta * U[1 - spread, 1 + spread] independently
    (``delta_C_spread``, ``delta_M_spread``; 0 = every point at the nominal
    value); S and augmented points keep the nominal values (delta_M is NaN
    where a point has no memorized subject answer). The stream is
    ``default_rng([seed, 1])``, independent of ``init_noise``'s.
    """
    n = data.train_cat.size
    dC = np.full(n, cfg.delta_C)
    dM = np.where(np.isin(data.train_cat, (CAT_CS, CAT_AUG)), cfg.delta_M, np.nan)
    if cfg.delta_C_spread or cfg.delta_M_spread:
        rng = np.random.default_rng([seed, 1])
        uC, uM = rng.uniform(-1.0, 1.0, n), rng.uniform(-1.0, 1.0, n)
        ctx = np.isin(data.train_cat, (CAT_C, CAT_CS))
        dC = np.where(ctx, cfg.delta_C * (1 + cfg.delta_C_spread * uC), dC)
        dM = np.where(data.train_cat == CAT_CS, cfg.delta_M * (1 + cfg.delta_M_spread * uM), dM)
    return dC, dM
