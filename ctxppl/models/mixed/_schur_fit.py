r"""Fitting the blocked (Schur) layout: starting values, BFGS, estimates on the working scale.

The deviance and its exact gradient come from :class:`~ctxppl.models.mixed._schur_scalar.
ScalarSchurHost` (every term scalar) or :class:`~ctxppl.models.mixed._schur_host.SchurHost`
(any terms); both run in float64 on the host.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ctxppl.models.mixed._schur import SchurStats
from ctxppl.models.mixed._schur_host import SchurHost, lambda_index
from ctxppl.models.mixed._schur_scalar import ScalarSchurHost, all_scalar

__all__ = ["fit_schur", "minimize_bfgs", "minimize_logscale", "moment_start", "diagonal_entries"]


def minimize_bfgs(fg: Any, x0: np.ndarray, *, gtol: float = 1e-7, xtol: float = 0.0,
                  max_iter: int = 100, hess0: str = "grad",
                  ) -> tuple[np.ndarray, dict[str, Any], int, int]:
    """BFGS started from a finite-difference Hessian.

    ``fg(x, grad) -> dict(dev=..., grad=...)`` (``dev`` already scaled to O(1); ``grad=False``
    skips the gradient, for backtracking). The starting Hessian is the forward difference of
    the exact gradient (``hess0="grad"``, ``d`` evaluations with gradient) or the second
    difference of values around the start (``"values"``, ``d (d + 1) / 2`` evaluations
    without gradient, cheaper when the gradient costs more than the value). Steps are capped
    at ``max(0.5, |x|/2)``, and directions of negative curvature are flipped to positive (as
    in the jitted Newton). Stops when ``max |g| <= gtol`` (when the evaluation carries a
    Monte Carlo ``grad_se``, ``max(|g| - grad_se / 4) <= gtol``) or when the next Newton step
    is below ``xtol`` in every coordinate (the point reached is then that close to the
    optimum).
    Returns the point, its evaluation, the number of iterations and a status (1 converged,
    2 max_iter, 3 no further decrease at working precision).
    """
    x = np.asarray(x0, float)
    cur = fg(x, True)
    if not np.isfinite(cur["dev"]):
        raise FloatingPointError("the deviance is not finite at the starting values")
    d = x.size
    H = np.empty((d, d))
    if hess0 == "values":
        h = 1e-3 * np.maximum(1.0, np.abs(x))
        f0, g0 = cur["dev"], cur["grad"]
        fi = np.empty(d)
        for i in range(d):
            fi[i] = fg(x + h[i] * np.eye(d)[i], False)["dev"]
            H[i, i] = 2.0 * (fi[i] - f0 - h[i] * g0[i]) / h[i] ** 2
        for i in range(d):
            for j in range(i):
                e = h[i] * np.eye(d)[i] + h[j] * np.eye(d)[j]
                fij = fg(x + e, False)["dev"]
                # f(x+hi+hj) - f(x+hi) - f(x+hj) + f(x) = hi hj H_ij + O(h^3)
                H[i, j] = H[j, i] = (fij - fi[i] - fi[j] + f0) / (h[i] * h[j])
    else:
        h = 1e-4 * np.maximum(1.0, np.abs(x))
        for i in range(d):
            e = np.zeros(d)
            e[i] = h[i]
            H[:, i] = (fg(x + e, True)["grad"] - cur["grad"]) / h[i]
        H = 0.5 * (H + H.T)
    status, it = 2, 0
    for it in range(1, max_iter + 1):  # noqa: B007 - it is reported
        g = cur["grad"]
        # converged: |g| below gtol or, for estimated gradients, a quarter of their Monte
        # Carlo SE (the root of the estimate is then found to 1/4 of its own error; stopping
        # at 2 SE left the iterates short of it on the side they came from)
        if np.max(np.abs(g) - 0.25 * cur.get("grad_se", 0.0)) <= gtol:
            status = 1
            break
        lam, V = np.linalg.eigh(H)
        lam = np.maximum(np.abs(lam), max(1e-8 * np.max(np.abs(lam)), 1e-12))
        step = -(V @ ((V.T @ g) / lam))
        if np.max(np.abs(step)) <= xtol and it > 1:
            status = 1
            break
        cap = np.maximum(0.5, 0.5 * np.abs(x))
        step *= min(1.0, float(np.min(cap / np.maximum(np.abs(step), 1e-300))))
        slope = float(g @ step)
        t, new = 1.0, None
        for k in range(40):
            cand = fg(x + t * step, k == 0)
            if np.isfinite(cand["dev"]) and cand["dev"] <= cur["dev"] + 1e-4 * t * slope:
                new = cand if k == 0 else fg(x + t * step, True)
                break
            t *= 0.5
            if t * np.max(np.abs(step)) <= 1e-10 * (1.0 + np.max(np.abs(x))):
                break  # no resolvable decrease along this direction
        if new is None:
            status = 3
            break
        s_, y_ = t * step, new["grad"] - g
        dec = cur["dev"] - new["dev"]
        x, cur = x + s_, new
        sy = float(s_ @ y_)
        if sy > 1e-12 * float(np.linalg.norm(s_) * np.linalg.norm(y_)):
            Hs = H @ s_
            H = H - np.outer(Hs, Hs) / float(s_ @ Hs) + np.outer(y_, y_) / sy
        if dec <= 4 * np.finfo(float).eps * max(1.0, abs(cur["dev"])) and \
                np.max(np.abs(s_)) <= 1e-8 * (1 + np.max(np.abs(x))):
            status = 3 if np.max(np.abs(cur["grad"])) > 1e-4 else 1
            break
    return x, {**cur, "hess": H}, it, status


def moment_start(blocks: list[tuple[np.ndarray, np.ndarray, int]], layout: Any, X: np.ndarray,
                 y: np.ndarray, theta0: np.ndarray) -> np.ndarray:
    r"""Starting ``theta``: one-way ANOVA estimates for the random intercepts.

    For each term with an all-ones column, :math:`\hat\sigma_b^2 = (MSB - MSW)/n_0` of the
    OLS residuals grouped by the term's factor (floored at 1% of :math:`MSW`), and
    :math:`	heta = \hat\sigma_b / \sqrt{MSW}`; other entries keep ``theta0`` (lme4's start).
    Crossed factors bias each one-way estimate, but it lands near the optimum where the
    identity start needs a dozen more steps (InstEval: 17 BFGS steps from 1, 6 from here).
    """
    th = np.array(theta0, float)
    res = y - X @ np.linalg.lstsq(X, y, rcond=None)[0]
    n = y.shape[0]
    i = 0
    for (Z, codes, G), (q, corr) in zip(blocks, layout.terms, strict=True):
        rows, cols = lambda_index(q, corr)
        for a in range(q):
            if not np.all(Z[:, a] == 1.0):
                continue
            cnt = np.bincount(codes, minlength=G).astype(float)
            sums = np.bincount(codes, res, G)
            mean = sums / np.maximum(cnt, 1)
            ssw = float(np.sum((res - mean[codes]) ** 2))
            msw = ssw / max(n - G, 1)
            msb = float(np.sum(cnt * (mean - res.mean()) ** 2)) / max(G - 1, 1)
            n0 = (n - float(np.sum(cnt ** 2)) / n) / max(G - 1, 1)
            sb2 = max((msb - msw) / n0, 0.01 * msw)
            pos = int(np.flatnonzero((rows == a) & (cols == a))[0])
            th[i + pos] = np.sqrt(sb2 / msw)
        i += len(rows)
    return th


def diagonal_entries(layout: Any) -> np.ndarray:
    """Which entries of ``theta`` sit on the diagonal of ``Lambda`` (lme4's order)."""
    out = []
    for q, corr in layout.terms:
        rows, cols = lambda_index(q, corr)
        out.append(rows == cols)
    return np.concatenate(out)


def minimize_logscale(evaluate: Any, x0: np.ndarray, logs: np.ndarray, n: float,
                      max_iter: int = 100, hess0: str | None = None,
                      ) -> tuple[np.ndarray, dict[str, Any], int, int]:
    """:func:`minimize_bfgs` of ``evaluate(x, grad)["dev"] / n`` with the entries ``logs``
    (positive, e.g. the diagonal of ``Lambda``) on the log scale (``hess0``: see there;
    by default ``"values"`` up to 3 parameters).

    The profiled deviance is closer to quadratic in the log of a relative SD (InstEval: 6
    gradient evaluations instead of 7, with dept:service 7 instead of 10). A component
    heading for zero (a singular fit) is finished on the linear scale, where the boundary
    is a point like any other. Returns the point (linear scale), its evaluation (with
    ``grad`` on the linear scale, divided by ``n``), the iterations and the status.
    """

    def make_fg(logs: np.ndarray) -> Any:
        def fg(x: np.ndarray, grad: bool) -> dict[str, Any]:
            th = np.where(logs, np.exp(np.where(logs, x, 0.0)), x)
            o = evaluate(th, grad=grad)
            if np.isfinite(o["dev"]):
                o = {**o, "dev": o["dev"] / n, "x": th}
                if grad:
                    o["grad_x"] = o["grad"] / n
                    o["grad"] = o["grad_x"] * np.where(logs, th, 1.0)
                    if "grad_se" in o:
                        o["grad_se_x"] = o["grad_se"] / n
                        o["grad_se"] = o["grad_se_x"] * np.where(logs, th, 1.0)
            return o
        return fg

    x0 = np.asarray(x0, float)
    d = x0.size
    if hess0 is None:  # d(d+1)/2 values cost less than d gradients when the gradient is
        hess0 = "values" if d <= 3 else "grad"  # ~2.5x a value (the dense Schur layout)
    z0 = np.where(logs, np.log(np.where(logs, x0, 1.0)), x0)
    _, cur, it, status = minimize_bfgs(make_fg(logs), z0, max_iter=max_iter, hess0=hess0,
                                       xtol=1e-6)
    if np.any(cur["x"][logs] < 1e-3):
        logs = np.zeros(d, bool)  # the second pass runs on the linear scale
        _, cur, it2, status = minimize_bfgs(make_fg(logs), cur["x"], max_iter=max_iter,
                                            hess0=hess0)
        it += it2
    # back to the linear scale: g_z = J g_x and H_z ~ J H_x J at the optimum, J = dx/dz
    J = np.where(logs, cur["x"], 1.0) if status != 2 and "hess" in cur else None
    cur = {**cur, "grad": cur["grad_x"]}
    if J is not None:
        cur["hess"] = cur["hess"] / np.outer(J, J)
    if "grad_se_x" in cur:
        cur["grad_se"] = cur["grad_se_x"]
    return cur["x"], cur, it, status


def fit_schur(st: SchurStats, theta0: np.ndarray, structure: Any, reml: bool,
              max_iter: int = 100) -> dict[str, Any]:
    """Minimise the profiled deviance of the blocked layout; every estimate (working scale).

    Same keys as :func:`~ctxppl.models.mixed._reml.fit_gaussian`, with ``b`` and
    ``condvar`` as per-block lists in design order.
    """
    fast = all_scalar(structure) and len(structure.first) == 1
    host = ScalarSchurHost(st, structure, reml) if fast else SchurHost(st, structure, reml)
    n = float(st.n)
    theta0 = np.asarray(theta0, float)
    logs = diagonal_entries(structure.layout) & (theta0 > 0)
    x, cur, it, status = minimize_logscale(host.evaluate, theta0, logs, n, max_iter)
    fin = host.complete(cur) if fast else cur  # the effects from the last evaluation
    p = host.p
    sigma2 = fin["r2"] / (n - p) if reml else fin["r2"] / n
    vcov = sigma2 * np.linalg.inv(fin["Pxx"])
    b: list[Any] = [None] * len(structure.sizes)
    cv: list[Any] = [None] * len(structure.sizes)
    j = 0
    for i in host.first:
        q = structure.sizes[i][1]
        b[i] = fin["b1"][:, j:j + q]
        cv[i] = sigma2 * fin["cv1"][:, j:j + q, j:j + q]
        j += q
    r = 0
    for k, i in enumerate(host.rest):
        G, q = structure.sizes[i]
        b[i] = fin["b2"][r:r + G * q].reshape(G, q)
        cv[i] = sigma2 * fin["cv2"][k]
        r += G * q
    return {"theta": x, "beta": fin["beta"], "sigma2": sigma2, "vcov": vcov, "b": b,
            "condvar": cv, "deviance": fin["dev"] * n, "grad": cur["grad"], "num_iter": it,
            "status": status}
