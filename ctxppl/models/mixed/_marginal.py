r"""The marginal-likelihood engine: exact (RE)ML for gaussian, Laplace for other families.

Chooses the layout (one grouping factor -> ``block``; several -> ``dense`` while
:math:`Q = \sum_k G_k q_k` stays below :data:`DENSE_LIMIT`), standardizes the gaussian
response (float32 keeps full accuracy that way), runs the jitted optimiser and maps every
estimate back to the data's scale as plain numpy arrays.

Group-level context with the default linear encoder enters exactly: a random effect with
prior mean :math:`W\tilde c_g` is the same model as cross-level interaction columns
:math:`z_{ik}\,\tilde c_{g(i)l}` in the fixed part with coefficients :math:`W` (the
"level-2 predictors" of multilevel modelling), so the marginal likelihood stays closed form.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from threadpoolctl import threadpool_limits

from ctxppl.models.mixed._formula import Design
from ctxppl.models.mixed._glmm_host import fit_laplace_host
from ctxppl.models.mixed._iterative import fit_iterative, iterative_stats
from ctxppl.models.mixed._laplace import GLMMData, fit_laplace
from ctxppl.models.mixed._linalg import ThetaLayout, make_lambda, theta_init, theta_size
from ctxppl.models.mixed._optim import CONVERGED, MAX_ITER
from ctxppl.models.mixed._refine import refine_laplace
from ctxppl.models.mixed._reml import DENSE_LIMIT, Structure, fit_gaussian, sufficient_stats
from ctxppl.models.mixed._schur import schur_order, schur_stats
from ctxppl.models.mixed._schur_fit import fit_schur, moment_start

SCHUR_LIMIT = 4000  # largest dense block (columns after the largest grouping factor)

__all__ = ["MarginalEstimate", "fit_marginal", "SingularFitWarning", "ConvergenceWarning",
           "context_columns", "choose_structure"]


class SingularFitWarning(UserWarning):
    """A random-effect covariance is singular (a variance at zero or a correlation of +-1)."""


class ConvergenceWarning(UserWarning):
    """The optimiser stopped before its gradient test was met."""


@dataclass
class MarginalEstimate:
    """Point estimates on the data's scale (plain numpy)."""

    beta: np.ndarray
    x_names: tuple[str, ...]
    vcov: np.ndarray
    covs: list[np.ndarray]  # per block: (q, q) covariance of the random effects
    b: list[np.ndarray]  # per block: (G, q) conditional modes
    condvar: list[np.ndarray]  # per block: (G, q, q)
    sigma: float | None
    phi: float | None
    criterion: str
    deviance: float
    loglik: float | None
    theta: np.ndarray
    num_iter: int
    converged: bool
    message: str
    seconds: dict[str, float] = field(default_factory=dict)
    n_context: int = 0  # trailing beta entries that are context (encoder) weights
    singular: list[str] = field(default_factory=list)
    layout: str = ""  # "block", "schur", "dense" or "iterative"
    # iterative layout only (stochastic estimates): Monte Carlo SEs and the probe count
    deviance_se: float | None = None
    theta_se: np.ndarray | None = None
    probes: int | None = None


def context_columns(design: Design) -> tuple[np.ndarray, list[str], list[tuple[int, int, int]]]:
    """Cross-level columns ``z_ik * c_std[g(i), l]`` for every block with a context.

    Returns the ``(n, k)`` columns, their names, and ``(block, coef, feature)`` per column.
    """
    cols, names, where = [], [], []
    for bi, blk in enumerate(design.blocks):
        info = design.contexts.get(blk.factor.name)
        if info is None:
            continue
        C = info.standardize(info.values)[blk.factor.codes]
        for a, coef in enumerate(blk.coef_names):
            for j, cname in enumerate(info.names):
                cols.append(blk.Z[:, a] * C[:, j])
                names.append(cname if coef == "Intercept" else f"{coef}:{cname}")
                where.append((bi, a, j))
    if not cols:
        return np.zeros((design.n, 0)), [], []
    return np.stack(cols, 1), names, where


def choose_structure(design: Design, layout: str | None = None) -> Structure:
    """The layout of the random-effect system (``layout`` forces one; ``None`` or ``"auto"``
    chooses as below, ``"direct"`` likewise but never ``iterative``).

    * one grouping factor: ``block`` (one small block per group);
    * several, gaussian: ``schur`` (blocked Cholesky, dense only over the columns after the
      largest factor) while those columns number at most :data:`SCHUR_LIMIT`; beyond it
      ``iterative`` (conjugate gradients and stochastic log-determinants over the sparse
      blocks, nothing dense; every term scalar, e.g. ``(1 | g)``) -- also, when chosen
      automatically, where the blocked Cholesky's pairs exceed ``PAIR_LIMIT`` (found while
      computing its statistics);
    * several, other families: ``dense`` while ``sum(G_k q_k) <=`` :data:`DENSE_LIMIT`.
    """
    groups = {b.factor.name for b in design.blocks}
    theta_layout = ThetaLayout(tuple((b.q, bool(b.term.correlated) and b.q > 1)
                                     for b in design.blocks))
    sizes = tuple((b.factor.size, b.q) for b in design.blocks)
    gaussian = design.family.name == "gaussian"
    first = schur_order([(b.factor.name, b.factor.size, b.q) for b in design.blocks])
    R = sum(G * q for i, (G, q) in enumerate(sizes) if i not in first)
    scalar = all(q == 1 for _, q in sizes)
    if layout in (None, "auto", "direct"):
        auto = layout != "direct"
        if len(groups) == 1:
            layout = "block"
        elif gaussian:
            layout = "iterative" if auto and R > SCHUR_LIMIT and scalar else "schur"
        else:
            layout = "dense"
    if layout == "block":
        if len(groups) > 1:
            raise ValueError(f"layout 'block' needs one grouping factor; got {sorted(groups)}.")
        return Structure("block", theta_layout, sizes)
    if layout == "iterative":
        if not gaussian or len(groups) == 1 or not scalar:
            raise ValueError(
                "solver='iterative' fits gaussian models with several grouping factors and "
                "scalar terms only (such as (1 | a) + (1 | b)); got family "
                f"{design.family.name!r}, grouping factors {sorted(groups)} and terms "
                f"{[b.term.text for b in design.blocks]}.")
        return Structure("iterative", theta_layout, sizes, first)
    if layout == "schur":
        if R > SCHUR_LIMIT:
            raise NotImplementedError(
                f"the blocked Cholesky for the grouping factors {sorted(groups)} keeps a dense "
                f"{R} x {R} block for the factors after the largest one "
                f"({design.blocks[first[0]].factor.name!r}), above the limit {SCHUR_LIMIT}. "
                + ("Use solver='iterative' (stochastic log-likelihood, nothing dense) or "
                   if scalar else "With scalar terms only (such as (1 | g)) the iterative "
                   "solver would fit it; otherwise ")
                + "fit this model with method='laplace', 'svi' (minibatches) or 'nuts'.")
        return Structure("schur", theta_layout, sizes, first)
    Q = sum(G * q for G, q in sizes)
    if Q > DENSE_LIMIT:
        raise NotImplementedError(
            f"the exact marginal likelihood of a {design.family.name} model with several "
            f"grouping factors ({sorted(groups)}) uses a dense {Q} x {Q} system, above the "
            f"limit {DENSE_LIMIT}. Fit this model with method='laplace', 'svi' (minibatches) "
            "or 'nuts' instead.")
    return Structure("dense", theta_layout, sizes)


def _dense_cols(design: Design) -> tuple[np.ndarray, np.ndarray]:
    vals, cols, off = [], [], 0
    for b in design.blocks:
        G, q = b.factor.size, b.q
        vals.append(b.Z)
        cols.append(off + b.factor.codes[:, None] * q + np.arange(q)[None, :])
        off += G * q
    return np.concatenate(vals, 1), np.concatenate(cols, 1).astype(np.int32)


def _dtype() -> Any:
    return jnp.result_type(float)


def _check_rank(X: np.ndarray, names: list[str]) -> None:
    """Raise when a fixed-effect column is a linear combination of the others (via the
    small Gram matrix ``X^T X`` of the column-scaled design, not an SVD of ``X``)."""
    if X.shape[1] == 0:
        return
    Xs = X / np.maximum(np.abs(X).max(axis=0), 1e-300)
    gram = Xs.T @ Xs
    ev = np.linalg.eigvalsh(gram)
    if ev[0] > 1e-10 * max(ev[-1], 1e-300):
        return
    bad, keep = [], []
    for j in range(X.shape[1]):
        sub = gram[np.ix_(keep + [j], keep + [j])]
        e = np.linalg.eigvalsh(sub)
        if e[0] > 1e-10 * max(e[-1], 1e-300):
            keep.append(j)
        else:
            bad.append(names[j])
    raise ValueError(f"the fixed-effect design is rank deficient: {bad} are linear "
                     "combinations of other columns (or of the context effects); remove "
                     "them from `formula`.")


def _singular_terms(design: Design, lams: list[np.ndarray], tol: float = 1e-4) -> list[str]:
    out = []
    for blk, lam in zip(design.blocks, lams, strict=True):
        d = np.abs(np.diag(lam))
        bad = [blk.coef_names[a] for a in range(len(d)) if d[a] < tol]
        if bad:
            out.append(f"{blk.term.text} (grouping factor `{blk.factor.name}`): "
                       f"{'SD' if len(d) == 1 else 'variance-covariance'} of {bad} at zero"
                       + (" or a correlation of +-1" if len(d) > 1 else ""))
    return out


def fit_marginal(design: Design, *, reml: bool, max_iter: int = 100,
                 layout: str | None = None) -> MarginalEstimate:
    """Fit ``design`` by exact (RE)ML (gaussian) or Laplace marginal ML (other families).

    ``layout`` forces the random-effect layout (see :func:`choose_structure`).
    """
    t0 = time.perf_counter()
    auto = layout in (None, "auto")
    structure = choose_structure(design, layout)
    Xc, cnames, _ = context_columns(design)
    X = np.concatenate([design.X, Xc], 1) if Xc.shape[1] else design.X
    names = list(design.x_names) + cnames
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"context effect(s) {dup} duplicate fixed-effect columns of `formula`; "
                         "remove them from the fixed part (the context encoder carries them).")
    _check_rank(X, names)
    n, p = X.shape
    off = np.zeros(n) if design.offset is None else design.offset
    w = design.weights
    dt = _dtype()
    if structure.mode == "block":
        blk0 = design.blocks[0]
        Z = np.concatenate([b.Z for b in design.blocks], 1)
        cols, Q = blk0.factor.codes, blk0.factor.size
    elif structure.mode in ("schur", "iterative"):
        Z, cols, Q = None, None, sum(G * q for G, q in structure.sizes)
    else:
        Z, cols = _dense_cols(design)
        Q = sum(G * q for G, q in structure.sizes)
    layout = structure.layout
    th0 = theta_init(layout)
    timing: dict[str, float] = {}
    if design.family.name == "gaussian":
        est = _fit_gauss(design, structure, X, Z, cols, Q, off, w, reml, th0, dt, max_iter,
                         auto, timing)
    else:
        if reml:
            raise ValueError("`reml=True` applies to family='gaussian' only; GLMMs maximise the "
                             "Laplace-approximate marginal likelihood (as glmer).")
        est = _fit_glmm(design, structure, X, Z, cols, Q, off, w, th0, dt, max_iter, timing)
    est.x_names = tuple(names)
    est.n_context = len(cnames)
    est.layout = est.layout or structure.mode
    timing["total"] = time.perf_counter() - t0
    est.seconds = timing
    return est


def _status(status: int, grad: np.ndarray) -> tuple[bool, str]:
    gmax = float(np.max(np.abs(grad))) if grad.size else 0.0
    if status == CONVERGED:
        return True, "converged: gradient below tolerance"
    if status == MAX_ITER:
        return False, f"stopped at max_iter with max |gradient| {gmax:.2e}"
    ok = gmax < 1e-3
    return ok, ("converged: no further decrease at working precision "
                f"(max |gradient| {gmax:.1e})" if ok else
                f"line search failed with max |gradient| {gmax:.2e}")


def _fit_gauss(design, structure, X, Z, cols, Q, off, w, reml, th0, dt, max_iter, auto, timing):  # noqa: ANN001, ANN202
    t = time.perf_counter()
    y = design.y - off
    has_int = design.intercept_column() is not None
    ww = np.ones_like(y) if w is None else w
    m = float(np.sum(ww * y) / np.sum(ww)) if has_int else 0.0
    s = float(np.sqrt(np.sum(ww * (y - m) ** 2) / np.sum(ww)))
    s = s if s > 0 else 1.0
    yc = (y - m) / s
    if structure.mode == "block":
        # Groups padded to a size bucket with all-zero statistics (they add exactly nothing
        # to the deviance): data sets of similar size share one compiled program.
        G_pad = _bucket(Q)
        st = sufficient_stats("block", Z, cols, X, yc, w, G_pad, Z.shape[1])
        run_structure = structure._replace(sizes=tuple((G_pad, q) for _, q in structure.sizes))
    elif structure.mode in ("schur", "iterative"):
        blocks = [(b.Z, b.factor.codes, b.factor.size) for b in design.blocks]
        try:
            stats = schur_stats if structure.mode == "schur" else iterative_stats
            st = stats(blocks, structure.first, X, yc, w)
        except NotImplementedError:  # too many pairs for the blocked Cholesky (PAIR_LIMIT)
            if not (auto and structure.mode == "schur"
                    and all(q == 1 for _, q in structure.sizes)):
                raise
            structure = structure._replace(mode="iterative")  # "auto": nothing dense
            st = iterative_stats(blocks, structure.first, X, yc, w)
        run_structure = structure
    else:
        st = sufficient_stats("dense", Z, cols, X, yc, w, Q, 1)
        run_structure = structure
    timing["stats"] = time.perf_counter() - t
    t = time.perf_counter()
    if structure.mode in ("schur", "iterative"):
        # float64 on the host (LAPACK), exact gradients, nothing to compile. One BLAS
        # thread: LAPACK's threads spin on a busy machine (a 1,128 x 1,128 Cholesky took
        # 88 ms with one thread and 1.9 s with two at load 9 on 2 cores) and gain little at
        # this size on a quiet one.
        th0 = moment_start([(b.Z, b.factor.codes, b.factor.size) for b in design.blocks],
                           structure.layout, X, yc, th0)
        fit = fit_schur if structure.mode == "schur" else fit_iterative
        with threadpool_limits(1, user_api="blas"):
            out = fit(st, th0, structure, bool(reml), max_iter)
    else:
        st = jax.tree_util.tree_map(lambda a: np.asarray(a, dt), st)  # on the host: no programs
        out = jax.device_get(fit_gaussian(st, np.asarray(th0, dt), run_structure, bool(reml),
                                          max_iter))
    if structure.mode == "block":  # drop the padding groups
        out = {**out, "b": out["b"][:Q], "condvar": out["condvar"][:Q]}
    timing["optimize"] = time.perf_counter() - t
    n, p = X.shape
    theta = np.asarray(out["theta"], float)
    beta = np.asarray(out["beta"], float) * s
    j = design.intercept_column()
    if j is not None:
        beta[j] += m
    sigma2 = float(out["sigma2"]) * s * s
    vcov = np.asarray(out["vcov"], float) * s * s
    lams = [np.asarray(lam, float) for lam in make_lambda(np.asarray(theta), structure.layout)]
    covs = [sigma2 * lam @ lam.T for lam in lams]
    if structure.mode != "block":
        b = [np.asarray(v, float) * s for v in out["b"]]
        cv = [np.asarray(v, float) * s * s for v in out["condvar"]]
    else:
        b, cv = _split_effects(structure, np.asarray(out["b"], float) * s,
                               np.asarray(out["condvar"], float) * s * s)
    nn = n - p if reml else n
    dev = float(out["deviance"]) + nn * 2.0 * np.log(s)
    if w is not None:
        dev -= float(np.sum(np.log(w)))
    ok, msg = _status(int(out["status"]), np.asarray(out["grad"]))
    est = MarginalEstimate(beta, (), vcov, covs, b, cv, float(np.sqrt(sigma2)), None,
                           "REML" if reml else "ML", dev, None if reml else -0.5 * dev, theta,
                           int(out["num_iter"]), ok, msg,
                           singular=_singular_terms(design, lams), layout=structure.mode)
    if structure.mode == "iterative" and out["exact"]:
        est.message += ("; solver 'iterative' with exact traces (no more columns after the "
                        "largest factor than probes)")
    elif structure.mode == "iterative":
        est.deviance_se = float(out["deviance_se"])
        est.theta_se = np.asarray(out["theta_se"], float)
        est.probes = int(out["probes"])
        est.message += (f"; solver 'iterative': the {est.criterion} criterion is a stochastic "
                        f"estimate ({est.probes} probes), Monte Carlo SE "
                        f"{est.deviance_se:.3g} (of the log-likelihood {est.deviance_se / 2:.3g})")
    return est


def _split_effects(structure: Structure, b: np.ndarray, cv: np.ndarray):  # noqa: ANN202
    """Per-block ``(G, q)`` modes and ``(G, q, q)`` conditional covariances."""
    if structure.mode == "block":
        out_b, out_cv, i = [], [], 0
        for _, q in structure.sizes:
            out_b.append(b[:, i:i + q])
            out_cv.append(cv[:, i:i + q, i:i + q])
            i += q
        return out_b, out_cv
    # the dense layout of a GLMM: flat vectors in Q order
    out_b, out_cv, i = [], [], 0
    for G, q in structure.sizes:
        out_b.append(b[i:i + G * q].reshape(G, q))
        out_cv.append(cv[i:i + G * q].reshape(G, q, q))
        i += G * q
    return out_b, out_cv


def _bucket(n: int) -> int:
    """``n`` rounded up to a multiple of a quarter of its leading power of two."""
    if n <= 64:
        return 64
    step = 1 << (int(np.log2(n)) - 2)
    return -(-n // step) * step


def _glm_start(design: Design, X: np.ndarray) -> np.ndarray:
    """Fixed effects start: intercept at the link of the mean response, slopes at zero."""
    beta = np.zeros(X.shape[1])
    j = design.intercept_column()
    if j is not None:
        fam = design.family
        y = design.y / (1.0 if design.trials is None else design.trials)
        m = float(np.clip(np.mean(y), 1e-3, None))
        if fam.link == "log":
            beta[j] = np.log(m)
        elif fam.link in ("logit", "probit"):
            m = float(np.clip(m, 1e-3, 1 - 1e-3))
            beta[j] = np.log(m / (1 - m)) if fam.link == "logit" else float(
                __import__("scipy.stats").stats.norm.ppf(m))
    return beta


def _glmm_start(design: Design, th0: np.ndarray) -> np.ndarray:
    fam = design.family
    extra = []
    if fam.name == "negative_binomial":
        y = design.y
        mu, var = y.mean(), y.var()
        phi = mu * mu / (var - mu) if var > mu * 1.01 else 100.0
        extra = [np.log(np.clip(phi, 1e-2, 1e4))]
    return np.concatenate([th0, extra]) if extra else th0


def _fit_glmm(design, structure, X, Z, cols, Q, off, w, th0, dt, max_iter, timing):  # noqa: ANN001, ANN202
    t = time.perf_counter()
    fam = design.family
    n, p = X.shape
    trials = design.trials
    # Pad the observations to a size bucket (<= 25% more rows, weight 0): data sets of
    # similar size then share one compiled program.
    n_pad = _bucket(n)
    pad = n_pad - n

    def padded(a, value=0.0):  # noqa: ANN001, ANN202
        a = np.asarray(a)
        return np.concatenate([a, np.full((pad,) + a.shape[1:], value, a.dtype)]) if pad else a

    ww = np.ones(n) if w is None else w
    psi0 = np.concatenate([_glm_start(design, X), _glmm_start(design, th0)])
    timing["stats"] = time.perf_counter() - t
    t = time.perf_counter()
    if structure.mode == "dense":  # several grouping factors: float64 on the host
        out = fit_laplace_host(fam, np.asarray(design.y, float), X, Z, cols, ww, off,
                               None if trials is None else np.asarray(trials, float), structure,
                               Q, psi0, max_iter)
        timing["optimize"] = time.perf_counter() - t
        return _glmm_estimate(design, structure, X, out, out["b"], out["condvar"], 0.0)
    # NumPy arrays on the host: converting them with jnp would compile a program each
    data = GLMMData(*(np.asarray(padded(a), dt) for a in (design.y, X, Z)),
                    np.asarray(padded(cols, 0), np.int32), np.asarray(padded(ww), dt),
                    np.asarray(padded(off), dt),
                    None if trials is None else np.asarray(padded(trials, 1.0), dt))
    out = jax.device_get(fit_laplace(data, np.asarray(psi0, dt), structure, fam, Q, max_iter))
    # the last Newton steps and the reported deviance in float64 (NumPy)
    u_fit = np.asarray(out["u"], float)[:Q] if structure.mode == "block" else \
        np.asarray(out["u"], float)
    ref = refine_laplace(fam, design.y, X, Z, cols, ww, off, trials, structure, Q,
                         np.asarray(out["psi"], float), np.asarray(out["hess"], float), u_fit)
    out = {**out, "psi": ref["psi"], "deviance": ref["deviance"], "u": ref["u"],
           "L": ref["L"]}
    timing["optimize"] = time.perf_counter() - t
    theta = np.asarray(out["psi"], float)[p:p + theta_size(structure.layout)]
    lams = [np.asarray(lam, float) for lam in make_lambda(np.asarray(theta), structure.layout)]
    u = np.asarray(out["u"], float)
    lam = _block_diag_np(lams)
    Linv = np.linalg.inv(np.asarray(out["L"], float))  # block layout: (G, q, q) factors
    cv = np.einsum("ab,gbc,dc->gad", lam, np.einsum("gba,gbc->gac", Linv, Linv), lam)
    b, cv = _split_effects(structure, u @ lam.T, cv)
    return _glmm_estimate(design, structure, X, out, b, cv, float(out["inner_err"]))


def _glmm_estimate(design, structure, X, out, b, cv, inner_err):  # noqa: ANN001, ANN202
    """The estimate of a GLMM fit: ``out`` has ``psi``, ``hess`` (of the deviance),
    ``deviance``, ``grad``, ``status``, ``num_iter``; ``b``/``cv`` per term."""
    p = X.shape[1]
    psi = np.asarray(out["psi"], float)
    nth = theta_size(structure.layout)
    beta, theta = psi[:p], psi[p:p + nth]
    phi = float(np.exp(psi[-1])) if design.family.name == "negative_binomial" else None
    H = np.asarray(out["hess"], float)
    H = 0.5 * (H + H.T)
    try:
        vpsi = 2.0 * np.linalg.inv(H)
        vcov = vpsi[:p, :p]
    except np.linalg.LinAlgError:
        vcov = np.full((p, p), np.nan)
    lams = [np.asarray(lam, float) for lam in make_lambda(np.asarray(theta), structure.layout)]
    covs = [lam @ lam.T for lam in lams]
    ok, msg = _status(int(out["status"]), np.asarray(out["grad"]))
    if inner_err > 1e-3:
        ok, msg = False, msg + f"; conditional modes not converged ({inner_err:.1e})"
    dev = float(out["deviance"])
    return MarginalEstimate(beta, (), vcov, covs, b, cv, None, phi, "Laplace", dev, -0.5 * dev,
                            theta, int(out["num_iter"]), ok, msg,
                            singular=_singular_terms(design, lams))


def _block_diag_np(mats: list[np.ndarray]) -> np.ndarray:
    q = sum(m.shape[0] for m in mats)
    out = np.zeros((q, q))
    i = 0
    for m in mats:
        k = m.shape[0]
        out[i:i + k, i:i + k] = m
        i += k
    return out


def warn_fit(est: MarginalEstimate, stacklevel: int) -> None:
    """Emit the singular-fit and convergence warnings of a marginal fit."""
    for text in est.singular:
        warnings.warn(f"singular fit: {text}. The estimate is on the boundary; consider "
                      "simplifying the random-effect term.", SingularFitWarning,
                      stacklevel=stacklevel)
    if not est.converged:
        warnings.warn(f"mixed model fit did not converge: {est.message}.", ConvergenceWarning,
                      stacklevel=stacklevel)
