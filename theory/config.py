"""The simulator's configuration: model, data and training parameters.

Every parameter of the one-layer attention model of Goyal et al. (ICLR 2025,
Section 5 / Appendix B) lives in one validated, frozen :class:`SimConfig`.
``validate`` enforces the paper's assumptions (Definitions 2-3, Assumption 6)
so that an impossible start W(0) is refused with a one-line error naming the
field instead of silently producing a different model.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Literal, Optional

from cpi.config import Config, check_at_least
from cpi.errors import ConfigError

Mode = Literal["qk", "full", "v"]
Optimizer = Literal["gd", "sgd", "momentum", "adam", "adamw"]
Schedule = Literal["constant", "linear", "cosine"]
Basis = Literal["canonical", "random"]

#: largest |o_c|, |o_r|, |relation_logit| accepted: at 1e6 a float64 logit still resolves O(1)
#: differences to ~1e-10 (ulp(1e6) = 1.2e-10); at 1e16 the ulp is 2 and M_C(0) is silently wrong.
MAX_ABS_LOGIT = 1e6
#: default memory bound for one simulated configuration (all seeds of one call count separately);
#: override with the environment variable CPI_THEORY_MAX_GB.
DEFAULT_MAX_GB = 4.0
_BYTES = 8  # float64 / int64


def max_memory_bytes() -> float:
    """The memory bound in bytes (``CPI_THEORY_MAX_GB``, default :data:`DEFAULT_MAX_GB` GiB)."""
    raw = os.environ.get("CPI_THEORY_MAX_GB", "")
    try:
        gb = float(raw) if raw.strip() else DEFAULT_MAX_GB
    except ValueError:
        raise ConfigError(f"CPI_THEORY_MAX_GB: expected a number of GiB, got {raw!r}") from None
    return gb * 2**30


def format_bytes(n: float) -> str:
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n / 2**10:.3g} KiB"


@dataclass(frozen=True)
class SimConfig(Config):
    """All parameters of one simulated finetuning run.

    Data (each point has fresh tokens: no subject-answer pair repeats):
      n_C: context-critical points [c, s, r] -> c (subject value uniform).
      n_CS: non-context-critical points (subject memorized with answer c).
      n_S: subject-only points [s, r] -> a (memorized if ``s_memorized``).
      n_aug: counterfactual-augmented points: memorized subject (answer a),
        context c != a, target c.
      n_test: held-out counterfactual test points (memorized subject with
        answer a, context c != a, tokens never seen in finetuning).
    Vocabulary: K_S subject tokens, K_A answer/context tokens, one relation
      token r; ``None`` = the smallest vocabulary that holds the data.
      ``d`` = embedding width (``None`` = K_S + K_A + 3, the minimum).
    Pretrained start W(0): delta_C = softmax(v0(c))_c, delta_M =
      softmax(v0(s))_a for memorized subjects, delta_S for memorized S points,
      o_c / o_r the off-diagonal value entries, ``relation_logit`` the
      self-attention logit of r (``None`` = -inf, i.e. sigma_r = 0 exactly as
      in the notes), ``init_noise`` the std of seeded Gaussian noise added to
      the initial attention logits and value table (0 = the exact symmetric
      start; seeds then give identical runs).
    Training: ``steps`` updates with peak step ``lr`` (``lr * lr_V_scale`` for W_V);
      ``mode`` = "qk" (W_V frozen, Proposition 1), "full" (W_KQ and W_V) or "v" (W_V only).
      ``optimizer``: "gd" (full-batch gradient descent, the paper's), "sgd" (plain steps on seeded
      minibatches of ``batch_size``, required), "momentum" (heavy ball, ``momentum``), "adam" and
      "adamw" (``beta1``, ``beta2``, ``eps``). Adam's per-coordinate normalisation depends on
      the orthonormal basis of R^d the embeddings are written in (``basis``): "canonical" puts
      every identity part, theta_S, theta_C and phi(r) on its own axis; "random" is a seeded
      random rotation of it (seed = the run's seed). gd, sgd and momentum do not depend on it.
      ``batch_size`` (``None`` = full batch) gives minibatches for any optimizer but "gd": each
      epoch is a seeded reshuffle of the (kept) finetuning points. ``weight_decay``: L2 added to
      the gradient (torch semantics) for gd/sgd/momentum/adam, decoupled for adamw.
      ``warmup_steps`` linear warm-up from 0, then ``schedule`` "constant", "linear" (to 0 at
      ``steps``) or "cosine" (half cosine to 0 at ``steps``), as transformers' schedulers.
    Heterogeneous points: each C / C+S finetuning point draws its own delta_C (and delta_M for
      C+S points) uniformly from delta * [1 - spread, 1 + spread] (seeded); held-out test points
      keep the nominal delta_C / delta_M.
    Filtering (the paper's mitigation): score every point with a context [c, s, r] by a noisy
      proxy of its context-criticality, -log p_0(target | subject only) + ``filter_noise`` * N(0, 1)
      (seeded), and drop the ``filter_fraction`` of them with the lowest score before training.
    Overlap and distractors: ``overlap`` = cosine between the identity parts of any two tokens of
      the same family (0 = orthogonal, as in the paper; realised with one extra shared direction per
      family, so d grows by 2); ``n_distractors`` extra answer-family tokens in every context
      (fresh tokens, unseen elsewhere, their values like any answer's).
    """

    n_C: int = 16
    n_CS: int = 16
    n_S: int = 0
    n_aug: int = 0
    n_test: int = 4
    s_memorized: bool = True
    K_S: Optional[int] = None
    K_A: Optional[int] = None
    d: Optional[int] = None
    delta_C: float = 0.2
    delta_M: float = 0.6
    delta_S: float = 0.9
    o_c: float = 1.0
    o_r: float = 0.5
    relation_logit: Optional[float] = None
    init_noise: float = 0.0
    lr: float = 2.0
    lr_V_scale: float = 1.0
    steps: int = 500
    mode: Mode = "qk"
    optimizer: Optimizer = "gd"
    batch_size: Optional[int] = None
    momentum: float = 0.9
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0
    warmup_steps: int = 0
    schedule: Schedule = "constant"
    basis: Basis = "canonical"
    delta_C_spread: float = 0.0
    delta_M_spread: float = 0.0
    filter_fraction: float = 0.0
    filter_noise: float = 0.0
    overlap: float = 0.0
    n_distractors: int = 0
    label: str = ""

    # -- derived sizes -----------------------------------------------------
    @property
    def n_train(self) -> int:
        return self.n_C + self.n_CS + self.n_S + self.n_aug

    @property
    def min_K_S(self) -> int:
        return self.n_C + self.n_CS + self.n_S + self.n_aug + self.n_test

    @property
    def min_K_A(self) -> int:
        # contexts of C / C+S points, answers of S points, (context, answer) of aug / test points,
        # and n_distractors fresh answer tokens in every context
        n_ctx = self.n_C + self.n_CS + self.n_aug + self.n_test
        return self.n_C + self.n_CS + self.n_S + 2 * self.n_aug + 2 * self.n_test + self.n_distractors * n_ctx

    @property
    def k_s(self) -> int:
        return self.K_S if self.K_S is not None else self.min_K_S

    @property
    def k_a(self) -> int:
        if self.K_A is not None:
            return self.K_A
        # smallest vocabulary that holds the data, keeps K_A > K_S and delta_C > 3/(K_A-1)
        dc_lo = self.delta_C * (1 - self.delta_C_spread)  # every point's delta_C > 3/(K_A-1)
        need = max(self.min_K_A, self.k_s + 1, math.floor(3.0 / dc_lo + 1.0) + 1)
        return need

    @property
    def n_tokens(self) -> int:
        return self.k_s + self.k_a + 1

    @property
    def min_dim(self) -> int:
        """|T| + 2 (type directions theta_S, theta_C), + 2 shared identity directions with overlap."""
        return self.k_s + self.k_a + 3 + (2 if self.overlap != 0.0 else 0)

    @property
    def dim(self) -> int:
        return self.d if self.d is not None else self.min_dim

    @property
    def n_slots(self) -> int:
        """Slots of an example: context, subject, relation, then the distractors."""
        return 3 + self.n_distractors

    @property
    def update_rule(self) -> str:
        """Which batched update the optimizer needs: "plain" (gd, sgd), "momentum" or "adam"."""
        return {"gd": "plain", "sgd": "plain", "momentum": "momentum", "adam": "adam", "adamw": "adam"}[self.optimizer]

    @property
    def shape_key(self) -> tuple:
        """Configs with equal keys can share one batched computation."""
        return (self.n_tokens, self.n_test, self.n_slots, self.update_rule)

    def estimated_bytes(self) -> dict[str, float]:
        """Rough peak memory of simulating this config for one seed, by the field that drives it.

        ``"vocabulary"``: value table, its gathered columns and the W_V / Adam state (grow with
        n_tokens^2); ``"steps"``: the recorded metrics and the tidy table (grow with steps);
        ``"points"``: per-example tensors (grow with n_train * n_tokens) and minibatch indices.
        """
        T = self.n_tokens
        D = self.dim
        n = self.n_train + self.n_test
        vocab = _BYTES * (6 * T * T + (9 * D * D if self.update_rule == "adam" else T * T if self.update_rule == "momentum" else 0))
        steps = _BYTES * (self.steps + 1) * 160  # ~25 metrics recorded + ~50 table columns, copied twice
        pts = _BYTES * (8 * n * self.n_slots * T + 2 * self.steps * (self.batch_size or 0))
        return {"vocabulary": vocab, "steps": steps, "points": pts}

    # -- validation ----------------------------------------------------------
    def validate(self) -> None:
        check_at_least(self, n_C=0, n_CS=0, n_S=0, n_aug=0)
        if self.n_train < 1:
            raise ConfigError("field 'n_C': the finetuning set is empty (n_C + n_CS + n_S + n_aug = 0)")
        if self.n_test < 1:
            raise ConfigError(f"field 'n_test': need at least one test point, got {self.n_test}")
        for name in ("delta_C", "delta_M", "delta_S"):
            v = getattr(self, name)
            if not (0.0 < v < 1.0) or not math.isfinite(v):
                raise ConfigError(f"field '{name}': must lie in (0, 1), got {v}")
        if not self.delta_M > 2 * self.delta_C:
            raise ConfigError(
                f"field 'delta_M': the model assumes delta_M > 2*delta_C (C+S points), got delta_M={self.delta_M} "
                f"<= 2*delta_C={2 * self.delta_C}"
            )
        if self.K_S is not None and self.K_S < self.min_K_S:
            raise ConfigError(f"field 'K_S': {self.K_S} subject tokens cannot hold the {self.min_K_S} subjects of the data")
        if self.K_A is not None and self.K_A < self.min_K_A:
            raise ConfigError(f"field 'K_A': {self.K_A} answer tokens cannot hold the {self.min_K_A} answers/contexts of the data")
        if self.K_A is not None and self.K_A <= self.k_s:
            raise ConfigError(f"field 'K_A': the model assumes K_A > K_S, got K_A={self.K_A}, K_S={self.k_s}")
        if not self.delta_C > 3.0 / (self.k_a - 1):
            raise ConfigError(
                f"field 'delta_C': the model assumes delta_C > 3/(K_A-1) = {3.0 / (self.k_a - 1):.4g}, got {self.delta_C}"
            )
        for name in ("o_c", "o_r", "relation_logit"):
            v = getattr(self, name)
            if v is None:
                continue
            if not math.isfinite(v):
                raise ConfigError(f"field '{name}': must be finite, got {v}")
            if abs(v) > MAX_ABS_LOGIT:
                raise ConfigError(f"field '{name}': |{name}| = {abs(v):g} > {MAX_ABS_LOGIT:g}; float64 logits that large "
                                  f"resolve the model's O(1) differences only to {math.ulp(abs(v)):.3g}")
        if self.o_r > self.o_c:
            raise ConfigError(f"field 'o_r': the model assumes o_r <= o_c, got o_r={self.o_r} > o_c={self.o_c}")
        if self.d is not None and self.d < self.min_dim:
            raise ConfigError(
                f"field 'd': {self.d} is too small for the vocabulary; need d >= K_S + K_A + 3 = "
                f"{self.min_dim} (|T| + 2{', + 2 with overlap' if self.overlap else ''}) for linearly independent embeddings"
            )
        if not (self.init_noise >= 0.0 and math.isfinite(self.init_noise)):
            raise ConfigError(f"field 'init_noise': must be a finite number >= 0, got {self.init_noise}")
        if not (self.lr > 0.0 and math.isfinite(self.lr)):
            raise ConfigError(f"field 'lr': must be a finite number > 0, got {self.lr}")
        if not (self.lr_V_scale >= 0.0 and math.isfinite(self.lr_V_scale)):
            raise ConfigError(f"field 'lr_V_scale': must be a finite number >= 0, got {self.lr_V_scale}")
        check_at_least(self, steps=1)
        self._validate_training()
        self._validate_points()
        self._validate_size()

    def _validate_training(self) -> None:
        if self.optimizer == "sgd" and self.batch_size is None:
            raise ConfigError("field 'batch_size': optimizer 'sgd' samples minibatches; set batch_size")
        if self.optimizer == "gd" and self.batch_size is not None:
            raise ConfigError("field 'batch_size': optimizer 'gd' is full-batch; use optimizer 'sgd' for minibatches")
        if self.batch_size is not None and not 1 <= self.batch_size:
            raise ConfigError(f"field 'batch_size': must be >= 1 or null (full batch), got {self.batch_size}")
        for name, lo, hi in (("momentum", 0.0, 1.0), ("beta1", 0.0, 1.0), ("beta2", 0.0, 1.0)):
            v = getattr(self, name)
            if not (lo <= v < hi):
                raise ConfigError(f"field '{name}': must lie in [{lo:g}, {hi:g}), got {v}")
        if not (self.eps > 0.0 and math.isfinite(self.eps)):
            raise ConfigError(f"field 'eps': must be a finite number > 0, got {self.eps}")
        if not (self.weight_decay >= 0.0 and math.isfinite(self.weight_decay)):
            raise ConfigError(f"field 'weight_decay': must be a finite number >= 0, got {self.weight_decay}")
        if not 0 <= self.warmup_steps < self.steps:
            raise ConfigError(f"field 'warmup_steps': must lie in [0, steps={self.steps}), got {self.warmup_steps}")

    def _validate_points(self) -> None:
        check_at_least(self, n_distractors=0)
        if not (0.0 <= self.overlap < 1.0):
            raise ConfigError(f"field 'overlap': a cosine in [0, 1), got {self.overlap}")
        for name in ("delta_C_spread", "delta_M_spread"):
            v = getattr(self, name)
            if not (0.0 <= v < 1.0):
                raise ConfigError(f"field '{name}': a relative half-width in [0, 1), got {v}")
        dc_hi = self.delta_C * (1 + self.delta_C_spread)
        dc_lo = self.delta_C * (1 - self.delta_C_spread)
        dm_hi = self.delta_M * (1 + self.delta_M_spread)
        dm_lo = self.delta_M * (1 - self.delta_M_spread)
        if self.delta_C_spread and not (dc_hi < 1.0 and dc_lo > 3.0 / (self.k_a - 1)):
            raise ConfigError(f"field 'delta_C_spread': per-point delta_C in [{dc_lo:.4g}, {dc_hi:.4g}] must lie in "
                              f"(3/(K_A-1) = {3.0 / (self.k_a - 1):.4g}, 1)")
        if self.delta_M_spread and not dm_hi < 1.0:
            raise ConfigError(f"field 'delta_M_spread': per-point delta_M up to {dm_hi:.4g} must stay < 1")
        if (self.delta_C_spread or self.delta_M_spread) and self.n_CS and not dm_lo > 2 * dc_hi:
            raise ConfigError(f"field 'delta_M_spread': every C+S point needs delta_M > 2*delta_C; the spreads allow "
                              f"delta_M = {dm_lo:.4g} with delta_C = {dc_hi:.4g}")
        if not (0.0 <= self.filter_fraction < 1.0):
            raise ConfigError(f"field 'filter_fraction': must lie in [0, 1), got {self.filter_fraction}")
        if not (self.filter_noise >= 0.0 and math.isfinite(self.filter_noise)):
            raise ConfigError(f"field 'filter_noise': must be a finite number >= 0, got {self.filter_noise}")
        n_ctx = self.n_C + self.n_CS + self.n_aug
        if self.n_train - round(self.filter_fraction * n_ctx) < 1:
            raise ConfigError(f"field 'filter_fraction': {self.filter_fraction} drops every finetuning point")
        if self.batch_size is not None and self.batch_size > self.n_train - round(self.filter_fraction * n_ctx):
            raise ConfigError(f"field 'batch_size': {self.batch_size} exceeds the "
                              f"{self.n_train - round(self.filter_fraction * n_ctx)} finetuning points kept")

    def _validate_size(self) -> None:
        est = self.estimated_bytes()
        total, cap = sum(est.values()), max_memory_bytes()
        if total > cap:
            part = max(est, key=est.get)
            field = {"steps": "steps", "points": max(("n_C", "n_CS", "n_S", "n_aug", "n_test", "batch_size"),
                                                      key=lambda f: getattr(self, f) or 0)}.get(part)
            if field is None:  # the vocabulary: name the largest field that sets it
                given = {f: getattr(self, f) for f in ("K_A", "K_S", "d") if getattr(self, f) is not None}
                field = max(given, key=given.get) if given else "n_C"
            raise ConfigError(f"field '{field}': this configuration would need about {format_bytes(total)} of memory "
                              f"({part}: {format_bytes(est[part])}), above the {format_bytes(cap)} bound "
                              "(CPI_THEORY_MAX_GB)")
