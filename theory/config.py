"""The simulator's configuration: model, data and training parameters.

Every parameter of the one-layer attention model of Goyal et al. (ICLR 2025,
Section 5 / Appendix B) lives in one validated, frozen :class:`SimConfig`.
``validate`` enforces the paper's assumptions (Definitions 2-3, Assumption 6)
so that an impossible start W(0) is refused with a one-line error naming the
field instead of silently producing a different model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Optional

from cpi.config import Config
from cpi.errors import ConfigError

Mode = Literal["qk", "full", "v"]


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
    Training: full-batch gradient descent with step ``lr`` (``lr * lr_V_scale``
      for W_V) for ``steps`` steps; ``mode`` = "qk" (W_V frozen, Proposition 1), "full" (W_KQ and
      W_V) or "v" (W_V only).
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
        # contexts of C / C+S points, answers of S points, (context, answer) of aug / test points
        return self.n_C + self.n_CS + self.n_S + 2 * self.n_aug + 2 * self.n_test

    @property
    def k_s(self) -> int:
        return self.K_S if self.K_S is not None else self.min_K_S

    @property
    def k_a(self) -> int:
        if self.K_A is not None:
            return self.K_A
        # smallest vocabulary that holds the data, keeps K_A > K_S and delta_C > 3/(K_A-1)
        need = max(self.min_K_A, self.k_s + 1, math.floor(3.0 / self.delta_C + 1.0) + 1)
        return need

    @property
    def n_tokens(self) -> int:
        return self.k_s + self.k_a + 1

    @property
    def dim(self) -> int:
        return self.d if self.d is not None else self.k_s + self.k_a + 3

    @property
    def shape_key(self) -> tuple[int, int, int]:
        """Configs with equal keys can share one batched computation."""
        return (self.n_tokens, self.n_test)

    # -- validation ----------------------------------------------------------
    def validate(self) -> None:
        for name in ("n_C", "n_CS", "n_S", "n_aug"):
            if getattr(self, name) < 0:
                raise ConfigError(f"field '{name}': must be >= 0, got {getattr(self, name)}")
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
        for name in ("o_c", "o_r"):
            v = getattr(self, name)
            if not math.isfinite(v):
                raise ConfigError(f"field '{name}': must be finite, got {v}")
        if self.o_r > self.o_c:
            raise ConfigError(f"field 'o_r': the model assumes o_r <= o_c, got o_r={self.o_r} > o_c={self.o_c}")
        if self.d is not None and self.d < self.k_s + self.k_a + 3:
            raise ConfigError(
                f"field 'd': {self.d} is too small for the vocabulary; need d >= K_S + K_A + 3 = "
                f"{self.k_s + self.k_a + 3} (|T| + 2) for linearly independent embeddings"
            )
        if self.relation_logit is not None and not math.isfinite(self.relation_logit):
            raise ConfigError(f"field 'relation_logit': must be finite or null (sigma_r = 0), got {self.relation_logit}")
        if not (self.init_noise >= 0.0 and math.isfinite(self.init_noise)):
            raise ConfigError(f"field 'init_noise': must be a finite number >= 0, got {self.init_noise}")
        if not (self.lr > 0.0 and math.isfinite(self.lr)):
            raise ConfigError(f"field 'lr': must be a finite number > 0, got {self.lr}")
        if not (self.lr_V_scale >= 0.0 and math.isfinite(self.lr_V_scale)):
            raise ConfigError(f"field 'lr_V_scale': must be a finite number >= 0, got {self.lr_V_scale}")
        if self.steps < 1:
            raise ConfigError(f"field 'steps': must be >= 1, got {self.steps}")
