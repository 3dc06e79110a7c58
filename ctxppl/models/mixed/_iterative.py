r"""Crossed random effects without any dense matrix: conjugate gradients and stochastic
log-determinants for the Schur complement of the blocked layout (scalar terms).

The layout is the blocked one of :mod:`~ctxppl.models.mixed._schur` (largest grouping factor
first, block-diagonal), but the Schur complement over the other factors' :math:`R` columns,

.. math::

    S = D\,(C - W K W^T)\,D + I,\qquad C = Z_2^T W Z_2,\ W = Z_2^T W Z_1,\
    K = \theta_1^2\,\mathrm{diag}(1 / (1 + \theta_1^2 n_g)),\ D = \mathrm{diag}(\theta_{k(r)}),

is never formed: products with it take the sparse :math:`C` and :math:`W` (the issue's
three-factor simulation, 20,000 x 2,000 x 200 levels: :math:`R` = 2,200, 0.7 M nonzeros
instead of 4.8 M dense entries, memory linear in the data). With the Jacobi preconditioner
:math:`P = \mathrm{diag}(S)` (exact, from :math:`C`'s diagonal and the squares of
:math:`W`), :math:`\tilde S = P^{-1/2} S P^{-1/2}` is well conditioned for crossed designs
(on the simulation: about 9 CG iterations for the probes to :math:`10^{-5}` and 13 for
the fixed-effect solves to :math:`10^{-10}`).

* Solves (the fixed effects, residual, conditional modes): block CG to :math:`10^{-10}`:
  exact to rounding.
* :math:`\log|S| = \sum_r \log P_r + \operatorname{tr} \log\tilde S`, the trace by
  stochastic Lanczos quadrature (Ubaru, Chen & Saad 2017) on ``m`` Rademacher probes run in
  the same block CG (the Lanczos tridiagonal comes from CG's coefficients), of
  :math:`f(\lambda) = \log\lambda - \lambda + 1` (:math:`\operatorname{tr}(\tilde S - I) = 0`
  exactly, a control variate).
* The gradient's traces, :math:`\operatorname{tr}(E_k B D S^{-1})` per term and
  :math:`\operatorname{tr}(S^{-1} D W K_2 W^T D)` (:math:`K_2 = \mathrm{diag}(1/A_g^2)`)
  for the first factor, by Hutchinson's estimator on the same probes.

* Conditional variances (the diagonal of :math:`S^{-1}`): exact by CG on unit vectors for
  terms of at most :data:`EXACT_CONDVAR` levels (once, at the optimum); for larger terms and
  the first factor, the Jacobi diagonal rescaled per term by the Hutchinson estimate of the
  term's trace (``condvar_rel_se``: the scale's relative MC error; within a term the exact
  ratio to the Jacobi diagonal varies by a few percent, see docs/mixed.md).

So the REML/ML criterion and its gradient are *estimates* (unbiased up to the quadrature
error); the probes are drawn once per fit (common random numbers), so the optimiser sees a
smooth deterministic surface. Their Monte Carlo standard errors come with every
evaluation; ``tests/mixed/test_iterative.py`` compares the estimates and the fitted
parameters with the exact (dense Schur) engine on designs where both run.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from scipy import sparse
from scipy.linalg import eigh_tridiagonal

from ctxppl.models.mixed._schur import profile_gradient_weights, profiled_deviance

__all__ = ["IterStats", "iterative_stats", "IterativeHost", "fit_iterative", "PROBES"]

PROBES = 64  # Rademacher probes per evaluation (see docs/mixed.md for the accuracy)
EXACT_CONDVAR = 256  # terms with at most this many levels get exact conditional variances


class IterStats(NamedTuple):
    """Sufficient statistics of the iterative layout (working scale, float64)."""

    n1: Any  # (G1,) diagonal of Z1' W Z1 (scalar first term)
    Zy1: Any  # (G1, p+1) Z1' W [X, y]
    C: Any  # (R, R) sparse Z2' W Z2
    W: Any  # (R, G1) sparse Z2' W Z1
    Zy2: Any  # (R, p+1) Z2' W [X, y]
    XytXy: Any  # (p+1, p+1)
    n: float


def iterative_stats(blocks: list[tuple[np.ndarray, np.ndarray, int]], first: tuple[int, ...],
                    X: np.ndarray, y: np.ndarray, w: np.ndarray | None) -> IterStats:
    """Host statistics; ``blocks``: ``(Z (n, 1), codes (n,), G)`` per (scalar) block."""
    n = y.shape[0]
    ww = np.ones(n) if w is None else w
    Xy = np.column_stack([X, y])
    i1 = first[0]
    z1, g1, G1 = blocks[i1][0][:, 0], blocks[i1][1], blocks[i1][2]
    Z1 = sparse.csr_matrix((z1, (np.arange(n), g1)), shape=(n, G1))
    cols, vals, off = [], [], 0
    for i, (Z, codes, G) in enumerate(blocks):
        if i != i1:
            cols.append(off + codes)
            vals.append(Z[:, 0])
            off += G
    R = off
    m = len(cols)
    Z2 = sparse.csr_matrix((np.stack(vals, 1).reshape(-1),
                            (np.repeat(np.arange(n), m), np.stack(cols, 1).reshape(-1))),
                           shape=(n, R))
    Z2w = sparse.diags(ww) @ Z2
    C = (Z2w.T @ Z2).tocsr()
    W = (Z2w.T @ Z1).tocsr()
    Xyw = Xy * ww[:, None]
    return IterStats(np.bincount(g1, ww * z1 * z1, G1), np.asarray(Z1.T @ Xyw), C, W,
                     np.asarray(Z2.T @ Xyw), Xy.T @ Xyw, float(n))


def _slq(alpha: np.ndarray, beta: np.ndarray, steps: np.ndarray) -> np.ndarray:
    r"""Per probe :math:`e_1^T f(T) e_1` with :math:`f(\lambda) = \log\lambda - \lambda + 1`
    and :math:`T` the Lanczos tridiagonal of its CG run (``steps`` iterations)."""
    out = np.empty(alpha.shape[1])
    for j in range(alpha.shape[1]):
        k = int(steps[j])
        a, b = alpha[:k, j], beta[:k, j]
        diag = 1.0 / a
        diag[1:] += b[:-1] / a[:-1]
        lam, V = eigh_tridiagonal(diag, np.sqrt(b[:-1]) / a[:-1])
        lam = np.maximum(lam, 1e-300)
        out[j] = float(V[0] ** 2 @ (np.log(lam) - lam + 1.0))
    return out


class IterativeHost:
    """Deviance and gradient estimates of the blocked layout by CG (scalar terms only).

    Args:
        st: :class:`IterStats`.
        structure: The ``iterative`` structure (every term scalar, one first term).
        reml: REML (True) or ML.
        probes: Number of Rademacher probes (with ``R <= probes`` columns the ``R`` scaled
            unit vectors instead: exact traces, zero standard errors).
        seed: Seed of the probes (drawn once: every evaluation uses the same ones).
        tol: Relative residual of the solves.
        probe_tol: Relative residual at which the probes' CG (and Lanczos) stops.
    """

    def __init__(self, st: IterStats, structure: Any, reml: bool, probes: int = PROBES,
                 seed: int = 0, tol: float = 1e-10, probe_tol: float = 1e-5) -> None:
        self.st, self.reml, self.tol, self.probe_tol = st, reml, tol, probe_tol
        self.sizes = structure.sizes
        self.first = tuple(structure.first)
        self.i1 = self.first[0]
        self.rest = tuple(i for i in range(len(self.sizes)) if i != self.i1)
        self.R, self.G1 = st.C.shape[0], st.W.shape[1]
        self.p = st.XytXy.shape[0] - 1
        self.col_term = np.repeat(np.arange(len(self.rest)), [self.sizes[i][0]
                                                              for i in self.rest])
        self.WT = st.W.T.tocsr()
        self.Wsq = st.W.multiply(st.W).tocsr()
        self.Cdiag = st.C.diagonal()
        # no more columns than probes: the scaled unit vectors sqrt(R) e_r make every trace
        # below exact (their mean is the trace itself), so nothing is estimated
        self.exact = self.R <= probes
        if self.exact:
            self.Z = np.sqrt(self.R) * np.eye(self.R)
        else:
            rng = np.random.default_rng(seed)
            self.Z = rng.choice(np.array([-1.0, 1.0]), size=(self.R, probes))
        self.iterations = 0

    def _theta(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        th = np.asarray(theta, float)
        return float(th[self.i1]), th[list(self.rest)][self.col_term]

    def _cg(self, matvec: Any, B: np.ndarray, tols: np.ndarray, max_iter: int = 1000,
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Block CG, each column to its own relative residual; returns the solutions and,
        per column, CG's step lengths and residual ratios (the Lanczos coefficients) and
        its number of iterations."""
        X = np.zeros_like(B)
        Rr = B.copy()
        Pd = Rr.copy()
        rr = np.einsum("ij,ij->j", Rr, Rr)
        stop = tols * tols * rr
        active = rr > stop
        steps = np.zeros(B.shape[1], int)
        alphas, betas = [], []
        for _ in range(max_iter):
            if not np.any(active):
                break
            idx = np.flatnonzero(active)
            AP = matvec(Pd[:, idx])
            a = rr[idx] / np.einsum("ij,ij->j", Pd[:, idx], AP)
            X[:, idx] += a * Pd[:, idx]
            Rr[:, idx] -= a * AP
            rr_new = np.einsum("ij,ij->j", Rr[:, idx], Rr[:, idx])
            b = rr_new / rr[idx]
            al, be = np.zeros(B.shape[1]), np.zeros(B.shape[1])
            al[idx], be[idx] = a, b
            alphas.append(al)
            betas.append(be)
            steps[idx] += 1
            rr[idx] = rr_new
            Pd[:, idx] = Rr[:, idx] + b * Pd[:, idx]
            active[idx] = rr_new > stop[idx]
        if np.any(active):
            raise FloatingPointError(
                f"conjugate gradients did not reach the tolerance in {max_iter} iterations "
                "(the Schur complement of the random effects is badly conditioned).")
        self.iterations += int(steps.max())
        return X, np.array(alphas), np.array(betas), steps

    def _operator(self, theta: np.ndarray) -> tuple[Any, np.ndarray]:
        r"""``(matvec, P)``: products with :math:`\tilde S = P^{-1/2} S P^{-1/2}` and the
        Jacobi diagonal :math:`P = \mathrm{diag}(S)` at ``theta``."""
        st = self.st
        th1, dv = self._theta(theta)
        K = th1 * th1 / (1.0 + th1 * th1 * st.n1)
        W, WT, C = st.W, self.WT, st.C
        P = 1.0 + dv * dv * (self.Cdiag - self.Wsq @ K)
        ps = 1.0 / np.sqrt(P)
        scale = ps * dv

        def matvec(V: np.ndarray) -> np.ndarray:
            U = scale[:, None] * V
            return scale[:, None] * (C @ U - W @ (K[:, None] * (WT @ U))) + ps[:, None] ** 2 * V
        return matvec, P

    def diag_inverse(self, theta: np.ndarray, rows: np.ndarray, chunk: int = 256,
                     tol: float = 1e-6) -> np.ndarray:
        r"""Diagonal entries :math:`(S^{-1})_{rr}` for ``rows`` by CG on unit vectors (to a
        relative residual ``tol``: :math:`e_r^T x_k` is a Gauss quadrature, its error is of
        the order of the squared residual, so 1e-6 leaves ~1e-12)."""
        matvec, P = self._operator(theta)
        out = np.empty(len(rows))
        for j in range(0, len(rows), chunk):
            r = rows[j:j + chunk]
            E = np.zeros((self.R, len(r)))
            E[r, np.arange(len(r))] = 1.0
            X = self._cg(matvec, E, np.full(len(r), tol))[0]
            out[j:j + chunk] = X[r, np.arange(len(r))] / P[r]
        return out

    def evaluate(self, theta: np.ndarray, grad: bool = True,
                 effects: bool = False) -> dict[str, Any]:
        """Estimated deviance (and gradient, and exact estimates given ``theta``); ``se``:
        the Monte Carlo standard error of ``dev`` (``grad_se`` of the gradient)."""
        st, p, R, n = self.st, self.p, self.R, float(self.st.n)
        th1, dv = self._theta(theta)
        Ainv = 1.0 / (1.0 + th1 * th1 * st.n1)
        K = th1 * th1 * Ainv
        W, WT, C = st.W, self.WT, st.C

        def bdv(V: np.ndarray) -> np.ndarray:  # (C - W K W') V
            return C @ V - W @ (K[:, None] * (WT @ V))

        P = 1.0 + dv * dv * (self.Cdiag - self.Wsq @ K)
        if not np.all(P > 0):
            return {"dev": np.inf}
        ps = 1.0 / np.sqrt(P)
        scale = ps * dv

        def matvec(V: np.ndarray) -> np.ndarray:  # P^-1/2 S P^-1/2 V
            return scale[:, None] * bdv(scale[:, None] * V) + ps[:, None] ** 2 * V

        U1 = th1 * st.Zy1
        U2 = dv[:, None] * st.Zy2
        t = W @ (K[:, None] * st.Zy1)
        rhs = ps[:, None] * (U2 - dv[:, None] * t)
        m = self.Z.shape[1]
        tols = np.r_[np.full(p + 1, self.tol), np.full(m, self.probe_tol)]
        Xs, alpha, beta, steps = self._cg(matvec, np.concatenate([rhs, self.Z], 1), tols)
        Y2 = ps[:, None] * Xs[:, :p + 1]
        Xz = Xs[:, p + 1:]  # S~^-1 z
        q = R * _slq(alpha[:, p + 1:], beta[:, p + 1:], steps[p + 1:])
        ld = float(np.sum(np.log(1.0 / Ainv))) + float(np.sum(np.log(P))) + float(q.mean())
        se = 0.0 if self.exact else float(q.std(ddof=1) / np.sqrt(m))
        LY2 = dv[:, None] * Y2
        WtLY2 = WT @ LY2
        Y1 = Ainv[:, None] * (U1 - th1 * WtLY2)
        Pm = st.XytXy - U1.T @ Y1 - U2.T @ Y2
        Pm = 0.5 * (Pm + Pm.T)
        out = profiled_deviance(Pm, p, n, ld, self.reml)
        if not np.isfinite(out["dev"]):
            return out
        beta_, r2 = out["beta"], out["r2"]
        out.update(se=se, b1=(th1 * (Y1[:, p] - Y1[:, :p] @ beta_))[:, None],
                   b2=LY2[:, p] - LY2[:, :p] @ beta_)
        if not (grad or effects):
            return out
        # Hutchinson: tr(M S^-1) = E[(P^-1/2 z)' M (P^-1/2 S~^-1 z)]
        zs, xs = ps[:, None] * self.Z, ps[:, None] * Xz
        # conditional variances (cheap, so with every gradient: the optimiser's last point has
        # them): the Jacobi diagonal (1/P_r; for the first factor sum_r (D W)_rg^2 / P_r)
        # rescaled per term by the ratio of the estimated trace to the Jacobi one --
        # per-level diagonals by Hutchinson alone are too noisy (the exact ratio varies by
        # < 1.5% within a term on the simulation and InstEval)
        Mz, Mx = WT @ (dv[:, None] * zs), WT @ (dv[:, None] * xs)
        Nj = self.Wsq.T @ (dv * dv / P)
        t1 = np.sum(Mz * (Mx - Mz), 0) / max(float(Nj.sum()), 1e-300)  # per probe
        k1 = 1.0 + float(t1.mean())
        out["cv1"] = (th1 * th1 * (Ainv + Ainv * Ainv * th1 * th1 * Nj * k1))[:, None, None]
        zx = zs * xs
        mc = 0.0 if self.exact else 1.0 / np.sqrt(m)  # MC SE = sample SD * mc
        cv2, rel = [], [float(np.std(t1, ddof=min(1, m - 1)) * mc / k1)]
        for k in range(len(self.rest)):
            on = self.col_term == k
            tk = zx[on].sum(0) / np.sum(1.0 / P[on])  # per probe
            kk = float(tk.mean())
            cv2.append((dv[on] ** 2 * kk / P[on])[:, None, None])
            rel.append(float(np.std(tk, ddof=min(1, m - 1)) * mc / kk))
        out["cv2"] = cv2
        out["cv_scale_se"] = np.array(rel)  # relative MC SE of each term's scale factor
        if not grad:
            return out
        Fbar = profile_gradient_weights(Pm, p, n, r2, self.reml)
        LY1 = th1 * Y1
        ZR1 = st.Zy1 - st.n1[:, None] * LY1 - WtLY2
        ZR2 = st.Zy2 - W @ LY1 - C @ LY2
        T2_1 = float(np.sum((ZR1 @ Fbar) * Y1))
        # first factor: tr(S^-1 D W diag(Ainv^2) W' D) per probe
        m1 = np.einsum("ij,ij->j", zs, dv[:, None] * (W @ ((Ainv * Ainv)[:, None]
                                                           * (WT @ (dv[:, None] * xs)))))
        T1_1 = th1 * (float(st.n1 @ Ainv) - m1)  # per probe
        # rest terms: sum over the term's rows of diag(B D S^-1), per probe
        bx = zs * bdv(dv[:, None] * xs)
        T12 = np.stack([bx[self.col_term == k].sum(0) for k in range(len(self.rest))])
        T22 = np.bincount(self.col_term, np.sum((ZR2 @ Fbar) * Y2, 1), len(self.rest))
        G = np.zeros((len(self.sizes), m))
        G[self.i1] = 2.0 * (T1_1 - T2_1)
        G[list(self.rest)] = 2.0 * (T12 - T22[:, None])
        out["grad"] = G.mean(1)
        # the probes are shared by all entries, hence a covariance
        out["grad_cov"] = (np.zeros((G.shape[0],) * 2) if self.exact else
                           np.atleast_2d(np.cov(G)) / m)
        out["grad_se"] = np.sqrt(np.diag(out["grad_cov"]))
        return out


def fit_iterative(st: IterStats, theta0: np.ndarray, structure: Any, reml: bool,
                  max_iter: int = 100, probes: int = PROBES, seed: int = 0) -> dict[str, Any]:
    r"""Minimise the estimated deviance; every estimate (working scale), as
    :func:`~ctxppl.models.mixed._schur_fit.fit_schur`, plus the Monte Carlo errors:
    ``deviance_se`` (of the criterion at the optimum), ``grad_se`` and ``theta_cov`` (of the
    optimum: :math:`H^{-1}\,\mathrm{Cov}(\hat g)\,H^{-1}`, the gradient's probe
    covariance carried through the BFGS Hessian at the optimum; NaN when the optimiser
    stopped at ``max_iter``) and ``theta_se`` (its diagonal's root)."""
    from ctxppl.models.mixed._schur_fit import diagonal_entries, minimize_logscale

    host = IterativeHost(st, structure, reml, probes=probes, seed=seed)
    n = float(st.n)
    theta0 = np.asarray(theta0, float)
    logs = diagonal_entries(structure.layout) & (theta0 > 0)
    # a value costs as much as a gradient here (the probes' solves dominate)
    x, cur, it, status = minimize_logscale(host.evaluate, theta0, logs, n, max_iter,
                                           hess0="grad")
    fin = cur  # evaluated with the gradient, so with the effects too
    p = host.p
    sigma2 = fin["r2"] / (n - p) if reml else fin["r2"] / n
    b: list[Any] = [None] * len(structure.sizes)
    cv: list[Any] = [None] * len(structure.sizes)
    b[host.i1], cv[host.i1] = fin["b1"], sigma2 * fin["cv1"]
    cv_se = np.zeros(len(structure.sizes))  # relative MC SE of each term's condvar scale
    cv_se[host.i1] = fin["cv_scale_se"][0]
    cv_se[list(host.rest)] = fin["cv_scale_se"][1:]
    r = 0
    _, dv = host._theta(x)
    for k, i in enumerate(host.rest):
        G = structure.sizes[i][0]
        b[i] = fin["b2"][r:r + G, None]
        if G <= EXACT_CONDVAR:  # exact: G more solves, once
            rows = np.arange(r, r + G)
            cv[i] = (sigma2 * dv[rows] ** 2 * host.diag_inverse(x, rows))[:, None, None]
            cv_se[i] = 0.0
        else:
            cv[i] = sigma2 * fin["cv2"][k]
        r += G
    # Monte Carlo error of theta: the optimum moves by -H^-1 (gradient error); H (of dev / n,
    # linear scale) from BFGS, the gradient's covariance on the deviance scale
    try:
        Hi = np.linalg.inv(cur["hess"]) / n
        theta_cov = Hi @ fin["grad_cov"] @ Hi.T
    except (KeyError, np.linalg.LinAlgError):
        theta_cov = np.full((x.size, x.size), np.nan)
    return {"theta": x, "theta_se": np.sqrt(np.diag(theta_cov)), "theta_cov": theta_cov,
            "beta": fin["beta"], "sigma2": sigma2,
            "vcov": sigma2 * np.linalg.inv(fin["Pxx"]), "b": b, "condvar": cv,
            "deviance": fin["dev"] * n, "deviance_se": fin["se"], "grad": cur["grad"],
            "grad_se": fin["grad_se"], "grad_cov": fin["grad_cov"], "condvar_rel_se": cv_se,
            "num_iter": it, "status": status,
            "cg_iterations": host.iterations, "probes": host.Z.shape[1],
            "exact": host.exact}
