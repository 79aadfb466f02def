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
from theory.model import initial_state

log = logging.getLogger(__name__)

METRICS = (
    "M_C",
    "cf_acc",
    "param_acc",
    "attn_context_test",
    "attn_subject_test",
    "attn_relation_test",
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
SQRT2 = math.sqrt(2.0)


def _gram(x: torch.Tensor, fam_s: torch.Tensor, fam_a: torch.Tensor, is_r: torch.Tensor) -> torch.Tensor:
    """G @ x along the last axis. x: [batch, ..., n_tokens]; masks: [batch, n_tokens] (float)."""
    extra = x.dim() - 2
    shape = (fam_s.shape[0],) + (1,) * extra + (fam_s.shape[1],)
    fs, fa, fr = fam_s.view(shape), fam_a.view(shape), is_r.view(shape)
    sum_s = (x * fs).sum(-1, keepdim=True)
    sum_a = (x * fa).sum(-1, keepdim=True)
    return 0.5 * x * (fs + fa) + 0.5 * (sum_s * fs + sum_a * fa) + x * fr


class _Batch:
    """Static tensors of one group of equally-shaped (config, seed) pairs."""

    def __init__(self, items: list[tuple[SimConfig, int]]):
        cfgs = [c for c, _ in items]
        datas = [build_dataset(c) for c in cfgs]
        states = [initial_state(c, s, d) for (c, s), d in zip(items, datas)]
        t = lambda arrs, dt=torch.float64: torch.as_tensor(np.stack(arrs), dtype=dt)  # noqa: E731
        self.attn = t([s[0] for s in states])
        self.V = t([s[1] for s in states])
        # pad finetuning sets to a common size with weight-0 dummy points [., r, .] (attention 1 on r)
        n_max = max(d.train_tokens.shape[0] for d in datas)
        r = datas[0].relation

        def pad(arr: np.ndarray, fill) -> np.ndarray:
            extra = n_max - arr.shape[0]
            if extra == 0:
                return arr
            fill_arr = np.broadcast_to(np.asarray(fill, dtype=arr.dtype), (extra,) + arr.shape[1:])
            return np.concatenate([arr, fill_arr])

        self.tok = t([pad(d.train_tokens, (r, r, r)) for d in datas], torch.long)
        self.mask = t([pad(d.train_mask, (False, True, False)) for d in datas], torch.bool)
        self.tgt = t([pad(d.train_target, r) for d in datas], torch.long)
        cat = t([pad(d.train_cat, -1) for d in datas], torch.long)
        n_real = torch.tensor([d.train_tokens.shape[0] for d in datas], dtype=torch.float64)
        self.test_tok = t([d.test_tokens for d in datas], torch.long)
        self.test_mask = t([d.test_mask for d in datas], torch.bool)
        # sigma_r = 0 everywhere (relation_logit None): drop the always-masked relation slot (1/3 less work)
        if not bool(self.mask[..., 2].any() or self.test_mask[..., 2].any()):
            self.tok, self.mask = self.tok[..., :2].contiguous(), self.mask[..., :2].contiguous()
            self.test_tok, self.test_mask = self.test_tok[..., :2].contiguous(), self.test_mask[..., :2].contiguous()
        self.test_c = t([d.test_context for d in datas], torch.long)
        self.test_a = t([d.test_param for d in datas], torch.long)
        self.fam_s = t([d.is_subject for d in datas])
        self.fam_a = t([d.is_answer for d in datas])
        self.is_r = torch.zeros_like(self.fam_s)
        self.is_r[:, -1] = 1.0
        self.lr = torch.tensor([c.lr for c in cfgs], dtype=torch.float64)
        self.upd_qk = torch.tensor([c.mode in ("qk", "full") for c in cfgs])
        self.upd_v = torch.tensor([c.mode in ("v", "full") for c in cfgs])
        self.lr_v = torch.tensor([c.lr * c.lr_V_scale for c in cfgs], dtype=torch.float64)
        self.any_v = bool(self.upd_v.any())
        self.weight = (cat >= 0).double() / n_real[:, None]
        self.cat_w = {k: (cat == k).double() for k in (CAT_C, CAT_CS, CAT_S, CAT_AUG)}
        self.cat_n = {k: w.sum(-1) for k, w in self.cat_w.items()}

    def value_columns(self, tok: torch.Tensor) -> torch.Tensor:
        """v(., x) for every slot token x: [batch, n, slot, n_tokens]."""
        Vt = self.V.transpose(1, 2)  # [batch, x, i]: row x = value column of token x
        return torch.gather(Vt, 1, tok.flatten(1)[..., None].expand(-1, -1, Vt.shape[-1])).view(*tok.shape, -1)

    def forward(self, tok: torch.Tensor, mask: torch.Tensor, cols: torch.Tensor | None = None):
        """sigma [batch, n, slot], value columns [batch, n, slot, n_tokens], logits z [batch, n, n_tokens].

        slot = 3 (context, subject, relation), or 2 when the relation slot is masked for the whole batch.
        """
        scores = torch.gather(self.attn, 1, tok.flatten(1)).view(tok.shape)
        scores = scores.masked_fill(~mask, float("-inf"))
        sigma = torch.softmax(scores, dim=-1)
        if cols is None:
            cols = self.value_columns(tok)
        z = torch.einsum("bnk,bnki->bni", sigma, cols)
        return sigma, cols, z


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
    lr = b.lr[:, None]
    qk = b.upd_qk[:, None].double()
    vv = b.upd_v[:, None, None].double()
    ctx_slot_tok = b.tok[:, :, 0]
    wC, nC = b.cat_w[CAT_C], b.cat_n[CAT_C]
    wCS, nCS = b.cat_w[CAT_CS], b.cat_n[CAT_CS]

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
        rec["attn_relation_test"][:, t] = s_te[..., 2].mean(-1) if s_te.shape[-1] == 3 else 0.0

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

        # ---- gradient-descent update ---------------------------------------------------------
        new_attn = b.attn + lr * qk * _gram(g, b.fam_s, b.fam_a, b.is_r)
        if b.any_v:
            xbar = torch.zeros(B, n, T, dtype=torch.float64).scatter_add_(2, b.tok, sigma.masked_fill(~b.mask, 0.0))
            Gu = _gram(u, b.fam_s, b.fam_a, b.is_r)
            Gx = _gram(xbar, b.fam_s, b.fam_a, b.is_r)
            dV = torch.einsum("bn,bni,bnx->bix", b.weight, Gu, Gx)
            b.V = b.V + b.lr_v[:, None, None] * vv * dV
        b.attn = new_attn
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
    """Run every configuration for every seed; return the tidy long table.

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
    groups: dict[tuple, list[tuple[int, SimConfig, int]]] = {}
    for it in items:
        groups.setdefault(it[1].shape_key, []).append(it)

    frames = []
    for gi, (key, members) in enumerate(groups.items()):
        n_steps = steps if steps is not None else max(c.steps for _, c, _ in members)
        batch = _Batch([(c, s) for _, c, s in members])
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
            frame = pd.DataFrame({"config_id": ci, "seed": seed, "step": step_idx[: last + 1], **data})
            frames.append((ci, seed, frame))
    frames.sort(key=lambda f: (f[0], f[1]))
    table = pd.concat([f for _, _, f in frames], ignore_index=True)
    cfg_cols = pd.DataFrame([_config_row(c) for c in configs])
    cfg_cols["config_id"] = range(len(configs))
    table = cfg_cols.merge(table, on="config_id", how="right")
    return table


def _config_row(cfg: SimConfig) -> dict:
    row = cfg.to_dict()
    row["K_S"], row["K_A"], row["d"] = cfg.k_s, cfg.k_a, cfg.dim
    return row
