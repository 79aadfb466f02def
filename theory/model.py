"""The one-layer attention model: embeddings, the pretrained start W(0), forward.

Two equivalent parametrisations are provided.

*Token coordinates* (used by the fast simulator, :mod:`theory.simulator`).
Stack the embeddings as the columns of Phi [d_model, n_tokens]. Because the
query is always the relation token r, only q = W_KQ phi(r) matters and every
gradient step moves q inside span(Phi); we therefore track the attention
logits ``attn = Phi^T W_KQ phi(r)`` [n_tokens] and the value table
``V = Phi^T W_V Phi`` [n_tokens, n_tokens] (``V[i, x] = v(i, x)``, the readout
of token i from the value of token x, W_H = Phi). The embeddings enter only
through the Gram matrix ``G = Phi^T Phi``: G[x, y] = (1 + [x = y]) / 2 within
the subject family or within the answer family, 1 for (r, r), 0 across
families. Since Phi has full column rank (d >= |T| + 2) the map is a bijection,
so this is the exact model, not an approximation.

*Explicit matrices* (:class:`ExplicitModel`, used by the tests and the naive
benchmark baseline): real embeddings in R^d built from an orthonormal basis,
W_KQ and W_V as d x d matrices, W_V = pinv(Phi)^T V pinv(Phi), trained with
torch autograd.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from theory.config import SimConfig
from theory.data import Dataset, build_dataset


def log_Z(cfg: SimConfig) -> float:
    """log Z with Z = (K_A - 1) e^{o_c} + e^{o_r} + K_S (Lemma 3)."""
    return float(np.logaddexp(math.log(cfg.k_a - 1) + cfg.o_c, np.logaddexp(cfg.o_r, math.log(cfg.k_s))))


def logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def initial_value_table(cfg: SimConfig, data: Dataset | None = None) -> np.ndarray:
    """The pretrained value table V0[i, x] = v_0(i, x) [n_tokens, n_tokens] (Assumption 6, Lemma 3).

    Every answer column x: v0(x, x) = logit(delta_C) + log Z (so softmax(v0(x))_x
    = delta_C), v0(c', x) = o_c for other answers, 0 for subjects, o_r for r.
    Subject columns: o_c on answers, 0 on subjects, o_r on r, except that a
    memorized subject s with answer a has v0(a, s) = logit(delta) + log Z.
    The r column: o_c on answers, 0 on subjects, o_r on r.
    """
    data = data if data is not None else build_dataset(cfg)
    T = data.is_subject.size
    lz = log_Z(cfg)
    V = np.zeros((T, T), dtype=np.float64)
    V[data.is_answer, :] = cfg.o_c
    V[data.relation, :] = cfg.o_r
    answers = np.flatnonzero(data.is_answer)
    V[answers, answers] = logit(cfg.delta_C) + lz
    for s in np.flatnonzero(data.memorized >= 0):
        V[data.memorized[s], s] = logit(float(data.memorized_delta[s])) + lz
    return V


def initial_attention_logits(cfg: SimConfig, data: Dataset | None = None) -> np.ndarray:
    """phi(y)^T W_KQ(0) phi(r) for every token y [n_tokens]: 0 for subjects and answers
    (equal pre-softmax scores, Assumption 5) and ``relation_logit`` for r (0 if masked)."""
    data = data if data is not None else build_dataset(cfg)
    a = np.zeros(data.is_subject.size, dtype=np.float64)
    a[data.relation] = cfg.relation_logit if cfg.relation_logit is not None else 0.0
    return a


def initial_state(cfg: SimConfig, seed: int, data: Dataset | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(attention logits [n_tokens], value table [n_tokens, n_tokens]) at t = 0 for ``seed``.

    With ``init_noise > 0`` seeded Gaussian noise of that std is added to the
    subject/answer attention logits and to every value-table entry.
    """
    data = data if data is not None else build_dataset(cfg)
    a = initial_attention_logits(cfg, data)
    V = initial_value_table(cfg, data)
    if cfg.init_noise > 0:
        rng = np.random.default_rng(seed)
        with np.errstate(over="ignore", invalid="ignore"):  # overflow -> inf -> reported as a non-finite loss
            noise_a = rng.standard_normal(a.shape) * cfg.init_noise
            noise_a[data.relation] = 0.0
            a = a + noise_a
            V = V + rng.standard_normal(V.shape) * cfg.init_noise
    return a, V


def gram_matrix(data: Dataset) -> np.ndarray:
    """G = Phi^T Phi [n_tokens, n_tokens] of the unit-norm embeddings (Assumptions 2-4)."""
    T = data.is_subject.size
    G = np.zeros((T, T), dtype=np.float64)
    for fam in (data.is_subject, data.is_answer):
        idx = np.flatnonzero(fam)
        G[np.ix_(idx, idx)] = 0.5
        G[idx, idx] = 1.0
    G[data.relation, data.relation] = 1.0
    return G


def embeddings(
    cfg: SimConfig, data: Dataset | None = None, seed: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(Phi [d_model, n_tokens], theta_S [d_model], theta_C [d_model]).

    phi(s_i) = (s~_i + theta_S)/sqrt2, phi(a_i) = (a~_i + theta_C)/sqrt2, phi(r) a unit vector,
    all built on an orthonormal basis of R^d: the identity basis, or a seeded
    random rotation of it when ``seed`` is given (the model is rotation invariant).
    """
    data = data if data is not None else build_dataset(cfg)
    T = data.is_subject.size
    d = cfg.dim
    K_S, K_A = cfg.k_s, cfg.k_a
    B = np.zeros((d, T), dtype=np.float64)
    th_S, th_C, r_dir = K_S + K_A, K_S + K_A + 1, K_S + K_A + 2
    for i in range(K_S):
        B[i, i] = B[th_S, i] = 1 / math.sqrt(2)
    for j in range(K_S, K_S + K_A):
        B[j, j] = B[th_C, j] = 1 / math.sqrt(2)
    B[r_dir, T - 1] = 1.0
    basis = np.eye(d)
    if seed is not None:
        q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, d)))
        basis = q
    return basis @ B, basis[:, th_S], basis[:, th_C]


class ExplicitModel:
    """The model with explicit d x d matrices, trained by torch autograd (float64).

    For tests and for the naive benchmark baseline only: the simulator uses
    the closed-form gradients of :mod:`theory.simulator`.
    """

    def __init__(self, cfg: SimConfig, seed: int = 0, rotate: bool = True):
        self.cfg = cfg
        self.data = build_dataset(cfg)
        a0, V0 = initial_state(cfg, seed, self.data)
        Phi, th_S, th_C = embeddings(cfg, self.data, seed=seed if rotate else None)
        self.Phi = torch.tensor(Phi)  # [d_model, n_tokens]
        self.theta_S = torch.tensor(th_S)
        self.theta_C = torch.tensor(th_C)
        self.phi_r = self.Phi[:, -1]
        P = torch.linalg.pinv(self.Phi)  # [n_tokens, d_model]
        self.W_V = (P.T @ torch.tensor(V0) @ P).requires_grad_(True)
        self.W_KQ = (P.T @ torch.tensor(a0)[:, None] @ self.phi_r[None, :]).requires_grad_(True)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits z [batch, n_tokens] and attention [batch, 3] of examples ``tokens`` [batch, 3]."""
        X = self.Phi[:, tokens]  # [d_model, batch, 3]
        scores = torch.einsum("dbk,de,e->bk", X, self.W_KQ, self.phi_r)
        scores = scores.masked_fill(~mask, float("-inf"))
        sigma = torch.softmax(scores, dim=-1)
        xbar = torch.einsum("dbk,bk->bd", X, sigma)
        z = torch.einsum("dt,de,be->bt", self.Phi, self.W_V, xbar)
        return z, sigma

    def loss(self) -> torch.Tensor:
        d = self.data
        z, _ = self.forward(torch.tensor(d.train_tokens), torch.tensor(d.train_mask))
        return torch.nn.functional.cross_entropy(z, torch.tensor(d.train_target))

    def step(self, lr: float, mode: str) -> dict[str, float]:
        """One full-batch GD step; returns the theta projections of -grad W_KQ phi(r) before it."""
        for p in (self.W_KQ, self.W_V):
            p.grad = None
        loss = self.loss()
        loss.backward()
        g = -self.W_KQ.grad @ self.phi_r
        out = {"loss": loss.item(), "grad_theta_C": (self.theta_C @ g).item(), "grad_theta_S": (self.theta_S @ g).item()}
        with torch.no_grad():
            if mode in ("qk", "full"):
                self.W_KQ -= lr * self.W_KQ.grad
            if mode in ("v", "full"):
                self.W_V -= lr * self.cfg.lr_V_scale * self.W_V.grad
        return out

    def test_metrics(self) -> dict[str, float]:
        """M_C and attention on the held-out counterfactual test points."""
        d = self.data
        with torch.no_grad():
            z, sigma = self.forward(torch.tensor(d.test_tokens), torch.tensor(d.test_mask))
            p = torch.softmax(z, -1)
            idx = torch.arange(len(d.test_context))
            pc, pa = p[idx, torch.tensor(d.test_context)], p[idx, torch.tensor(d.test_param)]
            return {"M_C": float((pc / (pc + pa)).mean()), "attn_context_test": float(sigma[:, 0].mean())}


def naive_simulate(cfg: SimConfig, seed: int = 0, steps: int | None = None) -> list[dict[str, float]]:
    """Baseline: one configuration at a time with autograd on explicit matrices.

    Returns one dict per step t = 0..steps (metrics measured before the update at t).
    """
    model = ExplicitModel(cfg, seed)
    rows = []
    n = cfg.steps if steps is None else steps
    for t in range(n + 1):
        row = {"step": t, **model.test_metrics()}
        row.update(model.step(cfg.lr, cfg.mode) if t < n else {})
        rows.append(row)
    return rows
