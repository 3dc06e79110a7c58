r"""The blocked (Schur) layout evaluated on the host: float64 NumPy + LAPACK, exact gradients.

Same deviance as :func:`~ctxppl.models.mixed._schur.schur_parts` (see there for the
blocks), but with the gradient in closed form, so one evaluation costs one Cholesky factor
of the dense Schur complement :math:`S` (``dpotrf``) and, for the gradient, its inverse
(``dpotri``) -- about 3 Cholesky factors, against ~9 for reverse-mode autodiff of a
Cholesky -- and nothing is compiled. Writing :math:`U = \Lambda^T Z^T W [X, y]`,
:math:`Y = A^{-1} U`, :math:`P = [X, y]^T W [X, y] - U^T Y` and the deviance as
:math:`\log|A| + f(P)` (REML: :math:`f = \log|P| + (n-p-1)\log r^2`, ML:
:math:`f = n \log r^2`, :math:`r^2 = 1/(P^{-1})_{yy}`),

.. math::

    \frac{\partial d}{\partial \Lambda} = 2\, Z^T W Z \Lambda A^{-1}
        - 2\, Z^T W (Xy - Z\Lambda Y)\, \bar F\, Y^T,\qquad \bar F = \partial f/\partial P,

of which only the diagonal blocks of each term and group are needed: they take
:math:`S^{-1}` at the pairs of nonzeros of :math:`W` that share a group of the first factor
(the same pairs that build :math:`S`), and the diagonal blocks of :math:`B \Lambda_2 S^{-1}`.
The same pieces give the conditional modes and covariances at the optimum.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.linalg import lapack

from ctxppl.models.mixed._schur import SchurStats, profile_gradient_weights, profiled_deviance

__all__ = ["SchurHost", "lambda_index"]


def lambda_index(q: int, correlated: bool) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of ``Lambda_k`` filled by the term's ``theta`` (lme4's order)."""
    if correlated:
        rows, cols = np.tril_indices(q)
        order = np.lexsort((rows, cols))
        return rows[order], cols[order]
    return np.arange(q), np.arange(q)


class SchurHost:
    """Deviance, gradient and estimates of the blocked layout for one data set.

    Args:
        st: :class:`SchurStats` (NumPy float64).
        structure: The ``schur`` :class:`~ctxppl.models.mixed._reml.Structure`.
        reml: REML (True) or ML.
    """

    def __init__(self, st: SchurStats, structure: Any, reml: bool) -> None:
        self.st, self.reml = st, reml
        self.terms = structure.layout.terms
        self.sizes = structure.sizes
        self.first = tuple(structure.first)
        self.rest = tuple(i for i in range(len(self.sizes)) if i not in self.first)
        self.idx = [lambda_index(q, c) for q, c in self.terms]
        self.G1, self.q1 = st.ZtZ1.shape[:2]
        self.R = st.C.shape[0]
        self.p = st.XtX.shape[0]
        p = self.p
        self.XytXy = np.zeros((p + 1, p + 1))
        self.XytXy[:p, :p], self.XytXy[:p, p] = st.XtX, st.Xty
        self.XytXy[p, :p], self.XytXy[p, p] = st.Xty, st.yty
        self.pg = st.ent_g[st.pair_i]
        self.ri, self.rj = st.ent_r[st.pair_i], st.ent_r[st.pair_j]
        self.vi, self.vj = st.ent_v[st.pair_i], st.ent_v[st.pair_j]
        self.same = st.pair_i == st.pair_j
        self.theta_size = sum(len(r) for r, _ in self.idx)
        self.scalar2 = all(self.sizes[i][1] == 1 for i in self.rest)
        self.upper = np.triu(np.ones((self.R, self.R), bool), 1)

    def _scale2(self, lams: list[np.ndarray]) -> np.ndarray:
        """Diagonal of ``Lambda_2`` when every other term is scalar."""
        return np.concatenate([np.full(self.sizes[i][0], lams[i][0, 0]) for i in self.rest])

    def _sandwich2(self, lams: list[np.ndarray], M: np.ndarray, transpose: bool) -> np.ndarray:
        """``Lambda_2^T M Lambda_2`` (``transpose``) or ``Lambda_2 M Lambda_2^T``, ``M``
        symmetric ``(R, R)``."""
        if self.scalar2:
            dv = self._scale2(lams)
            return M * np.multiply.outer(dv, dv)
        return self._apply2(lams, self._apply2(lams, M, transpose).T, transpose)

    # ------------------------------------------------------------------ Lambda helpers
    def lambdas(self, theta: np.ndarray) -> list[np.ndarray]:
        out, i = [], 0
        for (q, _), (rows, cols) in zip(self.terms, self.idx, strict=True):
            lam = np.zeros((q, q))
            lam[rows, cols] = theta[i:i + len(rows)]
            out.append(lam)
            i += len(rows)
        return out

    def _lam1(self, lams: list[np.ndarray]) -> np.ndarray:
        q1 = self.q1
        out, j = np.zeros((q1, q1)), 0
        for i in self.first:
            q = lams[i].shape[0]
            out[j:j + q, j:j + q] = lams[i]
            j += q
        return out

    def _apply2(self, lams: list[np.ndarray], M: np.ndarray, transpose: bool) -> np.ndarray:
        """``Lambda_2^T M`` (``transpose``) or ``Lambda_2 M`` for ``M (R, ...)``."""
        out, r = np.empty_like(M), 0
        for i in self.rest:
            G, q = self.sizes[i]
            lam = lams[i].T if transpose else lams[i]
            blk = M[r:r + G * q].reshape((G, q) + M.shape[1:])
            if q == 1:
                out[r:r + G] = lam[0, 0] * M[r:r + G]
            else:
                out[r:r + G * q] = np.einsum("ab,gb...->ga...", lam, blk).reshape(
                    (G * q,) + M.shape[1:])
            r += G * q
        return out

    def _split2(self, v: np.ndarray) -> list[np.ndarray]:
        """A diagonal ``(R,)`` as per-term ``(G, 1, 1)`` blocks (scalar terms)."""
        out, r = [], 0
        for i in self.rest:
            G = self.sizes[i][0]
            out.append(v[r:r + G, None, None])
            r += G
        return out

    def _diag_blocks2(self, M: np.ndarray, N: np.ndarray) -> list[np.ndarray]:
        """Per rest term: ``(G, q, q)`` diagonal blocks of ``M @ N.T`` (``M, N (R, R)``)."""
        out, r = [], 0
        for i in self.rest:
            G, q = self.sizes[i]
            a = M[r:r + G * q].reshape(G, q, -1)
            b = N[r:r + G * q].reshape(G, q, -1)
            out.append(np.einsum("gam,gbm->gab", a, b))
            r += G * q
        return out

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, theta: np.ndarray, grad: bool = True,
                 effects: bool = False) -> dict[str, Any]:
        """Deviance (and gradient, and estimates) at ``theta``; ``dev = inf`` off-domain."""
        st, R, G1, q1, p = self.st, self.R, self.G1, self.q1, self.p
        lams = self.lambdas(np.asarray(theta, float))
        lam1 = self._lam1(lams)
        A11 = np.einsum("ba,gbc,cd->gad", lam1, st.ZtZ1, lam1) + np.eye(q1)
        if q1 == 1:
            A11inv = 1.0 / A11
            ld1 = float(np.sum(np.log(A11[:, 0, 0])))
        else:
            A11inv = np.linalg.inv(A11)
            ld1 = float(np.sum(np.linalg.slogdet(A11)[1]))
        K = np.einsum("ab,gbc,dc->gad", lam1, A11inv, lam1)  # Lam1 A11^{-1} Lam1^T
        if q1 == 1:
            vals = self.vi[:, 0] * self.vj[:, 0] * K[self.pg, 0, 0]
        else:
            vals = np.einsum("pa,pab,pb->p", self.vi, K[self.pg], self.vj)
        low = np.bincount(st.pair_flat, vals, R * R).reshape(R, R)
        dg = np.diagonal(low).copy()
        B = st.C - low
        B -= low.T
        B[np.diag_indices(R)] += dg
        S = self._sandwich2(lams, B, True)
        S[np.diag_indices(R)] += 1.0
        L2, info = lapack.dpotrf(S, lower=1, clean=1, overwrite_a=0)
        if info != 0:
            return {"dev": np.inf}
        ld = ld1 + 2.0 * float(np.sum(np.log(np.diag(L2))))
        # Y = A^{-1} U by block elimination
        U1 = np.einsum("ba,gbc->gac", lam1, st.ZtXy1)  # (G1, q1, p+1)
        U2 = self._apply2(lams, st.ZtXy2, True)  # (R, p+1)
        KZ = np.einsum("gab,gbc->gac", K, st.ZtXy1)  # Lam1 A11^{-1} U1 per group
        t = np.stack([np.bincount(st.ent_r, np.einsum("ea,ea->e", st.ent_v, KZ[st.ent_g, :, c]),
                                  R) for c in range(p + 1)], -1)
        Y2 = lapack.dpotrs(L2, U2 - self._apply2(lams, t, True), lower=1)[0]
        LY2 = self._apply2(lams, Y2, False)  # Lam2 Y2
        WtLY2 = np.zeros((G1, q1, p + 1))
        for a in range(q1):
            for c in range(p + 1):
                WtLY2[:, a, c] = np.bincount(st.ent_g, st.ent_v[:, a] * LY2[st.ent_r, c], G1)
        Y1 = np.einsum("gab,gbc->gac", A11inv,
                       U1 - np.einsum("ba,gbc->gac", lam1, WtLY2))
        P = self.XytXy - np.einsum("gac,gad->cd", U1, Y1) - U2.T @ Y2
        P = 0.5 * (P + P.T)
        n = float(st.n)
        out = profiled_deviance(P, p, n, ld, self.reml)
        if not np.isfinite(out["dev"]) or not (grad or effects):
            return out
        beta, r2 = out["beta"], out["r2"]
        # ---- S^{-1} and the pieces shared by the gradient and the conditional covariances
        Sinv = lapack.dpotri(L2, lower=1, overwrite_c=1)[0]
        np.copyto(Sinv, Sinv.T, where=self.upper)
        St = self._sandwich2(lams, Sinv, False)  # Lam2 S^-1 Lam2^T
        s = St[self.ri, self.rj]
        if q1 == 1:
            w = self.vi[:, 0] * self.vj[:, 0] * s * np.where(self.same, 1.0, 2.0)
            N = np.bincount(self.pg, w, G1)[:, None, None]
        else:
            o = self.vi[:, :, None] * self.vj[:, None, :] * s[:, None, None]
            N = np.zeros((G1, q1, q1))
            for a in range(q1):
                for b in range(q1):
                    N[:, a, b] = np.bincount(self.pg, o[:, a, b], G1)
            Nd = np.zeros_like(N)
            od = np.where(self.same[:, None, None], o, 0.0)
            for a in range(q1):
                for b in range(q1):
                    Nd[:, a, b] = np.bincount(self.pg, od[:, a, b], G1)
            N = N + np.swapaxes(N - Nd, 1, 2)
        # diagonal blocks of A^{-1}: first factor
        mid = np.einsum("ba,gbc,cd->gad", lam1, N, lam1)
        Ainv1 = A11inv + A11inv @ mid @ A11inv
        if effects or grad:  # b = Lam u, u = A^{-1} Lam^T Z^T W (y - X beta); Lam A^-1 Lam^T
            out["b1"] = (Y1[:, :, p] - Y1[:, :, :p] @ beta) @ lam1.T
            out["cv1"] = np.einsum("ab,gbc,dc->gad", lam1, Ainv1, lam1)
            out["b2"] = LY2[:, p] - LY2[:, :p] @ beta
            out["cv2"] = self._cv2(St)
        if not grad:
            return out
        # ---- gradient: Gamma = 2 Z'WZ Lam A^{-1} - 2 Z'W Res Fbar Y^T, diagonal blocks
        Fbar = profile_gradient_weights(P, p, n, r2, self.reml)
        # Z'W Res = Z'W Xy - Z'W Z Lam Y
        LY1 = np.einsum("ab,gbc->gac", lam1, Y1)  # Lam1 Y1
        WLY1 = np.stack([np.bincount(st.ent_r, np.einsum("ea,ea->e", st.ent_v,
                                                         LY1[st.ent_g, :, c]), R)
                         for c in range(p + 1)], -1)
        ZR1 = st.ZtXy1 - np.einsum("gab,gbc->gac", st.ZtZ1, LY1) - WtLY2
        ZR2 = st.ZtXy2 - WLY1 - st.C @ LY2
        T2_1 = np.einsum("gac,cd,gbd->gab", ZR1, Fbar, Y1)
        T1_1 = np.einsum("gab,bc,gcd->gad", st.ZtZ1, lam1, Ainv1) - \
            np.einsum("gab,bc,gcd->gad", N, lam1, A11inv)
        Gam1 = 2.0 * (T1_1 - T2_1).sum(0)
        if self.scalar2:  # diagonal of B Lam2 S^{-1}
            T1_2 = self._split2(np.einsum("ij,j,ij->i", B, self._scale2(lams), Sinv))
        else:
            BL = self._apply2(lams, B, True).T  # B Lam2 = (Lam2^T B)^T, B symmetric
            T1_2 = self._diag_blocks2(BL, Sinv)
        T2_2 = self._diag_blocks2(ZR2 @ Fbar, Y2)
        g = np.zeros(self.theta_size)
        offs = np.cumsum([0] + [len(r) for r, _ in self.idx])
        j = 0
        for i in self.first:
            q = self.terms[i][0]
            rows, cols = self.idx[i]
            g[offs[i]:offs[i + 1]] = Gam1[j + rows, j + cols]
            j += q
        for k, i in enumerate(self.rest):
            rows, cols = self.idx[i]
            Gam = 2.0 * (T1_2[k] - T2_2[k]).sum(0)
            g[offs[i]:offs[i + 1]] = Gam[rows, cols]
        out["grad"] = g
        return out

    def _cv2(self, St: np.ndarray) -> list[np.ndarray]:
        """Per rest term: ``(G, q, q)`` diagonal blocks of ``St = Lambda_2 S^{-1} Lambda_2^T``."""
        out, r = [], 0
        for i in self.rest:
            G, q = self.sizes[i]
            a = St[r:r + G * q, r:r + G * q].reshape(G, q, G, q)
            out.append(a[np.arange(G), :, np.arange(G), :])
            r += G * q
        return out
