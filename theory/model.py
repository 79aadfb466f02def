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
from theory.data import CAT_C, CAT_CS, Dataset, build_dataset, point_deltas


def log_Z(cfg: SimConfig) -> float:
    """log Z with Z = (K_A - 1) e^{o_c} + e^{o_r} + K_S (Lemma 3)."""
    return float(np.logaddexp(math.log(cfg.k_a - 1) + cfg.o_c, np.logaddexp(cfg.o_r, math.log(cfg.k_s))))


def logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def initial_value_table(cfg: SimConfig, data: Dataset | None = None, seed: int | None = None) -> np.ndarray:
    """The pretrained value table V0[i, x] = v_0(i, x) [n_tokens, n_tokens] (Assumption 6, Lemma 3).

    Every answer column x: v0(x, x) = logit(delta_C) + log Z (so softmax(v0(x))_x
    = delta_C), v0(c', x) = o_c for other answers, 0 for subjects, o_r for r.
    Subject columns: o_c on answers, 0 on subjects, o_r on r, except that a
    memorized subject s with answer a has v0(a, s) = logit(delta) + log Z.
    The r column: o_c on answers, 0 on subjects, o_r on r.
    With ``seed`` given and a ``delta_C_spread`` / ``delta_M_spread``, the C and
    C+S finetuning points use their own deltas (:func:`theory.data.point_deltas`).
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
    if seed is not None and (cfg.delta_C_spread or cfg.delta_M_spread):
        dC, dM = point_deltas(cfg, seed, data)
        ctx = np.isin(data.train_cat, (CAT_C, CAT_CS))
        c, s_ = data.train_target[ctx], data.train_subject[ctx]
        V[c, c] = np.log(dC[ctx] / (1 - dC[ctx])) + lz
        cs = data.train_cat == CAT_CS
        V[data.train_target[cs], data.train_subject[cs]] = np.log(dM[cs] / (1 - dM[cs])) + lz
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
    V = initial_value_table(cfg, data, seed)
    if cfg.init_noise > 0:
        rng = np.random.default_rng(seed)
        with np.errstate(over="ignore", invalid="ignore"):  # overflow -> inf -> reported as a non-finite loss
            noise_a = rng.standard_normal(a.shape) * cfg.init_noise
            noise_a[data.relation] = 0.0
            a = a + noise_a
            V = V + rng.standard_normal(V.shape) * cfg.init_noise
    return a, V


def gram_matrix(data: Dataset, overlap: float = 0.0) -> np.ndarray:
    """G = Phi^T Phi [n_tokens, n_tokens] of the unit-norm embeddings (Assumptions 2-4).

    Within a family G = (1 + overlap)/2 off the diagonal (identity parts with cosine ``overlap``)."""
    T = data.is_subject.size
    G = np.zeros((T, T), dtype=np.float64)
    for fam in (data.is_subject, data.is_answer):
        idx = np.flatnonzero(fam)
        G[np.ix_(idx, idx)] = 0.5 * (1.0 + overlap)
        G[idx, idx] = 1.0
    G[data.relation, data.relation] = 1.0
    return G


def embeddings(
    cfg: SimConfig, data: Dataset | None = None, seed: int | None = None, d: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(Phi [d_model, n_tokens], theta_S [d_model], theta_C [d_model]).

    phi(s_i) = (s~_i + theta_S)/sqrt2, phi(a_i) = (a~_i + theta_C)/sqrt2, phi(r) a unit vector,
    all built on an orthonormal basis of R^d (``d`` defaults to cfg.dim): the
    identity basis (the *canonical* basis, in which Adam normalises), or a seeded
    random rotation of it when ``seed`` is given (the model is rotation invariant
    under gd / sgd / momentum, not under Adam). With ``overlap`` = rho the identity
    parts are s~_i = sqrt(1 - rho) e_i + sqrt(rho) u_S (u_A for answers), so any two
    of one family have cosine rho; u_S, u_A are two more basis directions.
    """
    data = data if data is not None else build_dataset(cfg)
    T = data.is_subject.size
    d = cfg.dim if d is None else d
    K_S, K_A = cfg.k_s, cfg.k_a
    B = np.zeros((d, T), dtype=np.float64)
    th_S, th_C, r_dir = K_S + K_A, K_S + K_A + 1, K_S + K_A + 2
    own, shared = math.sqrt(1.0 - cfg.overlap), math.sqrt(cfg.overlap)
    for i in range(K_S):
        B[i, i], B[th_S, i] = own / math.sqrt(2), 1 / math.sqrt(2)
        if shared:
            B[r_dir + 1, i] = shared / math.sqrt(2)
    for j in range(K_S, K_S + K_A):
        B[j, j], B[th_C, j] = own / math.sqrt(2), 1 / math.sqrt(2)
        if shared:
            B[r_dir + 2, j] = shared / math.sqrt(2)
    B[r_dir, T - 1] = 1.0
    basis = np.eye(d)
    if seed is not None:
        q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, d)))
        basis = q
    return basis @ B, basis[:, th_S], basis[:, th_C]


class ExplicitModel:
    """The model with explicit d x d matrices, trained by torch autograd and torch.optim (float64).

    For tests and for the naive benchmark baseline only: the simulator uses
    the closed-form gradients of :mod:`theory.simulator`. ``rotate``: build the
    embeddings on a seeded random orthonormal basis or on the canonical one. Default:
    rotated for gd / sgd / momentum (rotation invariant, so this tests that too); for
    adam / adamw the config's ``basis``, as the simulator does.
    """

    def __init__(self, cfg: SimConfig, seed: int = 0, rotate: bool | None = None):
        from theory.optim import filter_points

        self.cfg = cfg
        self.data = build_dataset(cfg)
        a0, V0 = initial_state(cfg, seed, self.data)
        self.filter = filter_points(cfg, self.data, V0, seed)
        if rotate is None:
            rotate = cfg.update_rule != "adam" or cfg.basis == "random"
        Phi, th_S, th_C = embeddings(cfg, self.data, seed=seed if rotate else None)
        self.Phi = torch.tensor(Phi)  # [d_model, n_tokens]
        self.theta_S = torch.tensor(th_S)
        self.theta_C = torch.tensor(th_C)
        self.phi_r = self.Phi[:, -1]
        P = torch.linalg.pinv(self.Phi)  # [n_tokens, d_model]
        self.W_V = (P.T @ torch.tensor(V0) @ P).requires_grad_(True)
        self.W_KQ = (P.T @ torch.tensor(a0)[:, None] @ self.phi_r[None, :]).requires_grad_(True)
        self.kept = torch.tensor(np.flatnonzero(self.filter.keep))

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits z [batch, n_tokens] and attention [batch, slot] of examples ``tokens`` [batch, slot]."""
        X = self.Phi[:, tokens]  # [d_model, batch, slot]
        scores = torch.einsum("dbk,de,e->bk", X, self.W_KQ, self.phi_r)
        scores = scores.masked_fill(~mask, float("-inf"))
        sigma = torch.softmax(scores, dim=-1)
        xbar = torch.einsum("dbk,bk->bd", X, sigma)
        z = torch.einsum("dt,de,be->bt", self.Phi, self.W_V, xbar)
        return z, sigma

    def loss(self, points: torch.Tensor | None = None) -> torch.Tensor:
        """Mean cross-entropy over the finetuning ``points`` (indices; default: every kept point)."""
        d = self.data
        idx = self.kept if points is None else points
        z, _ = self.forward(torch.tensor(d.train_tokens)[idx], torch.tensor(d.train_mask)[idx])
        return torch.nn.functional.cross_entropy(z, torch.tensor(d.train_target)[idx])

    def make_optimizer(self):
        """torch.optim optimizer (W_KQ / W_V groups by mode) and a LambdaLR with :func:`theory.optim.lr_factors`."""
        from theory.optim import lr_factors

        cfg = self.cfg
        groups = []
        if cfg.mode in ("qk", "full"):
            groups.append({"params": [self.W_KQ], "lr": cfg.lr})
        if cfg.mode in ("v", "full"):
            groups.append({"params": [self.W_V], "lr": cfg.lr * cfg.lr_V_scale})
        wd = cfg.weight_decay
        if cfg.optimizer in ("gd", "sgd"):
            opt = torch.optim.SGD(groups, lr=cfg.lr, weight_decay=wd)
        elif cfg.optimizer == "momentum":
            opt = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=wd)
        else:
            kind = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
            opt = kind(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, weight_decay=wd)
        factors = lr_factors(cfg)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: float(factors[min(t, len(factors) - 1)]))
        return opt, sched

    def step(self, opt, sched, batch: torch.Tensor | None = None) -> dict[str, float]:
        """One optimizer step on ``batch`` (indices; None = every kept point).

        Returns the full-set loss and the theta projections of -grad_{W_KQ} L phi(r) before it.
        """
        for p in (self.W_KQ, self.W_V):
            p.grad = None
        loss = self.loss()
        loss.backward()
        g = -self.W_KQ.grad @ self.phi_r
        out = {"loss": loss.item(), "grad_theta_C": (self.theta_C @ g).item(), "grad_theta_S": (self.theta_S @ g).item()}
        if batch is not None:
            for p in (self.W_KQ, self.W_V):
                p.grad = None
            self.loss(batch).backward()
        if self.cfg.mode == "v":
            self.W_KQ.grad = None
        if self.cfg.mode == "qk":
            self.W_V.grad = None
        opt.step()
        sched.step()
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


def naive_simulate(cfg: SimConfig, seed: int = 0, steps: int | None = None, rotate: bool | None = None) -> list[dict[str, float]]:
    """Baseline: one configuration at a time with autograd and torch.optim on explicit matrices.

    Returns one dict per step t = 0..steps (metrics measured before the update at t).
    Minibatches (``batch_size``) follow :func:`theory.optim.minibatch_schedule`.
    """
    from theory.optim import minibatch_schedule

    model = ExplicitModel(cfg, seed, rotate=rotate)
    opt, sched = model.make_optimizer()
    n = cfg.steps if steps is None else steps
    batches = None
    if cfg.batch_size is not None:
        idx, wt = minibatch_schedule(model.kept.numpy(), cfg.batch_size, n, seed)
        batches = [torch.tensor(i[w > 0]) for i, w in zip(idx, wt)]
    rows = []
    for t in range(n + 1):
        row = {"step": t, **model.test_metrics()}
        row.update(model.step(opt, sched, None if batches is None else batches[t]) if t < n else {})
        rows.append(row)
    return rows
