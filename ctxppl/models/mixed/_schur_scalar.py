r"""The blocked (Schur) layout when every random-effect term is scalar: a faster evaluation.

Same deviance and gradient as :class:`~ctxppl.models.mixed._schur_host.SchurHost` (crossed
or nested random intercepts such as InstEval's ``(1 | s) + (1 | d)``), specialised to
:math:`q = 1` everywhere: :math:`\Lambda_1 = \theta_1 I`, :math:`\Lambda_2 = D =
\mathrm{diag}(\theta_{k(r)})`, :math:`A_{11} = I + \theta_1^2\,\mathrm{diag}(n_g)`.

* Only the lower triangle of :math:`S = D(C - W K W^T)D + I` is assembled (the pairs of
  nonzeros of :math:`W` sharing a group are sorted by their place in it, so the scatter is
  sequential), factored in place (``dpotrf`` on the transposed, Fortran-ordered view) and
  inverted in place (``dpotri``); nothing is symmetrised or copied.
* For scalar terms :math:`D B D = S - I` gives the diagonal of :math:`B D S^{-1}` as
  :math:`(1 - (S^{-1})_{rr})/\theta_{k(r)}`, and the first factor's trace term
  :math:`\sum_g (Z^TZ\Lambda A^{-1})_{gg}` collapses to
  :math:`\theta_1(\sum_g n_g/A_g - \sum_g N_g/A_g^2)` with
  :math:`N_g = \sum_{i,j \in g} w_i w_j (D S^{-1} D)_{r_i r_j}`: the gradient needs
  :math:`S^{-1}` only at the pairs and on its diagonal.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import sparse
from scipy.linalg import lapack

from ctxppl.models.mixed._schur import SchurStats, profile_gradient_weights, profiled_deviance

__all__ = ["ScalarSchurHost", "all_scalar"]

_TINY = 1e-5  # below this |theta_k| the (1 - S^-1_rr)/theta identity loses digits


def all_scalar(structure: Any) -> bool:
    """Whether every term of a ``schur`` structure has one coefficient per group."""
    return all(q == 1 for _, q in structure.sizes)


class ScalarSchurHost:
    """Deviance, exact gradient and estimates of the blocked layout, scalar terms only.

    Args:
        st: :class:`SchurStats` (NumPy float64).
        structure: The ``schur`` structure (every term scalar, see :func:`all_scalar`).
        reml: REML (True) or ML.
    """

    def __init__(self, st: SchurStats, structure: Any, reml: bool) -> None:
        if not all_scalar(structure) or len(structure.first) != 1:
            raise ValueError("ScalarSchurHost needs scalar terms and one first-factor term.")
        self.st, self.reml = st, reml
        self.sizes = structure.sizes
        self.first = tuple(structure.first)
        self.i1 = self.first[0]
        self.rest = tuple(i for i in range(len(self.sizes)) if i != self.i1)
        self.G1 = st.ZtZ1.shape[0]
        self.R = st.C.shape[0]
        self.p = p = st.XtX.shape[0]
        self.n1 = st.ZtZ1[:, 0, 0]
        self.Zy1 = st.ZtXy1[:, 0, :]  # (G1, p+1)
        self.XytXy = np.zeros((p + 1, p + 1))
        self.XytXy[:p, :p], self.XytXy[:p, p] = st.XtX, st.Xty
        self.XytXy[p, :p], self.XytXy[p, p] = st.Xty, st.yty
        self.col_term = np.repeat(np.arange(len(self.rest)),
                                  [self.sizes[i][0] for i in self.rest])  # (R,)
        self.pflat = np.asarray(st.pair_flat, np.int64)
        self.pg = np.asarray(st.ent_g, np.int64)[st.pair_i]
        vv = st.ent_v[st.pair_i, 0] * st.ent_v[st.pair_j, 0]
        self.vv = vv
        self.vv2 = np.where(st.pair_i == st.pair_j, vv, 2.0 * vv)
        self.W = sparse.csr_matrix((st.ent_v[:, 0], (st.ent_r, st.ent_g)),
                                   shape=(self.R, self.G1))
        self.WT = self.W.T.tocsr()

    def _theta(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        th = np.asarray(theta, float)
        return float(th[self.i1]), th[list(self.rest)][self.col_term]

    def _assemble(self, th1: float, dv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``1 / A_11`` and the lower triangle of ``S`` (C order; upper triangle unused)."""
        R = self.R
        Ainv = 1.0 / (1.0 + th1 * th1 * self.n1)
        K = th1 * th1 * Ainv
        S = np.bincount(self.pflat, self.vv * K[self.pg], R * R).reshape(R, R)
        np.subtract(self.st.C, S, out=S)
        S *= dv[:, None]
        S *= dv[None, :]
        S.flat[::R + 1] += 1.0
        return Ainv, S

    def evaluate(self, theta: np.ndarray, grad: bool = True,
                 effects: bool = False) -> dict[str, Any]:
        """Deviance (and gradient, and estimates) at ``theta``; ``dev = inf`` off-domain."""
        p, n = self.p, float(self.st.n)
        th1, dv = self._theta(theta)
        Ainv, S = self._assemble(th1, dv)
        # the C-ordered lower triangle is the Fortran-ordered upper triangle of S.T
        U, info = lapack.dpotrf(S.T, lower=0, clean=0, overwrite_a=1)
        if info != 0:
            return {"dev": np.inf}
        ld = float(np.sum(np.log(1.0 / Ainv))) + 2.0 * float(np.sum(np.log(np.diag(U))))
        K = th1 * th1 * Ainv
        U1 = th1 * self.Zy1
        U2 = dv[:, None] * self.st.ZtXy2
        t = self.W @ (K[:, None] * self.Zy1)
        Y2 = lapack.dpotrs(U, U2 - dv[:, None] * t, lower=0)[0]
        LY2 = dv[:, None] * Y2
        WtLY2 = self.WT @ LY2
        Y1 = Ainv[:, None] * (U1 - th1 * WtLY2)
        P = self.XytXy - U1.T @ Y1 - U2.T @ Y2
        P = 0.5 * (P + P.T)
        out = profiled_deviance(P, p, n, ld, self.reml)
        if not np.isfinite(out["dev"]) or not (grad or effects):
            return out
        beta, r2 = out["beta"], out["r2"]
        # S^{-1} in place: Fortran upper = C-ordered lower triangle of Sl
        Sl = lapack.dpotri(U, lower=0, overwrite_c=1)[0].T
        dS = np.diagonal(Sl).copy()
        tiny = np.abs(dv) < _TINY
        T12 = None
        if grad and np.any(tiny):  # diag(B D S^-1) without dividing by theta
            T12 = self._diag_bds(th1, dv, Sl)
        Sl *= dv[:, None]
        Sl *= dv[None, :]  # D S^-1 D (lower triangle)
        ws = np.take(Sl.reshape(-1), self.pflat)
        ws *= self.vv2  # N_g = sum of ws over the pairs of group g
        out["b1"] = (th1 * (Y1[:, p] - Y1[:, :p] @ beta))[:, None]
        out["pair_ws"], out["Ainv"], out["th1"] = ws, Ainv, th1
        if effects:
            out = self.complete(out)
        out["b2"] = LY2[:, p] - LY2[:, :p] @ beta
        cv2 = dv * dv * dS
        out["cv2"] = [cv2[self.col_term == k][:, None, None] for k in range(len(self.rest))]
        if not grad:
            return out
        Fbar = profile_gradient_weights(P, p, n, r2, self.reml)
        LY1 = th1 * Y1
        ZR1 = self.Zy1 - self.n1[:, None] * LY1 - WtLY2
        ZR2 = self.st.ZtXy2 - self.W @ LY1 - self.st.C @ LY2
        T2_1 = float(np.sum((ZR1 @ Fbar) * Y1))
        T1_1 = th1 * (float(self.n1 @ Ainv) - float(ws @ np.take(Ainv * Ainv, self.pg)))
        if T12 is None:
            T12 = (1.0 - dS) / dv
        T22 = np.sum((ZR2 @ Fbar) * Y2, 1)
        g = np.zeros(len(self.sizes))
        g[self.i1] = 2.0 * (T1_1 - T2_1)
        g[list(self.rest)] = 2.0 * np.bincount(self.col_term, T12 - T22, len(self.rest))
        out["grad"] = g
        return out

    def complete(self, out: dict[str, Any]) -> dict[str, Any]:
        """Add the first factor's conditional covariances ``cv1`` to an evaluation with
        gradient (left out of every evaluation but the last one used)."""
        if "cv1" in out or "pair_ws" not in out:
            return out
        N = np.bincount(self.pg, out["pair_ws"], self.G1)
        Ainv, th1 = out["Ainv"], out["th1"]
        return {**out, "cv1": (th1 * th1 * (Ainv + Ainv * Ainv * th1 * th1 * N))[:, None, None]}

    def _diag_bds(self, th1: float, dv: np.ndarray, Sl: np.ndarray) -> np.ndarray:
        """Diagonal of ``B D S^{-1}`` from the lower triangles of ``B`` and ``S^{-1}``."""
        R = self.R
        K = th1 * th1 / (1.0 + th1 * th1 * self.n1)
        B = self.st.C - np.bincount(self.pflat, self.vv * K[self.pg], R * R).reshape(R, R)
        M = np.tril(B * Sl)
        return M @ dv + M.T @ dv - np.diagonal(M) * dv
