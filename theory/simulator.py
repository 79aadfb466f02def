"""Batched full-trajectory simulator with closed-form gradients.

One torch computation (float64, CPU) runs every (configuration, seed) pair of
a group at once. Configurations whose shapes differ (vocabulary size, number
of finetuning or test points) are grouped by :attr:`SimConfig.shape_key` and
each group is one batch; numeric parameters (deltas, o_c, lr, mode, ...) may
differ freely inside a batch.

State per batch element b, in token coordinates (see :mod:`theory.model`):
  attn [batch, n_tokens]            phi(y)^T W_KQ phi(r)
  V    [batch, n_tokens, n_tokens]  v(i, x) = phi(i)^T W_V phi(x)

Closed-form gradients for an example with slots X = [c, s, r], attention
sigma [3], logits z = V[:, X] sigma, u = e_target - softmax(z):
  w_k    = V[:, X_k]^T u                        (value of slot k seen by the loss)
  gamma_k = sigma_k (w_k - sigma . w)            (Lemma 1: -dl/d(attention logit))
  -grad_{W_KQ} l = sum_k gamma_k phi(X_k) phi(r)^T
      => attn += lr * G @ mean_examples(scatter(gamma))
  -grad_{W_V} l = W_H u xbar^T with xbar = sum_k sigma_k phi(X_k)
      => V += lr * mean_examples((G u)(G xbar_tok)^T)
where G = Phi^T Phi is the (structured) Gram matrix. The theta projections
theta_C^T[-grad L]phi(r) = sum over answer tokens of the scattered gamma / sqrt2
(theta_S: over subject tokens). Autograd is used only in the tests.

Optimizers (``SimConfig.optimizer``; configurations are grouped by their update rule):
  gd, sgd   attn += lr_t * (G g - wd attn)      (sgd: g from the step's seeded minibatch)
  momentum  buf = mu buf + (G g - wd attn); attn += lr_t * buf     (torch.optim.SGD)
  adam(w)   in the config's basis of R^d (``basis``: canonical or a seeded rotation, see
            :func:`theory.model.embeddings`): q = W_KQ phi(r) [batch, d_model] and W_V
            [batch, d_model, d_model] with -grad q = Phi g, -grad W_V = Phi (sum u xbar^T) Phi^T,
            torch.optim.Adam/AdamW's update, then attn = Phi^T q, V = Phi^T W_V Phi. In a rotated
            basis phi(r) is no axis and the gradient (Phi g) phi(r)^T reaches every entry of W_KQ, so
            the whole matrix W_KQ [batch, d_model, d_model] is the Adam parameter there.
gd, sgd and momentum are rotation invariant, so token coordinates are exact for
any basis; Adam's per-coordinate normalisation is not, so the basis is a
configuration field. The learning
rate at step t is lr * lr_factors[t] (:mod:`theory.optim`). The metrics
(losses, gradient projections) are always over the whole kept finetuning set.
"""

from __future__ import annotations

import logging
import math
from typing import Sequence

import numpy as np
import torch

from cpi.errors import CpiError
from cpi.progress import progress
from theory.config import SimConfig
from theory.data import CAT_AUG, CAT_C, CAT_CS, CAT_S, build_dataset
from theory.model import embeddings, initial_state
from theory.optim import filter_points, lr_factors, minibatch_schedule

log = logging.getLogger(__name__)

METRICS = (
    "M_C",
    "cf_acc",
    "param_acc",
    "attn_context_test",
    "attn_subject_test",
    "attn_relation_test",
    "attn_distractor_test",
    "attn_context_C",
    "attn_subject_C",
    "attn_context_CS",
    "attn_subject_CS",
    "grad_theta_C",
    "grad_theta_S",
    "loss",
    "loss_C",
    "loss_CS",
    "loss_S",
    "loss_aug",
    "m_C",
    "m_CS",
    "value_pred_C",
    "logit_gap_test",
)
#: per-run constants added to the table (filtering)
RUN_COLUMNS = ("n_kept", "n_dropped", "filter_precision", "filter_recall")
SQRT2 = math.sqrt(2.0)


def _gram(x: torch.Tensor, fam_s: torch.Tensor, fam_a: torch.Tensor, is_r: torch.Tensor, diag=0.5, off=0.5) -> torch.Tensor:
    """G @ x along the last axis. x: [batch, ..., n_tokens]; masks: [batch, n_tokens] (float).

    Within a family G = ``diag`` * I + ``off`` * 11^T (0.5, 0.5 for orthogonal identity parts;
    (1 - rho)/2, (1 + rho)/2 with overlap rho, given as [batch] tensors).
    """
    extra = x.dim() - 2
    shape = (fam_s.shape[0],) + (1,) * extra + (fam_s.shape[1],)
    fs, fa, fr = fam_s.view(shape), fam_a.view(shape), is_r.view(shape)
    if isinstance(diag, torch.Tensor):
        diag, off = diag.view((-1,) + (1,) * (extra + 1)), off.view((-1,) + (1,) * (extra + 1))
    sum_s = (x * fs).sum(-1, keepdim=True)
    sum_a = (x * fa).sum(-1, keepdim=True)
    return diag * x * (fs + fa) + off * (sum_s * fs + sum_a * fa) + x * fr


class _Batch:
    """Static tensors and optimizer state of one group of equally-shaped (config, seed) pairs."""

    def __init__(self, items: list[tuple[SimConfig, int]], steps: int):
        cfgs = [c for c, _ in items]
        datas = [build_dataset(c) for c in cfgs]
        states = [initial_state(c, s, d) for (c, s), d in zip(items, datas)]
        filters = [filter_points(c, d, st[1], s) for (c, s), d, st in zip(items, datas, states)]
        self.filters = filters
        t = lambda arrs, dt=torch.float64: torch.as_tensor(np.stack(arrs), dtype=dt)  # noqa: E731
        self.attn = t([s[0] for s in states])
        self.V = t([s[1] for s in states])
        # pad finetuning sets to a common size with weight-0 dummy points [., r, .] (attention 1 on r)
        n_max = max(d.train_tokens.shape[0] for d in datas)
        r = datas[0].relation
        n_slots = cfgs[0].n_slots

        def pad(arr: np.ndarray, fill) -> np.ndarray:
            extra = n_max - arr.shape[0]
            if extra == 0:
                return arr
            fill_arr = np.broadcast_to(np.asarray(fill, dtype=arr.dtype), (extra,) + arr.shape[1:])
            return np.concatenate([arr, fill_arr])

        self.tok = t([pad(d.train_tokens, (r,) * n_slots) for d in datas], torch.long)
        self.mask = t([pad(d.train_mask, (False, True) + (False,) * (n_slots - 2)) for d in datas], torch.bool)
        self.tgt = t([pad(d.train_target, r) for d in datas], torch.long)
        cat = t([pad(d.train_cat, -1) for d in datas], torch.long)
        keep = t([pad(f.keep, False) for f in filters], torch.bool) & (cat >= 0)
        n_kept = keep.double().sum(-1)
        self.test_tok = t([d.test_tokens for d in datas], torch.long)
        self.test_mask = t([d.test_mask for d in datas], torch.bool)
        # sigma_r = 0 everywhere (relation_logit None): drop the always-masked relation slot (less work)
        self.rel_slot: int | None = 2
        if not bool(self.mask[..., 2].any() or self.test_mask[..., 2].any()):
            slots = [i for i in range(n_slots) if i != 2]
            self.tok, self.mask = self.tok[..., slots].contiguous(), self.mask[..., slots].contiguous()
            self.test_tok, self.test_mask = self.test_tok[..., slots].contiguous(), self.test_mask[..., slots].contiguous()
            self.rel_slot = None
        self.n_distractors = cfgs[0].n_distractors
        self.test_c = t([d.test_context for d in datas], torch.long)
        self.test_a = t([d.test_param for d in datas], torch.long)
        self.fam_s = t([d.is_subject for d in datas])
        self.fam_a = t([d.is_answer for d in datas])
        self.is_r = torch.zeros_like(self.fam_s)
        self.is_r[:, -1] = 1.0
        overlap = torch.tensor([c.overlap for c in cfgs], dtype=torch.float64)
        self.g_diag, self.g_off = (0.5, 0.5) if not bool(overlap.any()) else ((1 - overlap) / 2, (1 + overlap) / 2)
        self.lr = torch.tensor([c.lr for c in cfgs], dtype=torch.float64)
        self.upd_qk = torch.tensor([c.mode in ("qk", "full") for c in cfgs])
        self.upd_v = torch.tensor([c.mode in ("v", "full") for c in cfgs])
        self.lr_v = torch.tensor([c.lr * c.lr_V_scale for c in cfgs], dtype=torch.float64)
        self.any_v = bool(self.upd_v.any())
        self.weight = keep.double() / n_kept[:, None]
        self.cat_w = {k: ((cat == k) & keep).double() for k in (CAT_C, CAT_CS, CAT_S, CAT_AUG)}
        self.cat_n = {k: w.sum(-1) for k, w in self.cat_w.items()}
        self.run_info = [
            dict(n_kept=int(f.keep.sum()), n_dropped=f.n_dropped, filter_precision=f.precision, filter_recall=f.recall)
            for f in filters
        ]
        self._init_optimizer(items, datas, states, keep, steps)

    def _init_optimizer(self, items, datas, states, keep, steps: int) -> None:
        cfgs = [c for c, _ in items]
        B, T = self.attn.shape
        f64 = dict(dtype=torch.float64)
        self.rule = cfgs[0].update_rule
        self.lr_fac = torch.as_tensor(np.stack([lr_factors(c, steps) for c in cfgs]), **f64)  # [batch, steps]
        self.constant_lr = bool((self.lr_fac == 1.0).all())
        self.wd = torch.tensor([c.weight_decay for c in cfgs], **f64)
        self.any_wd = bool(self.wd.any())
        # minibatches: [batch, steps, batch_size] indices and weights (full-batch elements: unused)
        self.has_mb = torch.tensor([c.batch_size is not None for c in cfgs])
        self.mb_idx = self.mb_wt = None
        if bool(self.has_mb.any()):
            bs = max(c.batch_size or 1 for c in cfgs)
            idx = np.zeros((B, steps, bs), dtype=np.int64)
            wt = np.zeros((B, steps, bs))
            for j, (c, s) in enumerate(items):
                if c.batch_size is not None:
                    i_, w_ = minibatch_schedule(np.flatnonzero(keep[j].numpy()), c.batch_size, steps, s)
                    idx[j, :, : c.batch_size], wt[j, :, : c.batch_size] = i_, w_
            self.mb_idx, self.mb_wt = torch.as_tensor(idx), torch.as_tensor(wt)
        if self.rule == "momentum":
            self.mu = torch.tensor([c.momentum for c in cfgs], **f64)
            self.buf_attn = torch.zeros_like(self.attn)
            self.buf_V = torch.zeros_like(self.V) if self.any_v else None
        if self.rule == "adam":
            D = max(c.dim for c in cfgs)
            # embeddings Phi [batch, d_model, n_tokens] in the config's basis (canonical, or rotated with
            # the run's seed); zero rows pad a smaller d: they never receive a gradient, so never move
            phis = [embeddings(c, d, seed=s if c.basis == "random" else None)[0] for (c, s), d in zip(items, datas)]
            phis = [np.pad(p, ((0, D - p.shape[0]), (0, 0))) for p in phis]
            self.Phi = t64 = torch.as_tensor(np.stack(phis), **f64)
            pinv = torch.linalg.pinv(t64)  # [batch, n_tokens, d_model]
            self.q = torch.einsum("btd,bt->bd", pinv, self.attn)  # W_KQ phi(r), min-norm as in ExplicitModel
            # canonical basis: phi(r) is an axis, so only W_KQ's column r moves and Adam acts on q alone;
            # a rotated basis spreads the gradient (Phi g) phi(r)^T over every entry: keep all of W_KQ
            # Without L2 decay on W_KQ the gradient history stays rank one, m_ij = m_i phi_r,j and
            # v_ij = v_i phi_r,j^2, so Adam's step of q = W_KQ phi(r) is a sum over j ("rank1", [batch, d_model]
            # state); with L2 decay (adam + weight_decay) the whole matrix is kept ("full").
            self.kq_mode = "q"
            if any(c.basis == "random" for c in cfgs):
                l2 = any(c.optimizer == "adam" and c.weight_decay > 0 for c in cfgs)
                self.kq_mode = "full" if l2 else "rank1"
                self.phi_r = t64[:, :, -1]  # [batch, d_model]
            if self.kq_mode == "full":
                self.q = torch.einsum("bd,be->bde", self.q, self.phi_r)  # W_KQ(0) = q0 phi(r)^T
            self.m_q, self.v_q = torch.zeros_like(self.q), torch.zeros_like(self.q)
            if self.any_v:
                self.W = pinv.transpose(1, 2) @ self.V @ pinv  # [batch, d_model, d_model]
                self.m_W, self.v_W = torch.zeros_like(self.W), torch.zeros_like(self.W)
            self.beta1 = torch.tensor([c.beta1 for c in cfgs], **f64)
            self.beta2 = torch.tensor([c.beta2 for c in cfgs], **f64)
            self.eps = torch.tensor([c.eps for c in cfgs], **f64)
            self.decoupled = torch.tensor([c.optimizer == "adamw" for c in cfgs])

    def gram(self, x: torch.Tensor) -> torch.Tensor:
        return _gram(x, self.fam_s, self.fam_a, self.is_r, self.g_diag, self.g_off)

    def value_columns(self, tok: torch.Tensor) -> torch.Tensor:
        """v(., x) for every slot token x: [batch, n, slot, n_tokens]."""
        Vt = self.V.transpose(1, 2)  # [batch, x, i]: row x = value column of token x
        return torch.gather(Vt, 1, tok.flatten(1)[..., None].expand(-1, -1, Vt.shape[-1])).view(*tok.shape, -1)

    def forward(self, tok: torch.Tensor, mask: torch.Tensor, cols: torch.Tensor | None = None):
        """sigma [batch, n, slot], value columns [batch, n, slot, n_tokens], logits z [batch, n, n_tokens].

        slot = context, subject, relation, distractors; the relation slot is left out when it is
        masked for the whole batch.
        """
        scores = torch.gather(self.attn, 1, tok.flatten(1)).view(tok.shape)
        scores = scores.masked_fill(~mask, float("-inf"))
        sigma = torch.softmax(scores, dim=-1)
        if cols is None:
            cols = self.value_columns(tok)
        z = torch.einsum("bnk,bnki->bni", sigma, cols)
        return sigma, cols, z

    def step_weight(self, t: int) -> torch.Tensor:
        """Weight of each finetuning point in update t [batch, n]: the minibatch's, or the static one."""
        if self.mb_idx is None:
            return self.weight
        w = torch.zeros_like(self.weight).scatter_add_(1, self.mb_idx[:, t], self.mb_wt[:, t])
        return torch.where(self.has_mb[:, None], w, self.weight)

    def update(self, t: int, g: torch.Tensor, dV_tok) -> None:
        """Apply update t. g: -dL/d(attention logits) scattered to tokens [batch, n_tokens];
        dV_tok: callable giving sum_n w_n u_n xbar_n^T [batch, n_tokens, n_tokens] (None = W_V frozen)."""
        lr = self.lr if self.constant_lr else self.lr * self.lr_fac[:, t]
        lr_v = self.lr_v if self.constant_lr else self.lr_v * self.lr_fac[:, t]
        qk = self.upd_qk[:, None].double()
        vv = self.upd_v[:, None, None].double()
        if self.rule == "adam":
            self._adam(t, g, dV_tok, lr, lr_v)
            return
        d_attn = self.gram(g)
        if self.any_wd:
            d_attn = d_attn - self.wd[:, None] * self.attn
        if self.rule == "momentum":
            self.buf_attn = self.mu[:, None] * self.buf_attn + d_attn
            d_attn = self.buf_attn
        new_attn = self.attn + lr[:, None] * qk * d_attn
        if self.any_v:
            dV = dV_tok()
            if self.any_wd:
                dV = dV - self.wd[:, None, None] * self.V
            if self.rule == "momentum":
                self.buf_V = self.mu[:, None, None] * self.buf_V + dV
                dV = self.buf_V
            self.V = self.V + lr_v[:, None, None] * vv * dV
        self.attn = new_attn

    def _adam_rank1(self, a, lr, bc1, bc2_sqrt):
        """Adam(W) on W_KQ whose gradients are all a(t) phi(r)^T, as the step of q = W_KQ phi(r).

        a: [batch, d_model]. Entry (i, j) has m_ij = m_i b_j, v_ij = v_i b_j^2 (b = phi(r)), so
        q_i moves by -(lr / bc1) m_i sum_j b_j^2 / (|b_j| sqrt(v_i) / sqrt(bc2) + eps). Decoupled decay
        scales every entry, hence q, by (1 - lr wd). Returns (q, m, v), all [batch, d_model].
        """
        b = self.phi_r
        q = torch.where(self.decoupled[:, None], self.q * (1 - (lr * self.wd)[:, None]), self.q)
        m = self.beta1[:, None] * self.m_q + (1 - self.beta1[:, None]) * a
        v = self.beta2[:, None] * self.v_q + (1 - self.beta2[:, None]) * a * a
        s = torch.sqrt(v) / bc2_sqrt[:, None]  # [batch, d_model]
        step = ((b * b)[:, None, :] / (b.abs()[:, None, :] * s[:, :, None] + self.eps[:, None, None])).sum(-1)
        return q - (lr / bc1)[:, None] * m * step, m, v

    def _adam(self, t, g, dV_tok, lr, lr_v) -> None:
        """torch.optim.Adam / AdamW on q = W_KQ phi(r) (or all of W_KQ) and W_V in the config's basis."""
        bc1 = 1 - self.beta1 ** (t + 1)
        bc2_sqrt = torch.sqrt(1 - self.beta2 ** (t + 1))

        def adam(p, grad, m, v, lr_, bshape):
            view = lambda x: x.view(bshape)  # noqa: E731
            wd = view(self.wd)
            grad = torch.where(view(self.decoupled), grad, grad + wd * p)
            p = torch.where(view(self.decoupled), p * (1 - view(lr_) * wd), p)
            m = view(self.beta1) * m + (1 - view(self.beta1)) * grad
            v = view(self.beta2) * v + (1 - view(self.beta2)) * grad * grad
            denom = torch.sqrt(v) / view(bc2_sqrt) + view(self.eps)
            return p - view(lr_ / bc1) * m / denom, m, v

        grad_q = -torch.einsum("bdt,bt->bd", self.Phi, g)
        shape = (-1, 1)
        if self.kq_mode == "rank1":
            q, m, v = self._adam_rank1(grad_q, lr, bc1, bc2_sqrt)
        else:
            if self.kq_mode == "full":  # the whole W_KQ [batch, d_model, d_model]
                grad_q, shape = torch.einsum("bd,be->bde", grad_q, self.phi_r), (-1, 1, 1)
            q, m, v = adam(self.q, grad_q, self.m_q, self.v_q, lr, shape)
        on = self.upd_qk.view(shape)
        self.q, self.m_q, self.v_q = torch.where(on, q, self.q), torch.where(on, m, self.m_q), torch.where(on, v, self.v_q)
        q_r = torch.einsum("bde,be->bd", self.q, self.phi_r) if self.kq_mode == "full" else self.q
        self.attn = torch.einsum("bdt,bd->bt", self.Phi, q_r)
        if self.any_v:
            grad_W = -(self.Phi @ dV_tok() @ self.Phi.transpose(1, 2))
            W, m, v = adam(self.W, grad_W, self.m_W, self.v_W, lr_v, (-1, 1, 1))
            on = self.upd_v[:, None, None]
            self.W, self.m_W, self.v_W = torch.where(on, W, self.W), torch.where(on, m, self.m_W), torch.where(on, v, self.v_W)
            self.V = self.Phi.transpose(1, 2) @ self.W @ self.Phi


def _cat_mean(x: torch.Tensor, w: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """Mean of x [batch, n] over the examples selected by w; NaN where the category is empty."""
    out = (x * w).sum(-1) / n.clamp(min=1)
    return torch.where(n > 0, out, torch.full_like(out, float("nan")))


def _run_batch(b: _Batch, steps: int, desc: str) -> dict[str, torch.Tensor]:
    """Advance one batch for ``steps`` steps; returns metric -> [batch, steps + 1]."""
    B, n = b.tok.shape[:2]
    T = b.attn.shape[1]
    rec = {m: torch.empty(B, steps + 1, dtype=torch.float64) for m in METRICS}
    ones_tgt = torch.ones(B, n, 1, dtype=torch.float64)
    ctx_slot_tok = b.tok[:, :, 0]
    wC, nC = b.cat_w[CAT_C], b.cat_n[CAT_C]
    wCS, nCS = b.cat_w[CAT_CS], b.cat_n[CAT_CS]
    dis = slice(2 if b.rel_slot is None else 3, None)

    # W_V frozen for the whole batch: the value columns never change, gather them once
    cached = not b.any_v
    cols_te_c = b.value_columns(b.test_tok) if cached else None
    cols_tr_c = b.value_columns(b.tok) if cached else None
    vpred_c = None
    for t in (progress(range(steps + 1), desc=desc, total=steps + 1) if desc else range(steps + 1)):
        # ---- held-out counterfactual test points -------------------------------------------
        s_te, _, z_te = b.forward(b.test_tok, b.test_mask, cols_te_c)
        logp_te = torch.log_softmax(z_te, -1)
        lpc = torch.gather(logp_te, 2, b.test_c[..., None])[..., 0]
        lpa = torch.gather(logp_te, 2, b.test_a[..., None])[..., 0]
        rec["M_C"][:, t] = torch.sigmoid(lpc - lpa).mean(-1)
        pred = z_te.argmax(-1)
        rec["cf_acc"][:, t] = (pred == b.test_c).double().mean(-1)
        rec["param_acc"][:, t] = (pred == b.test_a).double().mean(-1)
        rec["logit_gap_test"][:, t] = (lpc - lpa).mean(-1)
        rec["attn_context_test"][:, t] = s_te[..., 0].mean(-1)
        rec["attn_subject_test"][:, t] = s_te[..., 1].mean(-1)
        rec["attn_relation_test"][:, t] = s_te[..., b.rel_slot].mean(-1) if b.rel_slot is not None else 0.0
        rec["attn_distractor_test"][:, t] = s_te[..., dis].sum(-1).mean(-1) if b.n_distractors else 0.0

        # ---- finetuning points: forward + closed-form gradients ------------------------------
        sigma, cols, z = b.forward(b.tok, b.mask, cols_tr_c)
        p = torch.softmax(z, -1)
        losses = -torch.log(torch.gather(p, 2, b.tgt[..., None])[..., 0])  # -log softmax(z)_target [batch, n]
        if not bool(torch.isfinite(losses).all()):  # p_target underflowed: recompute exactly via logsumexp
            losses = (torch.logsumexp(z, -1, keepdim=True) - torch.gather(z, 2, b.tgt[..., None]))[..., 0]
        loss = (losses * b.weight).sum(-1)
        if not bool(torch.isfinite(loss).all()):
            bad = int((~torch.isfinite(loss)).nonzero()[0, 0])
            raise _NonFinite(bad, t)
        u = torch.neg(p).scatter_add_(2, b.tgt[..., None], ones_tgt)  # e_target - softmax(z)
        w = torch.einsum("bnki,bni->bnk", cols, u)
        gamma = sigma * (w - (sigma * w).sum(-1, keepdim=True))
        gamma = gamma.masked_fill(~b.mask, 0.0)
        g = torch.zeros(B, T, dtype=torch.float64).scatter_add_(1, b.tok.flatten(1), (gamma * b.weight[..., None]).flatten(1))
        rec["grad_theta_C"][:, t] = (g * b.fam_a).sum(-1) / SQRT2
        rec["grad_theta_S"][:, t] = (g * b.fam_s).sum(-1) / SQRT2
        rec["loss"][:, t] = loss
        rec["loss_C"][:, t] = _cat_mean(losses, wC, nC)
        rec["loss_CS"][:, t] = _cat_mean(losses, wCS, nCS)
        rec["loss_S"][:, t] = _cat_mean(losses, b.cat_w[CAT_S], b.cat_n[CAT_S])
        rec["loss_aug"][:, t] = _cat_mean(losses, b.cat_w[CAT_AUG], b.cat_n[CAT_AUG])
        m = w[..., 0] - w[..., 1]  # <v(c) - v(s), e_c - softmax(z)>
        rec["m_C"][:, t] = _cat_mean(m, wC, nC)
        rec["m_CS"][:, t] = _cat_mean(m, wCS, nCS)
        rec["attn_context_C"][:, t] = _cat_mean(sigma[..., 0], wC, nC)
        rec["attn_subject_C"][:, t] = _cat_mean(sigma[..., 1], wC, nC)
        rec["attn_context_CS"][:, t] = _cat_mean(sigma[..., 0], wCS, nCS)
        rec["attn_subject_CS"][:, t] = _cat_mean(sigma[..., 1], wCS, nCS)
        # Proposition 3: softmax(v(s))_c of C points (subject value predicting the context answer)
        if vpred_c is None:
            vs = cols[:, :, 1, :]  # value column of the subject [batch, n, n_tokens]
            vpred = _cat_mean(torch.gather(torch.softmax(vs, -1), 2, ctx_slot_tok[..., None])[..., 0], wC, nC)
            vpred_c = vpred if cached else None
        else:
            vpred = vpred_c
        rec["value_pred_C"][:, t] = vpred
        if t == steps:
            break

        # ---- the update -----------------------------------------------------------------------
        w_step = b.step_weight(t)
        if w_step is not b.weight:  # a minibatch: the update's gradient is the minibatch mean
            g = torch.zeros(B, T, dtype=torch.float64).scatter_add_(1, b.tok.flatten(1), (gamma * w_step[..., None]).flatten(1))

        def dV_tok(w_step=w_step, sigma=sigma, u=u):
            xbar = torch.zeros(B, n, T, dtype=torch.float64).scatter_add_(2, b.tok, sigma.masked_fill(~b.mask, 0.0))
            if b.rule == "adam":
                return torch.einsum("bn,bni,bnx->bix", w_step, u, xbar)
            return torch.einsum("bn,bni,bnx->bix", w_step, b.gram(u), b.gram(xbar))  # G (sum u xbar^T) G

        b.update(t, g, dV_tok if b.any_v else None)
    return rec


class _NonFinite(Exception):
    def __init__(self, index: int, step: int):
        self.index, self.step = index, step


def simulate(
    configs: SimConfig | Sequence[SimConfig],
    seeds: Sequence[int] = (0,),
    steps: int | None = None,
    show_progress: bool = True,
    num_threads: int | None = 1,
):
    """Run every configuration for every seed; return the tidy long table (nothing is written:
    :func:`theory.run.run_simulation` is the runner that also saves it, ``cpi theory simulate``).

    One row per (configuration, seed, step) with step = 0..steps (metrics are
    measured at W(step), i.e. before the update of that step): config columns,
    ``config_id`` (position in ``configs``), ``seed``, ``step`` and one column
    per metric in :data:`METRICS`. ``steps`` defaults to each group's largest
    ``config.steps``; rows past a config's own ``steps`` are dropped.

    ``num_threads``: torch intra-op threads during the run (restored after).
    The per-step tensors are small, so one thread is fastest, especially on a
    shared machine; ``None`` leaves torch's setting alone.

    Raises :class:`cpi.errors.CpiError` naming the configuration if a loss
    becomes non-finite (e.g. too large a learning rate).
    """
    old_threads = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        return _simulate(configs, seeds, steps, show_progress)
    finally:
        torch.set_num_threads(old_threads)


def _simulate(configs, seeds, steps, show_progress):
    import pandas as pd

    if isinstance(configs, SimConfig):
        configs = [configs]
    configs = list(configs)
    if not configs:
        raise CpiError("simulate: no configurations given")
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise CpiError("simulate: no seeds given")
    items = [(ci, c, s) for ci, c in enumerate(configs) for s in seeds]
    _check_memory(configs, len(seeds))
    groups: dict[tuple, list[tuple[int, SimConfig, int]]] = {}
    for it in items:
        groups.setdefault(it[1].shape_key, []).append(it)

    frames = []
    for gi, (key, members) in enumerate(groups.items()):
        n_steps = steps if steps is not None else max(c.steps for _, c, _ in members)
        batch = _Batch([(c, s) for _, c, s in members], n_steps)
        desc = f"theory simulate [{gi + 1}/{len(groups)}] x{len(members)}"
        try:
            rec = _run_batch(batch, n_steps, desc if show_progress else "")
        except _NonFinite as exc:
            ci, cfg, seed = members[exc.index]
            raise CpiError(
                f"config {ci}{' (' + cfg.label + ')' if cfg.label else ''}: non-finite loss at step {exc.step} "
                f"(seed {seed}, lr={cfg.lr}, init_noise={cfg.init_noise}, o_c={cfg.o_c}): float64 overflow; "
                "lower 'lr', 'init_noise' or 'o_c'"
            ) from None
        step_idx = np.arange(n_steps + 1)
        for j, (ci, cfg, seed) in enumerate(members):
            last = n_steps if steps is not None else cfg.steps
            data = {mname: rec[mname][j, : last + 1].numpy() for mname in METRICS}
            frame = pd.DataFrame({"config_id": ci, "seed": seed, "step": step_idx[: last + 1], **data,
                                  **batch.run_info[j]})
            frames.append((ci, seed, frame))
    frames.sort(key=lambda f: (f[0], f[1]))
    table = pd.concat([f for _, _, f in frames], ignore_index=True)
    cfg_cols = pd.DataFrame([_config_row(c) for c in configs])
    cfg_cols["config_id"] = range(len(configs))
    table = cfg_cols.merge(table, on="config_id", how="right")
    return table


def _check_memory(configs: list[SimConfig], n_seeds: int) -> None:
    """Refuse a call whose configurations x seeds together would exceed the memory bound."""
    from theory.config import format_bytes, max_memory_bytes

    total = n_seeds * sum(sum(c.estimated_bytes().values()) for c in configs)
    if total > max_memory_bytes():
        raise CpiError(f"simulate: {len(configs)} configurations x {n_seeds} seeds would need about {format_bytes(total)} "
                       f"of memory, above the {format_bytes(max_memory_bytes())} bound (CPI_THEORY_MAX_GB); "
                       "split the sweep or lower 'steps'")


def _config_row(cfg: SimConfig) -> dict:
    row = cfg.to_dict()
    row["K_S"], row["K_A"], row["d"] = cfg.k_s, cfg.k_a, cfg.dim
    return row
