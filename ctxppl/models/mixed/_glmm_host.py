r"""The Laplace deviance of a GLMM with several grouping factors, and its exact gradient, on
the host (float64 NumPy + LAPACK): nothing to compile.

With :math:`u` spherical (:math:`b = \Lambda u`), :math:`\eta = X\beta + Z\Lambda u +
\mathrm{offset}`, prior weights :math:`w_i` and the family's log-likelihood :math:`\ell`,
score :math:`s = \partial\ell/\partial\eta` and observed information
:math:`h = -\partial^2\ell/\partial\eta^2`,

.. math::

    d(\psi) = -2\sum_i w_i\,\ell_i(\hat u) + \lVert\hat u\rVert^2 + \log|H|,\qquad
    H = \Lambda^T Z^T D Z \Lambda + I,\quad D = \mathrm{diag}(w_i h_i),

at the conditional mode :math:`\hat u` (penalised IRLS: Newton steps with step halving,
warm-started from the previous evaluation's mode, to :math:`10^{-10}`). The gradient in
:math:`\psi = (\beta, \theta[, \log\phi])`: the first two terms are stationary in :math:`u`
at the mode (envelope theorem), and :math:`\log|H|` moves with :math:`\Lambda` directly and
with :math:`D` through :math:`\eta` -- also through :math:`\hat u`, whose derivative is
:math:`H^{-1}\partial g/\partial\psi` (:math:`g = \Lambda^T Z^T(w s) - u`, zero at the mode).
With the leverages :math:`l_i = (Z\Lambda H^{-1}\Lambda^T Z^T)_{ii}`,
:math:`c_i = w_i\,(\partial h/\partial\eta)_i\, l_i` and :math:`a = H^{-1}\Lambda^T Z^T c`:

.. math::

    \partial_\beta d = X^T\big(-2 w s + c - D Z\Lambda a\big),\qquad
    \partial_{\Lambda_{rc}} d = \sum_g \big[(Z^Tws)_{gr}(a - 2\hat u)_{gc}
        + (Z^Tc - Z^T D Z\Lambda a)_{gr}\,\hat u_{gc}
        + 2\,(Z^TDZ\Lambda H^{-1})_{gr,gc}\big]

(sums over the groups of the term holding :math:`\Lambda_{rc}`), and for the negative
binomial's :math:`\log\phi` the same three routes with :math:`\partial/\partial\log\phi` of
:math:`\ell`, :math:`s` and :math:`h`. One evaluation costs a few Cholesky factors of the
:math:`Q \times Q` matrix :math:`H` (PIRLS) and one inverse (for the gradient).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from scipy.linalg import lapack
from threadpoolctl import threadpool_limits

from ctxppl.models.mixed._families import Family
from ctxppl.models.mixed._schur_host import lambda_index

__all__ = ["LaplaceHost", "fit_laplace_host"]


@partial(jax.jit, static_argnums=0)
def _elementwise(family: Family, y, eta, disp, trials):  # noqa: ANN001, ANN202
    """Log-likelihood, score, information and the information's derivative in ``eta``."""
    ll = family.loglik(y, eta, disp, trials)
    (s, h), (_, dh) = jax.jvp(lambda e: family.score_info(y, e, disp, trials), (eta,),
                              (jnp.ones_like(eta),))
    return ll, s, h, dh


@partial(jax.jit, static_argnums=0)
def _dispersion(family: Family, y, eta, log_disp, trials):  # noqa: ANN001, ANN202
    """Derivatives of the log-likelihood, score and information in ``log(phi)``."""

    def f(ld):  # noqa: ANN001, ANN202
        d = jnp.exp(ld)
        return (family.loglik(y, eta, d, trials),) + tuple(family.score_info(y, eta, d, trials))

    return jax.jvp(f, (log_disp,), (jnp.ones_like(log_disp),))[1]


class LaplaceHost:
    """The Laplace deviance of one data set in the dense layout, with its exact gradient.

    Args:
        family: The :class:`Family`.
        y, X, w, off, trials: Observations (float64; ``trials`` may be ``None``).
        Z, cols: ``(n, m)`` nonzero random-effect values and their columns in ``0..Q-1``.
        structure: The ``dense`` structure (terms in ``Q`` order).
        Q: Number of random effects.
    """

    def __init__(self, family: Family, y, X, Z, cols, w, off, trials, structure: Any,  # noqa: ANN001
                 Q: int) -> None:
        self.f, self.y, self.X, self.Z = family, y, X, Z
        self.cols = np.asarray(cols, np.int64)
        self.w, self.off, self.trials, self.Q = w, off, trials, Q
        self.layout, self.sizes = structure.layout, structure.sizes
        self.p = X.shape[1]
        self.nb = family.name == "negative_binomial"
        self.idx = [lambda_index(q, c) for q, c in self.layout.terms]
        self.n_theta = sum(len(r) for r, _ in self.idx)
        self.m = Z.shape[1]
        self.flat = (self.cols[:, :, None] * Q + self.cols[:, None, :]).reshape(-1)
        self.u = np.zeros(Q)  # warm start of the conditional mode
        # per term: its columns of Z and its first column in Q
        self.zcol, self.qoff = [], []
        mo, qo = 0, 0
        for G, q in self.sizes:
            self.zcol.append(slice(mo, mo + q))
            self.qoff.append(qo)
            mo, qo = mo + q, qo + G * q

    # ------------------------------------------------------------------ pieces
    def split(self, psi: np.ndarray) -> tuple[np.ndarray, np.ndarray, Any]:
        p, nt = self.p, self.n_theta
        disp = float(np.exp(psi[p + nt])) if self.nb else None
        return psi[:p], psi[p:p + nt], disp

    def lambdas(self, theta: np.ndarray) -> list[np.ndarray]:
        out, i = [], 0
        for (q, _), (rows, cols) in zip(self.layout.terms, self.idx, strict=True):
            lam = np.zeros((q, q))
            lam[rows, cols] = theta[i:i + len(rows)]
            out.append(lam)
            i += len(rows)
        return out

    def _zl(self, lams: list[np.ndarray]) -> np.ndarray:
        return np.concatenate([self.Z[:, sl] @ lam for sl, lam in zip(self.zcol, lams,
                                                                        strict=True)], 1)

    def _elem(self, eta: np.ndarray, disp: Any) -> tuple[np.ndarray, ...]:
        with jax.enable_x64(True):
            out = _elementwise(self.f, self.y, eta, disp, self.trials)
            ll, s, h, dh = (np.asarray(a, float) for a in out)
        pos = h > 0
        return self.w * ll, self.w * s, self.w * np.where(pos, h, 0.0), \
            self.w * np.where(pos, dh, 0.0)

    def _hessian(self, ZL: np.ndarray, h: np.ndarray) -> np.ndarray:
        Q = self.Q
        H = np.bincount(self.flat, (h[:, None, None] * ZL[:, :, None] * ZL[:, None, :]
                                    ).reshape(-1), Q * Q).reshape(Q, Q)
        H.flat[::Q + 1] += 1.0
        return H

    def _colsum(self, M: np.ndarray, v: np.ndarray) -> np.ndarray:
        """``M^T v`` for ``M`` with the nonzero pattern of ``Z`` (values ``(n, m)``)."""
        return np.bincount(self.cols.reshape(-1), (M * v[:, None]).reshape(-1), self.Q)

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, psi: np.ndarray, grad: bool = True) -> dict[str, Any]:
        """``dev`` (``inf`` where the mode cannot be found), and with ``grad`` its gradient,
        the mode ``u`` and ``Hinv``."""
        psi = np.asarray(psi, float)
        beta, theta, disp = self.split(psi)
        lams = self.lambdas(theta)
        ZL = self._zl(lams)
        eta0 = self.X @ beta + self.off
        u = self.u.copy()

        def eta_of(v: np.ndarray) -> np.ndarray:
            return eta0 + np.einsum("im,im->i", ZL, v[self.cols])

        def penalised(v: np.ndarray) -> float:
            with jax.enable_x64(True):
                ll = np.asarray(_elementwise(self.f, self.y, eta_of(v), disp, self.trials)[0])
            val = float(self.w @ ll) - 0.5 * float(v @ v)
            return val if np.isfinite(val) else -np.inf

        conv = False
        for _ in range(100):
            ll, s, h, dh = self._elem(eta_of(u), disp)
            g = self._colsum(ZL, s) - u
            U, info = lapack.dpotrf(self._hessian(ZL, h), lower=0, overwrite_a=1)
            if info != 0 or not np.all(np.isfinite(g)):
                return {"dev": np.inf}
            delta = lapack.dpotrs(U, g, lower=0)[0]
            cur, t = float(np.sum(ll)) - 0.5 * float(u @ u), 1.0
            while penalised(u + t * delta) < cur and t > 1e-10:
                t *= 0.5
            u = u + t * delta
            if np.max(np.abs(t * delta)) < 1e-10:
                conv = True
                break
        eta = eta_of(u)
        ll, s, h, dh = self._elem(eta, disp)
        H = self._hessian(ZL, h)
        U, info = lapack.dpotrf(H, lower=0, overwrite_a=0)
        if info != 0 or not conv:
            return {"dev": np.inf}
        self.u = u
        dev = -2.0 * float(np.sum(ll)) + float(u @ u) + 2.0 * float(np.sum(np.log(np.diag(U))))
        out: dict[str, Any] = {"dev": dev, "u": u}
        if not grad:
            return out
        Hinv = lapack.dpotri(U, lower=0)[0]
        Hinv = np.triu(Hinv) + np.triu(Hinv, 1).T
        out["Hinv"] = Hinv
        n, m = ZL.shape
        lev = np.einsum("ia,ib,iab->i", ZL, ZL, Hinv.reshape(-1)[self.flat].reshape(n, m, m))
        c = dh * lev
        a = Hinv @ self._colsum(ZL, c)
        zla = np.einsum("im,im->i", ZL, a[self.cols])
        gb = self.X.T @ (-2.0 * s + c - h * zla)
        zs = self._colsum(self.Z, s)
        zc = self._colsum(self.Z, c - h * zla)
        gt = np.zeros(self.n_theta)
        i = 0
        for k, ((G, q), (rows, cols)) in enumerate(zip(self.sizes, self.idx, strict=True)):
            sl, o = self.zcol[k], self.qoff[k]
            blk = slice(o, o + G * q)
            U_, A_ = u[blk].reshape(G, q), a[blk].reshape(G, q)
            M = zs[blk].reshape(G, q).T @ (A_ - 2.0 * U_) + zc[blk].reshape(G, q).T @ U_
            # sum_g (Z'DZ Lam H^-1)_{(g,r),(g,c)} = sum_i h_i Z_ir (Z Lam H^-1)_{i,(g_i,c)}
            first = (self.cols[:, sl.start] - o) // q * q + o  # the row's group in this term
            Hg = Hinv[self.cols[:, :, None], first[:, None, None] + np.arange(q)]  # (n, m, q)
            T = np.einsum("im,imc->ic", ZL, Hg)
            M += 2.0 * (self.Z[:, sl] * h[:, None]).T @ T
            gt[i:i + len(rows)] = M[rows, cols]
            i += len(rows)
        parts = [gb, gt]
        if self.nb:
            dll, ds, dhh = (np.asarray(v, float) for v in self._disp(eta, disp))
            ga = -2.0 * float(self.w @ dll) + float((self.w * dhh) @ lev) + \
                float(a @ self._colsum(ZL, self.w * ds))
            parts.append(np.array([ga]))
        out["grad"] = np.concatenate(parts)
        return out

    def _disp(self, eta: np.ndarray, disp: float) -> tuple[Any, ...]:
        with jax.enable_x64(True):
            return _dispersion(self.f, self.y, eta, jnp.asarray(np.log(disp)), self.trials)


def glm_start(family: Family, y, X, w, off, trials, beta0: np.ndarray,  # noqa: ANN001
              disp: Any = None) -> np.ndarray:
    """Fixed effects of the model without random effects (Newton / IRLS in float64): the
    starting point of the outer optimisation (grouseticks: 12 BFGS steps instead of 18)."""
    beta = np.asarray(beta0, float).copy()

    def loglik(b: np.ndarray) -> float:
        with jax.enable_x64(True):
            v = float(w @ np.asarray(_elementwise(family, y, X @ b + off, disp, trials)[0]))
        return v if np.isfinite(v) else -np.inf

    cur = loglik(beta)
    for _ in range(25):
        with jax.enable_x64(True):
            _, s, h, _ = (np.asarray(a, float) for a in _elementwise(
                family, y, X @ beta + off, disp, trials))
        XtH = X.T * (w * np.maximum(h, 1e-12))
        try:
            step = np.linalg.solve(XtH @ X, X.T @ (w * s))
        except np.linalg.LinAlgError:
            break
        t = 1.0
        while t > 1e-6 and loglik(beta + t * step) < cur:
            t *= 0.5
        if t <= 1e-6:
            break
        beta = beta + t * step
        new = loglik(beta)
        done = new - cur < 1e-10 * (1.0 + abs(new))
        cur = new
        if done:
            break
    return beta


def fit_laplace_host(family: Family, y, X, Z, cols, w, off, trials, structure: Any,  # noqa: ANN001
                     Q: int, psi0: np.ndarray, max_iter: int = 100) -> dict[str, Any]:
    """Maximise the Laplace likelihood over ``psi = (beta, theta[, log phi])`` by BFGS with
    exact gradients (the diagonal of ``Lambda`` on the log scale, see
    :func:`~ctxppl.models.mixed._schur_fit.minimize_logscale`); the Hessian of the deviance
    at the optimum (for the standard errors, as glmer) by central differences of the
    gradient. Returns ``psi``, ``deviance``, ``hess``, ``grad`` (of the deviance / n),
    ``num_iter``, ``status`` and per term the modes ``b`` ``(G, q)`` and conditional
    covariances ``condvar`` ``(G, q, q)``.
    """
    from ctxppl.models.mixed._schur_fit import diagonal_entries, minimize_logscale

    host = LaplaceHost(family, y, X, Z, cols, w, off, trials, structure, Q)
    p, nt = host.p, host.n_theta
    psi0 = np.asarray(psi0, float).copy()
    psi0[:p] = glm_start(family, y, X, w, off, trials, psi0[:p], host.split(psi0)[2])
    logs = np.zeros(psi0.size, bool)
    logs[p:p + nt] = diagonal_entries(structure.layout) & (psi0[p:p + nt] > 0)
    n = float(np.sum(w > 0))
    with threadpool_limits(1, user_api="blas"):  # LAPACK threads spin on a busy machine
        psi, cur, it, status = minimize_logscale(host.evaluate, psi0, logs, n, max_iter)
        d = psi.size
        hess = np.empty((d, d))
        for j in range(d):
            e = np.zeros(d)
            e[j] = 1e-4 * max(1.0, abs(psi[j]))
            gp, gm = host.evaluate(psi + e)["grad"], host.evaluate(psi - e)["grad"]
            hess[:, j] = (gp - gm) / (2.0 * e[j])
    hess = 0.5 * (hess + hess.T)
    u, Hinv = cur["u"], cur["Hinv"]
    b, cv = [], []
    for k, (lam, (G, q)) in enumerate(zip(host.lambdas(psi[p:p + nt]), host.sizes,
                                          strict=True)):
        o = host.qoff[k]
        b.append(u[o:o + G * q].reshape(G, q) @ lam.T)
        blk = Hinv[o:o + G * q, o:o + G * q].reshape(G, q, G, q)[np.arange(G), :, np.arange(G)]
        cv.append(np.einsum("ab,gbc,dc->gad", lam, blk, lam))
    return {"psi": psi, "deviance": cur["dev"] * n, "hess": hess, "grad": cur["grad"],
            "num_iter": it, "status": status, "b": b, "condvar": cv}
