r"""``MixedResult``: the tables, group effects, predictions and ArviZ export of a mixed model.

One class for both engines. Internally every quantity is stored as draws with leading
``(chain, draw)`` axes -- point fits (the marginal engine, MAP) have one chain and one draw,
and carry standard errors from the curvature instead -- so every accessor is written once.
"""

from __future__ import annotations

from collections.abc import Callable
from statistics import NormalDist
from typing import Any

import jax.numpy as jnp
import numpy as np
import pandas as pd

from ctxppl.infer._arviz import from_groups
from ctxppl.models.mixed._families import Family
from ctxppl.models.mixed._formula import Design

__all__ = ["MixedResult"]


def _corr_from_cov(S: np.ndarray) -> np.ndarray:
    sd = np.sqrt(np.clip(np.diagonal(S, axis1=-2, axis2=-1), 0, None))
    with np.errstate(invalid="ignore", divide="ignore"):
        return S / (sd[..., :, None] * sd[..., None, :])


class MixedResult:
    r"""A fitted mixed model (returned by :func:`ctxppl.mixed`).

    Attributes:
        formula: The formula as given.
        family: The :class:`~ctxppl.models.mixed.Family`.
        method: ``"map"``, ``"laplace"``, ``"svi"`` or ``"nuts"``.
        engine: ``"marginal"`` (random effects integrated out: exact (RE)ML for gaussian,
            Laplace for GLMMs) or ``"program"`` (the NumPyro program fitted by ``ctx.fit``).
        criterion: ``"REML"``, ``"ML"``, ``"Laplace"`` (marginal engine) or ``None``.
        fit: The underlying :class:`ctxppl.Fit` (program engine) or ``None``.
        program: The :class:`~ctxppl.models.mixed.MixedProgram` (program engine) or ``None``.
        diagnostics: Convergence information and timings; ``"stochastic"`` is True when the
            criterion is a Monte Carlo estimate (``solver="iterative"``), with
            ``"deviance_se"``, ``"theta_se"`` (of the relative SDs) and ``"probes"``.
        deviance_se: Monte Carlo standard error of ``deviance`` (``None`` when exact).
        loglik_se: Monte Carlo standard error of ``loglik`` (``None`` when exact or REML).

    Examples:
        >>> import numpy as np, pandas as pd, ctxppl as ctx
        >>> rng = np.random.default_rng(0)
        >>> g = np.repeat(np.arange(20), 10)
        >>> df = pd.DataFrame({"g": g, "x": rng.normal(size=200)})
        >>> df["y"] = 1 + 2 * df.x + rng.normal(size=20)[g] + 0.5 * rng.normal(size=200)
        >>> res = ctx.mixed("y ~ x + (1 | g)", df)
        >>> res.fixed_effects["estimate"].round(1).tolist()
        [1.1, 2.0]
        >>> res.ranef().shape
        (20, 1)
    """

    def __init__(self, *, design: Design, method: str, engine: str, draws: dict[str, np.ndarray],
                 names: tuple[str, ...], point: bool, vcov: np.ndarray | None = None,
                 condvar: dict[str, np.ndarray] | None = None, criterion: str | None = None,
                 deviance: float | None = None, loglik: float | None = None,
                 loc_fns: dict[str, Callable] | None = None, fit: Any = None,
                 program: Any = None, diagnostics: dict[str, Any] | None = None,
                 context_weights: dict[str, np.ndarray] | None = None, level: float = 0.95):
        self.design = design
        self.formula = design.parsed.text
        self.family: Family = design.family
        self.method = method
        self.engine = engine
        self._draws = draws
        self._names = tuple(names)
        self._point = point
        self._vcov = vcov
        self._condvar = condvar or {}
        self.criterion = criterion
        self.deviance = deviance
        self.loglik = loglik
        self._loc_fns = loc_fns or {}
        self.fit = fit
        self.program = program
        self.diagnostics = diagnostics or {}
        self.deviance_se: float | None = self.diagnostics.get("deviance_se")
        self.loglik_se: float | None = (None if self.deviance_se is None or loglik is None
                                        else 0.5 * self.deviance_se)
        self._context_weights = context_weights or {}
        self.level = level

    # ------------------------------------------------------------------ basics
    @property
    def converged(self) -> bool:
        """Whether the fit finished cleanly."""
        return bool(self.diagnostics.get("converged", True))

    @property
    def nobs(self) -> int:
        return self.design.n

    @property
    def ngroups(self) -> dict[str, int]:
        """Number of levels of every grouping factor."""
        return {b.factor.name: b.factor.size for b in self.design.blocks}

    def _flat(self, a: np.ndarray) -> np.ndarray:
        return a.reshape((-1,) + a.shape[2:])

    def _summ(self, a: np.ndarray) -> np.ndarray:
        return self._flat(a).mean(axis=0)

    # ------------------------------------------------------------------ fixed effects
    @property
    def params(self) -> pd.Series:
        """Fixed-effect estimates (posterior means for posterior fits)."""
        p = self.design.p
        return pd.Series(self._summ(self._draws["beta"])[:p], index=list(self._names[:p]),
                         name="estimate")

    @property
    def vcov(self) -> pd.DataFrame:
        """Covariance of the fixed effects (``sigma^2 (X^T V^{-1} X)^{-1}``, inverse Hessian,
        or the posterior covariance)."""
        p = self.design.p
        names = list(self._names[:p])
        if self._vcov is not None:
            V = self._vcov[:p, :p]
        else:
            flat = self._flat(self._draws["beta"])[:, :p]
            V = np.cov(flat, rowvar=False).reshape(p, p) if flat.shape[0] > 1 else np.full(
                (p, p), np.nan)
        return pd.DataFrame(V, index=names, columns=names)

    def _table(self, lo: int, hi: int, names: list[str]) -> pd.DataFrame:
        a = (1 - self.level) / 2
        lab_lo, lab_hi = f"{100 * a:g}%", f"{100 * (1 - a):g}%"
        flat = self._flat(self._draws["beta"])[:, lo:hi]
        if self._point:
            est = flat[0]
            se = (np.sqrt(np.clip(np.diag(self._vcov)[lo:hi], 0, None)) if self._vcov is not None
                  else np.full(hi - lo, np.nan))
            zc = NormalDist().inv_cdf(1 - a)
            stat_name = "t_value" if self.family.name == "gaussian" else "z_value"
            with np.errstate(divide="ignore", invalid="ignore"):
                t = est / se
            return pd.DataFrame({"estimate": est, "std_error": se, stat_name: t,
                                 lab_lo: est - zc * se, lab_hi: est + zc * se}, index=names)
        return pd.DataFrame({"estimate": flat.mean(0), "std_error": flat.std(0, ddof=1),
                             lab_lo: np.quantile(flat, a, axis=0),
                             lab_hi: np.quantile(flat, 1 - a, axis=0)}, index=names)

    @property
    def fixed_effects(self) -> pd.DataFrame:
        r"""Fixed-effect table: estimate, standard error (or posterior SD), test statistic
        (point fits) and a ``level`` interval (Wald, or posterior quantiles)."""
        p = self.design.p
        return self._table(0, p, list(self._names[:p]))

    @property
    def context_effects(self) -> pd.DataFrame | None:
        r"""Effects of each group-level context feature on each random coefficient's mean
        (per unit of the raw feature), or ``None`` without ``context=`` (or with a non-linear
        encoder)."""
        if not self._context_weights:
            return None
        frames = []
        for bname, W in self._context_weights.items():  # W: (S, q, d) per standardized unit
            blk = next(b for b in self.design.blocks if b.name == bname)
            info = self.design.contexts[blk.factor.name]
            Wr = W / info.scale[None, None, :]
            est = Wr.mean(0)
            df = pd.DataFrame(est.T, index=[f"{bname}:{c}" for c in info.names],
                              columns=list(blk.coef_names))
            frames.append(df)
        return pd.concat(frames)

    # ------------------------------------------------------------------ variance components
    @property
    def sigma(self) -> float | None:
        """Residual SD (gaussian) or ``None``."""
        if "sigma" not in self._draws:
            return None
        return float(self._summ(self._draws["sigma"]))

    @property
    def phi(self) -> float | None:
        """Negative-binomial dispersion ``phi`` (variance ``mu + mu**2/phi``) or ``None``."""
        if "phi" not in self._draws:
            return None
        return float(self._summ(self._draws["phi"]))

    @property
    def random_effects(self) -> pd.DataFrame:
        r"""Variance components: one row per random coefficient (``group``, ``term``, ``name``,
        ``sd``, ``variance``), plus a ``Residual`` row for gaussian models.
        Correlations are in :attr:`correlations`."""
        rows = []
        for b in self.design.blocks:
            sd = self._flat(self._draws[f"sd_{b.name}"])
            for a, coef in enumerate(b.coef_names):
                row = {"group": b.factor.name, "term": b.term.text, "name": coef,
                       "sd": float(sd[:, a].mean()), "variance": float((sd[:, a] ** 2).mean())}
                if not self._point:
                    row["sd_std_error"] = float(sd[:, a].std(ddof=1)) if sd.shape[0] > 1 else np.nan
                rows.append(row)
        if "sigma" in self._draws:
            s = self._flat(self._draws["sigma"])
            row = {"group": "Residual", "term": "", "name": "", "sd": float(s.mean()),
                   "variance": float((s ** 2).mean())}
            if not self._point:
                row["sd_std_error"] = float(s.std(ddof=1)) if s.shape[0] > 1 else np.nan
            rows.append(row)
        return pd.DataFrame(rows)

    @property
    def correlations(self) -> dict[str, pd.DataFrame]:
        """Correlation matrix of the random coefficients of every multi-coefficient term."""
        out = {}
        for b in self.design.blocks:
            key = f"corr_{b.name}"
            if b.q < 2:
                continue
            R = self._summ(self._draws[key]) if key in self._draws else np.eye(b.q)
            out[b.name] = pd.DataFrame(R, index=list(b.coef_names), columns=list(b.coef_names))
        return out

    # ------------------------------------------------------------------ group effects
    def _block(self, group: str | None):  # noqa: ANN202
        blocks = self.design.blocks
        if group is None:
            if len(blocks) != 1:
                raise ValueError(f"the model has several random-effect terms "
                                 f"{[b.name for b in blocks]}; pass `group=`.")
            return blocks[0]
        for b in blocks:
            if b.name == group:
                return b
        raise ValueError(f"`group` must be one of {[b.name for b in blocks]}; got {group!r}.")

    def ranef(self, group: str | None = None, *, std_errors: bool = False) -> pd.DataFrame:
        r"""Per-group random effects (deviations from the population, or from the context
        encoder's prediction): conditional modes (BLUPs) or posterior means.

        Args:
            group: Which term (its grouping factor's name; ``name_1``... when a factor has
                several terms). Optional with a single term.
            std_errors: Add ``<coef>_se`` columns (conditional SDs / posterior SDs).

        Returns:
            DataFrame indexed by the group levels, one column per coefficient.
        """
        b = self._block(group)
        eff = self._flat(self._draws[f"effect_{b.name}"])
        if f"loc_{b.name}" in self._draws:
            eff = eff - self._flat(self._draws[f"loc_{b.name}"])
        df = pd.DataFrame(eff.mean(0), index=b.factor.levels, columns=list(b.coef_names))
        if std_errors:
            if self._point:
                cv = self._condvar.get(b.name)
                se = (np.sqrt(np.clip(np.diagonal(cv, axis1=-2, axis2=-1), 0, None))
                      if cv is not None else np.full(df.shape, np.nan))
            else:
                se = eff.std(0, ddof=1)
            for a, c in enumerate(b.coef_names):
                df[f"{c}_se"] = se[:, a]
        return df

    def coef(self, group: str | None = None) -> pd.DataFrame:
        """Per-group coefficients: fixed effect + context prediction + random effect (lme4's
        ``coef``), for every coefficient of the term."""
        b = self._block(group)
        eff = self._summ(self._draws[f"effect_{b.name}"])
        beta = self.params
        out = pd.DataFrame(eff, index=b.factor.levels, columns=list(b.coef_names))
        for c in b.coef_names:
            if c in beta.index:
                out[c] = out[c] + beta[c]
        return out

    # ------------------------------------------------------------------ prediction
    def _new_codes(self, newdata: pd.DataFrame, b: Any, allow_new_groups: bool) -> np.ndarray:
        cols = b.factor.columns
        if len(cols) == 1:
            keys = pd.Index(newdata[cols[0]])
        else:
            joined = newdata[cols[0]].astype(str)
            for c in cols[1:]:
                joined = joined + ":" + newdata[c].astype(str)
            keys = pd.Index(joined)
        codes = b.factor.levels.get_indexer(keys)
        if (codes < 0).any() and not allow_new_groups:
            new = list(pd.unique(keys[codes < 0]))[:10]
            raise ValueError(f"`newdata` has level(s) {new} of grouping factor "
                             f"`{b.factor.name}` not seen in fitting; pass "
                             "`allow_new_groups=True` to predict them from the population "
                             "(or from their context).")
        return codes

    def predict(self, newdata: pd.DataFrame | None = None, *, allow_new_groups: bool = False,
                include_random: bool = True, type: str = "response", offset: Any = None,
                return_draws: bool = False) -> np.ndarray:
        r"""Predictions at ``newdata`` (default: the fitted data).

        Args:
            newdata: A DataFrame with the formula's columns (and grouping factors).
            allow_new_groups: Predict unseen groups from the population mean of the random
                effects -- or, with ``context=``, from the encoder of their context columns
                (which ``newdata`` must then carry).
            include_random: ``False`` gives population-level predictions.
            type: ``"response"`` (mean of ``y``; probability for binomial) or ``"link"``.
            offset: Offset values for ``newdata`` when the model was fitted with an offset
                array rather than a column.
            return_draws: Return per-draw predictions ``(draws, n)`` (posterior fits).

        Returns:
            Array of shape ``(n,)`` (posterior mean for posterior fits), or ``(draws, n)``.
        """
        if type not in ("response", "link"):
            raise ValueError(f"`type` must be 'response' or 'link'; got {type!r}.")
        des = self.design
        if newdata is None:
            X, rows = des.X, des.rows
            Zs = [b.Z for b in des.blocks]
            codes = [b.factor.codes for b in des.blocks]
            off = des.offset
            ctxs = {}
        else:
            if not isinstance(newdata, pd.DataFrame):
                raise TypeError(f"`newdata` must be a pandas DataFrame; got "
                                f"{newdata.__class__.__name__}.")
            X, Zs, codes, off, ctxs = self._new_design(newdata, allow_new_groups, include_random,
                                                       offset)
            rows = newdata.index
        del rows
        beta = self._flat(self._draws["beta"])[:, : des.p]
        eta = beta @ X.T
        if off is not None:
            eta = eta + off[None, :]
        if include_random:
            for k, b in enumerate(des.blocks):
                E = self._flat(self._draws[f"effect_{b.name}"])  # (S, G, q)
                c = codes[k]
                known = c >= 0
                contrib = np.zeros(eta.shape)
                if known.any():
                    contrib[:, known] = np.einsum("nq,snq->sn", Zs[k][known], E[:, c[known]])
                if (~known).any():
                    loc = self._new_group_loc(b, ctxs.get(b.factor.name), E.shape[0],
                                              int((~known).sum()), E.shape[-1])
                    contrib[:, ~known] = np.einsum("nq,snq->sn", Zs[k][~known], loc)
                eta = eta + contrib
        out = eta if type == "link" else np.asarray(self.family.inverse_link(jnp.asarray(eta)))
        if return_draws:
            return out
        return out.mean(0)

    def _new_group_loc(self, b: Any, C_new: np.ndarray | None, S: int, m: int,
                       q: int) -> np.ndarray:
        if b.name in self._loc_fns:
            if C_new is None:
                raise ValueError(f"`newdata` must carry the context columns "
                                 f"{list(self.design.contexts[b.factor.name].columns)} to "
                                 f"predict new groups of `{b.factor.name}`.")
            loc = self._loc_fns[b.name](C_new)  # (S, m, q)
            return np.broadcast_to(loc, (S, m, q))
        return np.zeros((S, m, q))

    def _new_design(self, newdata, allow_new_groups, include_random, offset):  # noqa: ANN001, ANN202
        import formulaic  # noqa: F401  (the specs below are formulaic ModelSpecs)

        des = self.design
        try:
            X = np.asarray(des.x_spec.get_model_matrix(newdata, na_action="raise"), float)
        except Exception as e:  # noqa: BLE001
            raise ValueError(f"cannot build the fixed-effect design for `newdata`: {e}") from e
        Zs, codes, ctxs = [], [], {}
        for b in des.blocks:
            if not include_random:
                Zs.append(None)
                codes.append(None)
                continue
            missing = [c for c in b.factor.columns if c not in newdata.columns]
            if missing:
                raise ValueError(f"`newdata` lacks grouping column(s) {missing}; pass "
                                 "`include_random=False` for population-level predictions.")
            Zs.append(np.asarray(b.spec.get_model_matrix(newdata, na_action="raise"), float))
            c = self._new_codes(newdata, b, allow_new_groups)
            codes.append(c)
            info = des.contexts.get(b.factor.name)
            if info is not None and (c < 0).any() and all(col in newdata.columns
                                                          for col in info.columns):
                sub = newdata.loc[c < 0]
                Cn = np.asarray(info.spec.get_model_matrix(sub, na_action="raise"), float)
                ctxs[b.factor.name] = info.standardize(Cn)
        off = None
        if des.parsed.offsets or des.offset_arg is not None:
            off = np.zeros(len(newdata))
            for o in des.parsed.offsets:
                import formulaic as fm

                off += np.asarray(fm.model_matrix(f"0 + I({o})", newdata), float)[:, 0]
            if isinstance(des.offset_arg, str):
                off += np.asarray(newdata[des.offset_arg], float)
            elif des.offset_arg is not None:
                if offset is None:
                    raise ValueError("the model was fitted with an `offset` array; pass "
                                     "`offset=` (one value per row of `newdata`).")
                off += np.asarray(offset, float)
        return X, Zs, codes, off, ctxs

    # ------------------------------------------------------------------ export
    def to_arviz(self) -> Any:
        r"""ArviZ data: ``posterior`` (``beta`` over dim ``fixed``; ``b_<term>`` over the
        grouping factor's levels and ``<term>_coef``; ``sd_<term>``, ``corr_<term>``,
        ``sigma``/``phi``) and ``observed_data``. Point fits have one chain and one draw.
        """

        des = self.design
        post: dict[str, np.ndarray] = {"beta": self._draws["beta"]}
        dims: dict[str, list[str]] = {"beta": ["fixed"]}
        coords: dict[str, Any] = {"fixed": list(self._names), "obs": np.arange(des.n)}
        for key in ("sigma", "phi"):
            if key in self._draws:
                post[key] = self._draws[key]
        for b in des.blocks:
            cdim = f"{b.name}_coef"
            coords[cdim] = list(b.coef_names)
            coords[b.factor.name] = [str(v) for v in b.factor.levels]
            eff = self._draws[f"effect_{b.name}"]
            if f"loc_{b.name}" in self._draws:
                eff = eff - self._draws[f"loc_{b.name}"]
            post[f"b_{b.name}"] = eff
            dims[f"b_{b.name}"] = [b.factor.name, cdim]
            post[f"sd_{b.name}"] = self._draws[f"sd_{b.name}"]
            dims[f"sd_{b.name}"] = [cdim]
            if f"corr_{b.name}" in self._draws:
                coords[cdim + "_"] = list(b.coef_names)
                post[f"corr_{b.name}"] = self._draws[f"corr_{b.name}"]
                dims[f"corr_{b.name}"] = [cdim, cdim + "_"]
        groups = {"posterior": post, "observed_data": {"y": des.y}}
        dims["y"] = ["obs"]
        return from_groups(groups, dims=dims, coords=coords)

    # ------------------------------------------------------------------ printing
    def summary(self) -> str:
        """A text summary in the spirit of lme4's ``print(summary(fit))``."""
        lines = [f"Mixed model ({self.family.name}, link {self.family.link}) fit by "
                 f"{self.method}" + (f" [{self.criterion}]" if self.criterion else "")
                 + f", engine {self.engine}", f"Formula: {self.formula}"]
        if self.deviance is not None:
            mc = "" if self.deviance_se is None else (
                f" (stochastic estimate, Monte Carlo SE {self.deviance_se:.3g})")
            lines.append(f"{self.criterion or 'deviance'} criterion: {self.deviance:.4f}{mc}")
        lines.append(f"Observations: {self.nobs}; groups: "
                     + ", ".join(f"{k} {v}" for k, v in self.ngroups.items()))
        lines.append("\nRandom effects:")
        lines.append(self.random_effects.to_string(index=False))
        for name, R in self.correlations.items():
            lines.append(f"Correlations ({name}):\n{R.round(3).to_string()}")
        lines.append("\nFixed effects:")
        lines.append(self.fixed_effects.to_string())
        ce = self.context_effects
        if ce is not None:
            lines.append("\nContext effects (per unit of each context column):")
            lines.append(ce.to_string())
        if self.phi is not None:
            lines.append(f"\nNegative-binomial dispersion phi: {self.phi:.4g}")
        lines.append(f"\n{self.diagnostics.get('message', '')}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        fe = ", ".join(f"{k}={v:.4g}" for k, v in self.params.items())
        return (f"MixedResult({self.formula!r}, family={self.family.name!r}, "
                f"method={self.method!r}, engine={self.engine!r}, {fe})")
