r"""Convergence diagnostics of posterior draws that a user can act on.

Which sites are checked: every latent ``sample`` site and every per-sample ``deterministic``
site (a ``ctx.contextual`` site, or any deterministic inside a plate) -- *not* the weights of
a Bayesian encoder (``ctx.encoder(..., prior=...)``), whose hidden units can swap labels
between chains without changing the model, so their R-hat says nothing about the per-sample
parameters a user reads.

R-hat and ESS follow Vehtari, Gelman, Simpson, Carpenter and Bürkner (2021), "Rank-normalization,
folding, and localization: an improved R-hat for assessing convergence of MCMC" (Bayesian
Analysis 16(2)): chains are split in halves, draws are rank-normalised, and numpyro's
:func:`~numpyro.diagnostics.gelman_rubin` and :func:`~numpyro.diagnostics.effective_sample_size`
are applied -- ArviZ's bulk R-hat (``az.rhat(method="z_scale")``) and bulk ESS
(``az.ess(method="bulk")``, the ``ess_bulk`` column of ``az.summary``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ctxppl.infer._sites import ModelStructure

__all__ = ["RHAT_MAX", "ESS_MIN", "split_rhat", "bulk_ess", "checked_sites", "site_diagnostics",
           "mixing_problems", "no_uncertainty_message", "ROUTES"]

RHAT_MAX = 1.01
ESS_MIN = 100.0

# What a user can do when a per-sample site has no posterior spread (named in messages).
ROUTES = ("the calibrated route: a Gaussian-process encoder with its priors, "
          "`gp = ctx.nn.HSGP(...); ctx.encoder(name, gp, prior=gp.prior)`, fitted with "
          "method='marginal'; or any Bayesian encoder (`prior=`) with method='nuts'|'svi'|"
          "'laplace'; or refits on resampled data, `ctx.fit_many(..., bootstrap=True, "
          "plate=...)` (overconfident away from the data); in the estimators, "
          "`n_bootstraps >= 2` or inference='svi'|'laplace'|'nuts'")


def _split(x: np.ndarray) -> np.ndarray:
    """``(chains, draws, ...)`` -> ``(2 chains, draws // 2, ...)`` (middle draw dropped)."""
    half = x.shape[1] // 2
    return np.concatenate([x[:, :half], x[:, x.shape[1] - half:]], axis=0)


def _rank_normalize(x: np.ndarray) -> np.ndarray:
    """Normal scores of the ranks over all chains and draws, per element."""
    c, d = x.shape[:2]
    flat = x.reshape((c * d, -1))
    from scipy.special import ndtri  # lazily: scipy.stats costs ~1 s of `import ctxppl`
    from scipy.stats import rankdata

    r = rankdata(flat, axis=0, method="average")
    z = ndtri((r - 0.375) / (c * d + 0.25))
    return z.reshape(x.shape)


def _on_split_ranks(stat: Any, x: Any, what: str) -> np.ndarray:
    """``stat`` of the rank-normalised split chains of draws ``x`` ``(chains, draws, ...)``."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim < 2 or x.shape[1] < 4:
        raise ValueError(f"{what} needs draws of shape (chains, draws >= 4, ...); got "
                         f"shape {x.shape}.")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(stat(_rank_normalize(_split(x))))


def split_rhat(x: Any) -> np.ndarray:
    r"""Rank-normalised split R-hat ("bulk" R-hat) of draws ``x``, shape ``(chains, draws, ...)``.

    Each chain is split in halves (so one chain works too), the draws are replaced by the
    normal scores of their ranks, and numpyro's :func:`~numpyro.diagnostics.gelman_rubin` is
    applied per element. Constant draws give NaN. This is ArviZ's
    ``az.rhat(..., method="z_scale")``; ArviZ's default ``"rank"`` also takes the folded (tail)
    R-hat, which on runs of default length is too noisy for a 1.01 threshold (it exceeded 1.01
    in 5 of 12 default NUTS runs of the well-mixed normal-normal model, bulk R-hat in none).

    Examples:
        >>> import numpy as np
        >>> from ctxppl.infer._diagnostics import split_rhat
        >>> good = np.random.default_rng(0).normal(size=(2, 1000))
        >>> bool(split_rhat(good) < 1.01)
        True
        >>> stuck = np.stack([good[0], good[1] + 3.0])  # two chains in two places
        >>> bool(split_rhat(stuck) > 1.5)
        True
    """
    from numpyro.diagnostics import gelman_rubin  # lazily: it imports scipy.fft

    return _on_split_ranks(gelman_rubin, x, "split R-hat")


def bulk_ess(x: Any) -> np.ndarray:
    """Bulk effective sample size of draws ``x`` with shape ``(chains, draws, ...)``.

    Examples:
        >>> import numpy as np
        >>> from ctxppl.infer._diagnostics import bulk_ess
        >>> iid = np.random.default_rng(0).normal(size=(2, 500))
        >>> bool(800 < bulk_ess(iid) < 1200)
        True
    """
    from numpyro.diagnostics import effective_sample_size

    return _on_split_ranks(effective_sample_size, x, "bulk ESS")


def checked_sites(structure: ModelStructure, sampled: Any) -> tuple[list[str], list[str]]:
    """``(checked, per_sample)``: the sampled sites whose mixing is checked (latents that are
    not encoder weights, per-sample deterministic sites) and the per-sample ones among them
    (inside at least one plate)."""
    checked, per_sample = [], []
    for name in sampled:
        info = structure.sites.get(name)
        if info is None or name.startswith("_") or info.encoder:
            continue
        if info.type == "deterministic" and not info.plates:
            continue  # a global function of the latents: its inputs are checked
        if info.type not in ("sample", "deterministic") or info.observed:
            continue
        checked.append(name)
        if info.plates:
            per_sample.append(name)
    return checked, per_sample


def _worst(values: np.ndarray, pick: Any) -> tuple[float, list[int]]:
    idx = np.unravel_index(int(pick(values)), values.shape) if values.ndim else ()
    return float(values[idx] if values.ndim else values), [int(i) for i in idx]


def site_diagnostics(samples: dict[str, Any], sites: list[str]) -> dict[str, Any]:
    """R-hat (max over a site's elements), bulk ESS (min) and where they occur, per site.

    Returns ``{"r_hat": {site: float}, "ess": {site: float}, "r_hat_at": {site: index},
    "ess_at": {site: index}, "no_uncertainty": [sites whose draws are all identical]}``.
    A site with fewer than 4 draws per chain gets NaN.
    """
    r_hat, ess, r_at, e_at, constant = {}, {}, {}, {}, []
    for name in sites:
        v = np.asarray(samples[name])
        if not np.issubdtype(v.dtype, np.floating):
            v = v.astype(np.float64)
        if v.size == 0:
            continue
        if v.shape[1] < 4:
            r_hat[name] = ess[name] = float("nan")
            continue
        spread = np.max(np.ptp(v.reshape((-1,) + v.shape[2:]), axis=0))
        if spread <= 16 * np.finfo(v.dtype).eps * max(1.0, float(np.max(np.abs(v)))):
            constant.append(name)
            r_hat[name] = ess[name] = float("nan")
            continue
        r = split_rhat(v)
        e = bulk_ess(v)
        if np.all(np.isnan(r)):
            r_hat[name] = ess[name] = float("nan")
            continue
        r_hat[name], r_at[name] = _worst(r, np.nanargmax)
        ess[name], e_at[name] = _worst(e, np.nanargmin)
    return {"r_hat": r_hat, "ess": ess, "r_hat_at": r_at, "ess_at": e_at,
            "no_uncertainty": constant}


def _where(name: str, at: dict[str, list[int]]) -> str:
    idx = at.get(name)
    return f" at index {list(idx)}" if idx else ""


def mixing_problems(diagnostics: dict[str, Any]) -> list[str]:
    """One sentence per checked site whose R-hat exceeds ``RHAT_MAX`` or whose bulk ESS is
    below ``ESS_MIN`` (the worst element named), per-sample sites first."""
    per = set(diagnostics.get("per_sample_sites", ()))
    out = []
    names = sorted(diagnostics.get("r_hat", {}), key=lambda n: (n not in per, n))
    for name in names:
        r = diagnostics["r_hat"][name]
        e = diagnostics["ess"].get(name, float("nan"))
        kind = "per-sample site" if name in per else "site"
        bad = []
        if np.isfinite(r) and r > RHAT_MAX:
            bad.append(f"r_hat {r:.3f} > {RHAT_MAX}{_where(name, diagnostics.get('r_hat_at', {}))}")
        if np.isfinite(e) and e < ESS_MIN:
            bad.append(f"bulk ESS {e:.0f} < {ESS_MIN:.0f}"
                       f"{_where(name, diagnostics.get('ess_at', {}))}")
        if bad:
            out.append(f"{kind} '{name}': " + ", ".join(bad))
    return out


def no_uncertainty_message(sites: list[str], what: str) -> str:
    """Why ``sites`` have zero-width posterior draws, and which routes give them spread."""
    names = ", ".join(f"'{s}'" for s in sites)
    return (f"{what}: per-sample site(s) {names} carry no posterior uncertainty -- every "
            "draw is identical, because they are deterministic functions of point-estimated "
            "parameters (an encoder without a prior), so any interval from them has zero "
            f"width. For per-sample uncertainty use {ROUTES}.")
