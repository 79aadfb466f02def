"""Symbolic (sympy) derivation of the paper's first-two-steps analysis.

Everything is derived from the model, not typed in:

* :func:`derive_lemma2` builds one example [c, s, r] on the orthonormal basis
  (c~, s~, theta_S, theta_C, r), the query column q = W_KQ phi(r) and a
  generic value table, differentiates the cross-entropy loss with sympy and
  projects -grad on theta_C / theta_S (Lemma 1/2).
* :func:`derive_value_entries` solves softmax(v0(x))_x = delta for the
  diagonal value entry (Lemma 3).
* :func:`derive_all` substitutes the pretrained value table of C and C+S
  points at sigma = (1/2, 1/2, 0) to get m_C and m_{C+S} (Lemma 4), sums the
  per-example updates over the Gram structure of the embeddings to get the
  first-step logit shifts A_1, A_2 (generalised to n_C != n_{C+S}), and the
  exact second-phase gradient (the quantity that the paper's Eq. 107 bounds).

:func:`numeric_functions` lambdifies these for numpy;
:func:`find_eta_star` finds the smallest step size for which the second phase
holds. The derived expressions are compared with the paper's formulas in
:func:`compare_with_paper` and against the simulator in the tests and in
``cpi theory prove``.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import sympy as sp

# ---------------------------------------------------------------- symbols
lC, lM = sp.symbols("l_C l_M", real=True)  # logit(delta_C), logit(delta_M)
oc, orr = sp.symbols("o_c o_r", real=True)
KA, KS = sp.symbols("K_A K_S", positive=True)
nC, nCS = sp.symbols("n_C n_CS", positive=True)
eta = sp.symbols("eta", positive=True)
Zs = sp.Symbol("Z", positive=True)  # (K_A - 1) e^{o_c} + e^{o_r} + K_S


def _softmax_terms(z: dict, mult: dict) -> sp.Expr:
    """sum_i mult_i exp(z_i): the softmax normaliser over vocabulary classes with multiplicities."""
    return sum(mult[k] * sp.exp(z[k]) for k in z)


@functools.lru_cache(maxsize=None)
def derive_lemma2() -> dict[str, sp.Expr]:
    """-theta^T grad_{W_KQ} l phi(r) for one example, by differentiation.

    Vocabulary classes seen by the readout: the target c, the K_A - 1 other
    answers ("o"), the K_S subjects ("u") and r; V[i][y] is the value entry
    v(i, y) for slot y in (c, s, r). Returns the derived projections, the
    Lemma 2 formulas written with w_y = <v(y), e_c - softmax(z)> and the
    attention weights sigma_y, and their differences (which must simplify to 0).
    """
    q = sp.symbols("q_ct q_st q_thS q_thC q_r", real=True)
    s2 = sp.sqrt(2)
    # embeddings on the basis (c~, s~, theta_S, theta_C, r)
    phi = {
        "c": sp.Matrix([1, 0, 0, 1, 0]) / s2,
        "s": sp.Matrix([0, 1, 1, 0, 0]) / s2,
        "r": sp.Matrix([0, 0, 0, 0, 1]),
    }
    theta_S = sp.Matrix([0, 0, 1, 0, 0])
    theta_C = sp.Matrix([0, 0, 0, 1, 0])
    qv = sp.Matrix(q)
    logits = {y: (phi[y].T * qv)[0] for y in "csr"}
    den = sum(sp.exp(logits[y]) for y in "csr")
    sigma = {y: sp.exp(logits[y]) / den for y in "csr"}
    classes = ("c", "o", "u", "r")
    mult = {"c": 1, "o": KA - 1, "u": KS, "r": 1}
    V = {i: {y: sp.Symbol(f"V_{i}{y}", real=True) for y in "csr"} for i in classes}
    z = {i: sum(sigma[y] * V[i][y] for y in "csr") for i in classes}
    Zsum = _softmax_terms(z, mult)
    loss = -(z["c"] - sp.log(Zsum))
    grad_q = sp.Matrix([sp.diff(loss, qi) for qi in q])  # = grad_{W_KQ} l phi(r) since |phi(r)| = 1
    proj_C = -(theta_C.T * grad_q)[0]
    proj_S = -(theta_S.T * grad_q)[0]
    # Lemma 2 written with w_y = <v(y), e_c - p>
    p = {i: sp.exp(z[i]) / Zsum for i in classes}
    w = {y: V["c"][y] - sum(mult[i] * p[i] * V[i][y] for i in classes) for y in "csr"}
    sc, ss, sr = sigma["c"], sigma["s"], sigma["r"]
    lemma_C = ((sc - sc**2) * w["c"] - ss * sc * w["s"] - sc * sr * w["r"]) / s2
    lemma_S = (-ss * sc * w["c"] + (ss - ss**2) * w["s"] - ss * sr * w["r"]) / s2
    paper_C = ((sc - sc**2) * w["c"] - ss * sc * w["s"] - ss * sr * w["r"]) / s2  # as printed (sigma_s sigma_r)
    return {
        "q": q,
        "V": V,
        "sigma": sigma,
        "w": w,
        "proj_C": proj_C,
        "proj_S": proj_S,
        "lemma_C": lemma_C,
        "lemma_S": lemma_S,
        "paper_lemma_C": paper_C,
    }


def check_lemma2(n_points: int = 5, seed: int = 0, tol: float = 1e-10) -> dict[str, float]:
    """Max |derived - formula| of the Lemma 2 projections at random points.

    Also returns the deviation of the paper's printed theta_C formula (which
    has sigma_s sigma_r where the derivation gives sigma_c sigma_r) and the
    sign of the sigma_r = 0 simplification.
    """
    L = derive_lemma2()
    syms = list(L["q"]) + [v for row in L["V"].values() for v in row.values()] + [KA, KS]
    f = {k: sp.lambdify(syms, L[k], "math") for k in ("proj_C", "proj_S", "lemma_C", "lemma_S", "paper_lemma_C")}
    sgm = sp.lambdify(syms, [L["sigma"][y] for y in "csr"] + [L["w"]["c"] - L["w"]["s"]], "math")
    rng = np.random.default_rng(seed)
    out = {"lemma_C": 0.0, "lemma_S": 0.0, "paper_lemma_C": 0.0, "sign_theta_C_minus_simpl": 0.0, "sign_theta_S_plus_simpl": 0.0}
    for _ in range(n_points):
        vals = list(rng.normal(size=5)) + list(rng.normal(size=12) * 2) + [float(rng.integers(5, 50)), float(rng.integers(2, 40))]
        pc, ps = f["proj_C"](*vals), f["proj_S"](*vals)
        out["lemma_C"] = max(out["lemma_C"], abs(pc - f["lemma_C"](*vals)))
        out["lemma_S"] = max(out["lemma_S"], abs(ps - f["lemma_S"](*vals)))
        out["paper_lemma_C"] = max(out["paper_lemma_C"], abs(pc - f["paper_lemma_C"](*vals)))
        # sigma_r = 0 simplification: theta_C -> +sigma_s sigma_c m / sqrt2, theta_S -> -sigma_s sigma_c m / sqrt2
        vals0 = list(vals)
        vals0[4] = -60.0  # q_r -> -inf: sigma_r ~ 1e-26
        s_c, s_s, s_r, m = sgm(*vals0)
        simpl = s_s * s_c * m / math.sqrt(2)
        out["sign_theta_C_minus_simpl"] = max(out["sign_theta_C_minus_simpl"], abs(f["proj_C"](*vals0) - simpl))
        out["sign_theta_S_plus_simpl"] = max(out["sign_theta_S_plus_simpl"], abs(f["proj_S"](*vals0) + simpl))
    return out


@functools.lru_cache(maxsize=None)
def derive_value_entries() -> dict[str, sp.Expr]:
    """Solve softmax(v0(x))_a = delta for v0(a, x) given the other entries (Lemma 3).

    delta is written through its logit l = log(delta/(1-delta)) (delta = 1/(1+e^-l)),
    which keeps sympy on the real branch; the other entries of the column sum
    to Z = (K_A - 1) e^{o_c} + e^{o_r} + K_S.
    """
    v = sp.Symbol("v", real=True)
    lg = sp.Symbol("l", real=True)
    sol = sp.solve(sp.Eq(sp.exp(v) / (sp.exp(v) + Zs), 1 / (1 + sp.exp(-lg))), v)
    assert len(sol) == 1
    return {"Z": Zs, "Z_def": (KA - 1) * sp.exp(oc) + sp.exp(orr) + KS, "v_diag": sp.expand_log(sol[0], force=True), "logit": lg}


def _subs_sigma(expr: sp.Expr, L: dict, x: sp.Symbol) -> sp.Expr:
    """Set the attention to sigma = (x, 1 - x, 0): context logit - subject logit = logit(x), exp(q_r) -> 0."""
    q_ct, q_st, q_thS, q_thC, q_r = L["q"]
    # context logit = (q_ct + q_thC)/sqrt2, subject logit = (q_st + q_thS)/sqrt2
    e = expr.subs({q_ct: sp.sqrt(2) * sp.log(x / (1 - x)), q_thC: 0, q_st: 0, q_thS: 0})
    e = e.subs(sp.exp(q_r), 0)
    assert not e.has(q_r)
    return e


@functools.lru_cache(maxsize=None)
def derive_all() -> dict[str, sp.Expr]:
    """m_C, m_{C+S}, A_1, A_2, the theta_C projections g_C(x), g_CS(x) and M_C(x).

    Uses sigma_r = 0 (the notes' start) and the pretrained value table, with
    lC = logit(delta_C), lM = logit(delta_M) and Z as symbols.
    """
    L = derive_lemma2()
    val = derive_value_entries()
    vdiag = lambda lg: val["v_diag"].subs(val["logit"], lg)  # noqa: E731
    Vs = L["V"]
    common = {
        Vs["o"]["c"]: oc, Vs["o"]["s"]: oc, Vs["o"]["r"]: oc,
        Vs["u"]["c"]: 0, Vs["u"]["s"]: 0, Vs["u"]["r"]: 0,
        Vs["r"]["c"]: orr, Vs["r"]["s"]: orr, Vs["r"]["r"]: orr,
        Vs["c"]["c"]: vdiag(lC), Vs["c"]["r"]: oc,
        KS: Zs - (KA - 1) * sp.exp(oc) - sp.exp(orr),
    }
    table_C = {**common, Vs["c"]["s"]: oc}  # subject value uniform over answers
    table_CS = {**common, Vs["c"]["s"]: vdiag(lM)}  # subject memorized with answer c
    x = sp.Symbol("x", positive=True)  # attention on the context (sigma_s = 1 - x, sigma_r = 0)
    half = sp.Rational(1, 2)
    out: dict[str, sp.Expr] = {"x": x}
    m_expr = L["w"]["c"] - L["w"]["s"]
    for name, table in (("C", table_C), ("CS", table_CS)):
        out[f"m_{name}_of_sigma"] = sp.simplify(_subs_sigma(m_expr.subs(table), L, x))
        out[f"m_{name}"] = sp.simplify(out[f"m_{name}_of_sigma"].subs(x, half))
        out[f"g_{name}_of_sigma"] = sp.simplify(_subs_sigma(L["proj_C"].subs(table), L, x))
        out[f"g_{name}_S_of_sigma"] = sp.simplify(_subs_sigma(L["proj_S"].subs(table), L, x))
    # first-step shift of each training point's context logit: sum -grad_q l_j over the Gram structure,
    # -grad_q l_j = gamma_c phi(c_j) + gamma_s phi(s_j), gamma_c = -gamma_s = m_j / 4 at sigma = (1/2, 1/2, 0)
    # (from the derived g: gamma_c = sqrt2 * g), <phi(c_i), phi(c_j)> = (1 + [i=j])/2, <phi(c_i), phi(s_j)> = 0.
    # the derived projection factorises as g(x) = x (1 - x) m(x) / sqrt2 (checked here, symbolically)
    for name in ("C", "CS"):
        resid = sp.simplify(out[f"g_{name}_of_sigma"] - x * (1 - x) * out[f"m_{name}_of_sigma"] / sp.sqrt(2))
        out[f"g_{name}_factorisation_residual"] = resid
    mC_, mCS_ = sp.symbols("m_C m_CS", real=True)
    gamma_C, gamma_CS = mC_ / 4, mCS_ / 4  # sqrt2 * g(1/2)
    n = nC + nCS
    shift_C = eta / n * (gamma_C * (nC + 1) / 2 + gamma_CS * nCS / 2)
    shift_CS = eta / n * (gamma_C * nC / 2 + gamma_CS * (nCS + 1) / 2)
    out["A_1_in_m"] = sp.collect(sp.expand(16 * shift_C / eta), [mC_, mCS_], sp.factor)
    out["A_2_in_m"] = sp.collect(sp.expand(16 * shift_CS / eta), [mC_, mCS_], sp.factor)
    out["A_1"] = out["A_1_in_m"].subs({mC_: out["m_C"], mCS_: out["m_CS"]})
    out["A_2"] = out["A_2_in_m"].subs({mC_: out["m_C"], mCS_: out["m_CS"]})
    out["m_symbols"] = (mC_, mCS_)
    # theta_C projection of -grad L(W0): mean over the finetuning set
    out["G0"] = (nC * out["g_C_of_sigma"].subs(x, half) + nCS * out["g_CS_of_sigma"].subs(x, half)) / n
    # held-out counterfactual point (memorized subject with answer a, context c) at context attention x:
    # z_c - z_a from the same value table
    z_c = x * vdiag(lC) + (1 - x) * oc  # sigma_c v0(c, c) + sigma_s v0(c, s)
    z_a = x * oc + (1 - x) * vdiag(lM)  # sigma_c v0(a, c) + sigma_s v0(a, s)
    gap = z_c - z_a
    out["M_C_of_sigma"] = 1 / (1 + sp.exp(-sp.simplify(gap)))
    out["M_C0"] = sp.simplify(out["M_C_of_sigma"].subs(x, half))
    return out


def paper_formulas() -> dict[str, sp.Expr]:
    """The notes'/paper's formulas, typed in, for comparison with the derivation."""
    Z = Zs
    lam_C = 1 / (1 + sp.exp(lC / 2 + sp.log(Z) / 2 + oc / 2) / Z)  # Eq. 45
    lam_CS = 1 / (1 + sp.exp(lC / 2 + lM / 2 + sp.log(Z)) / Z)  # Eq. 46
    n = nC + nCS
    m_C = lam_C * (lC + sp.log(Z) - oc)  # Lemma 4
    m_CS = lam_CS * (lC - lM)
    return {
        "m_C": m_C,
        "m_CS": m_CS,
        "A_1": (n + 2) / n * m_C + m_CS,  # Eq. 92, stated for n_C = n_CS = n/2
        "A_2": m_C + (n + 2) / n * m_CS,  # Eq. 93
        "G0": (m_C + m_CS) / (8 * sp.sqrt(2)),  # Eq. 79, n_C = n_CS
    }


PARAMS = ("delta_C", "delta_M", "o_c", "o_r", "K_A", "K_S", "n_C", "n_CS")


def _to_symbols(args: tuple) -> dict:
    d_C, d_M, o_c, o_r, K_A, K_S, n_C, n_CS = args
    Z = (K_A - 1) * np.exp(o_c) + np.exp(o_r) + K_S
    return {lC: np.log(d_C / (1 - d_C)), lM: np.log(d_M / (1 - d_M)), oc: o_c, orr: o_r, KA: K_A, Zs: Z, nC: n_C, nCS: n_CS}


_SYMS = (lC, lM, oc, orr, KA, Zs, nC, nCS)


class NumericTheory:
    """numpy functions of args = (delta_C, delta_M, o_c, o_r, K_A, K_S, n_C, n_CS) [and eta].

    Built from the derived expressions; G1, M_C(1), M_C(2) are compositions of
    derived pieces (sigma after one step from A_1/A_2, then g(x) and M_C(x)).
    """

    def __init__(self) -> None:
        D = derive_all()
        x = D["x"]
        lam = lambda e, extra=(): sp.lambdify(_SYMS + tuple(extra), e, "numpy")  # noqa: E731
        self._f = {k: lam(D[k]) for k in ("m_C", "m_CS", "A_1", "A_2", "G0", "M_C0")}
        self._fx = {k: lam(D[k], (x,)) for k in ("g_C_of_sigma", "g_CS_of_sigma", "m_C_of_sigma", "m_CS_of_sigma", "M_C_of_sigma")}

    def _a(self, args):
        s = _to_symbols(args)
        return [s[k] for k in _SYMS]

    def m_C(self, *args):
        return self._f["m_C"](*self._a(args))

    def m_CS(self, *args):
        return self._f["m_CS"](*self._a(args))

    def A_1(self, *args):
        return self._f["A_1"](*self._a(args))

    def A_2(self, *args):
        return self._f["A_2"](*self._a(args))

    def G0(self, *args):
        return self._f["G0"](*self._a(args))

    def M_C0(self, *args):
        return self._f["M_C0"](*self._a(args))

    def sigma1(self, *args_eta):
        """Context attention of C and C+S training points after one step of size eta."""
        *args, e = args_eta
        a = self._a(args)
        return 1 / (1 + np.exp(-e * self._f["A_1"](*a) / 8)), 1 / (1 + np.exp(-e * self._f["A_2"](*a) / 8))

    def G1(self, *args_eta):
        """theta_C^T[-grad L(W(1))]phi(r): < 0 is the second phase of Proposition 1."""
        *args, e = args_eta
        a = self._a(args)
        s1C, s1CS = self.sigma1(*args, e)
        n_C, n_CS = args[6], args[7]
        return (n_C * self._fx["g_C_of_sigma"](*a, s1C) + n_CS * self._fx["g_CS_of_sigma"](*a, s1CS)) / (n_C + n_CS)

    def sigma_test(self, *args_eta, t: int):
        """Context attention of a held-out test point at step t in {0, 1, 2} (sigma_r = 0).

        Its logit gap moves by eta*(G_C - G_S)/sqrt2 = sqrt2*eta*G_C per step.
        """
        *args, e = args_eta
        gap = 0.0
        if t >= 1:
            gap = gap + np.sqrt(2) * e * self.G0(*args)
        if t >= 2:
            gap = gap + np.sqrt(2) * e * self.G1(*args, e)
        return 1 / (1 + np.exp(-gap))

    def M_C(self, *args_eta, t: int):
        *args, e = args_eta
        return self._fx["M_C_of_sigma"](*self._a(args), self.sigma_test(*args, e, t=t))

    def eq107_holds(self, *args_eta):
        """The paper's sufficient condition (Eq. 107) for the second phase, evaluated as printed."""
        *args, e = args_eta
        d_C, d_M, K_A = args[0], args[1], args[4]
        A1, A2 = self.A_1(*args), self.A_2(*args)
        lhs = np.exp(e * A2 / 8) / (1 + np.exp(e * A2 / 8)) ** 2 * (1 + np.exp(e * A1 / 8)) ** 2 / np.exp(e * A1 / 8)
        l_C, l_M = np.log(d_C / (1 - d_C)), np.log(d_M / (1 - d_M))
        rhs = (1 - 1 / K_A) / (1 - d_M) * (l_C + np.log(K_A)) / (l_M - l_C)
        return lhs >= rhs

    @staticmethod
    def eq103_bound_valid(*args):
        """The paper's Eq. 103 bounds log Z - o_c by log K_A: valid iff K_S + e^{o_r} <= e^{o_c}."""
        d_C, d_M, o_c, o_r, K_A, K_S = args[:6]
        Z = (K_A - 1) * np.exp(o_c) + np.exp(o_r) + K_S
        return np.log(Z) - o_c <= np.log(K_A)


@functools.lru_cache(maxsize=None)
def numeric_functions() -> NumericTheory:
    """Lambdify the derived expressions (numpy, vectorised over any argument)."""
    return NumericTheory()


def theory_args(cfg) -> tuple:
    """The numeric arguments of :class:`NumericTheory` for a :class:`theory.SimConfig`."""
    return (cfg.delta_C, cfg.delta_M, cfg.o_c, cfg.o_r, float(cfg.k_a), float(cfg.k_s), float(cfg.n_C), float(cfg.n_CS))


def find_eta_star(args: tuple, eta_max: float = 1e4, n_grid: int = 4000) -> float:
    """The smallest eta > 0 with theta_C^T[-grad L(W(1))]phi(r) < 0 (second phase), or NaN.

    Scans a log grid on [1e-3, eta_max] for the first sign change of the
    derived G1(eta) and refines it by bisection (G1(eta) -> G0 > 0 as eta -> 0).
    """
    N = numeric_functions()
    grid = np.logspace(-3, math.log10(eta_max), n_grid)
    with np.errstate(over="ignore", invalid="ignore"):
        g = np.asarray(N.G1(*args, grid), dtype=float)
    neg = np.flatnonzero(g < 0)
    if neg.size == 0:
        return float("nan")
    i = int(neg[0])
    if i == 0:
        return float(grid[0])
    lo, hi = float(grid[i - 1]), float(grid[i])
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if N.G1(*args, mid) < 0:
            hi = mid
        else:
            lo = mid
        if hi - lo <= 1e-13 * hi:
            break
    return hi


def compare_with_paper(args: tuple) -> dict[str, float]:
    """derived - paper for m_C, m_CS, G0 (and A_1, A_2 when n_C = n_CS) at numeric ``args``."""
    D = derive_all()
    P = paper_formulas()
    subs = _to_symbols(args)
    keys = ["m_C", "m_CS"] + (["G0", "A_1", "A_2"] if args[6] == args[7] else [])
    return {k: float(sp.N((D[k] - P[k]).subs(subs))) for k in keys}


def describe() -> str:
    """Human-readable derived expressions (for ``cpi theory prove``); l_C, l_M = logit(delta_C), logit(delta_M)."""
    D = derive_all()
    val = derive_value_entries()
    lines = [
        "Notation: l_C = log(delta_C/(1-delta_C)), l_M = log(delta_M/(1-delta_M)), Z = (K_A-1)e^{o_c} + e^{o_r} + K_S,",
        "          x = attention on the context (sigma_s = 1 - x, sigma_r = 0), w_y = <v(y), e_c - softmax(z)>.",
        "Lemma 3 (solved from softmax(v0(x))_a = 1/(1+e^-l)):  v0(a, x) = " + sp.sstr(val["v_diag"]),
        "Lemma 2 (differentiated): theta_C^T[-grad l]phi(r) = ((sigma_c - sigma_c^2) w_c - sigma_s sigma_c w_s - sigma_c sigma_r w_r)/sqrt2",
        "                          theta_S^T[-grad l]phi(r) = (-sigma_s sigma_c w_c + (sigma_s - sigma_s^2) w_s - sigma_s sigma_r w_r)/sqrt2",
        "  sigma_r = 0:            theta_C -> +sigma_c sigma_s m/sqrt2,  theta_S -> -sigma_c sigma_s m/sqrt2",
        "m_C(x)  = " + sp.sstr(D["m_C_of_sigma"]),
        "m_CS(x) = " + sp.sstr(D["m_CS_of_sigma"]),
        "m_C  (x = 1/2) = " + sp.sstr(D["m_C"]),
        "m_CS (x = 1/2) = " + sp.sstr(D["m_CS"]),
        "A_1 = " + sp.sstr(D["A_1_in_m"]) + "   (context-logit shift of C points = eta*A_1/16)",
        "A_2 = " + sp.sstr(D["A_2_in_m"]) + "   (C+S points)",
        "G0 = theta_C^T[-grad L(W0)]phi(r) = (n_C m_C + n_CS m_CS)/(8 sqrt2 (n_C + n_CS))",
        "g_C(x) = theta_C-projection of one C point = " + sp.sstr(sp.factor(D["g_C_of_sigma"])),
        "sigma after one step: C points 1/(1+exp(-eta A_1/8)), C+S points 1/(1+exp(-eta A_2/8))",
        "G1(eta) = (n_C g_C(sigma1_C) + n_CS g_CS(sigma1_CS))/(n_C + n_CS)   second phase <=> G1(eta) < 0 (exact; Eq. 107 is a bound)",
        "M_C(x) on a held-out counterfactual point = " + sp.sstr(D["M_C_of_sigma"]),
        "M_C(0) = " + sp.sstr(D["M_C0"]),
        "Theorem 1: test logit gap moves by sqrt2*eta*G_t per step, so M_C(1) > M_C(0) <=> G0 > 0 and M_C(2) < M_C(1) <=> G1 < 0.",
    ]
    return "\n".join(lines)
