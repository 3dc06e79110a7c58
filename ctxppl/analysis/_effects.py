r"""Homogeneous and heterogeneous effects of a fitted contextualized model.

With per-sample parameters :math:`\beta(c)` (coefficients) and :math:`\mu(c)` (intercepts):

* **homogeneous context effect** of context feature :math:`j`: how :math:`\mu` changes
  along :math:`c_j` with the other context features held at a reference value;
* **homogeneous predictor effect** of predictor :math:`k`: :math:`\beta_k` averaged over the
  contexts (the context-invariant part of its effect);
* **heterogeneous predictor effect** of predictor :math:`k` along context :math:`j`:
  :math:`\beta_k(c_j) - \overline{\beta_k}`, the context-dependent part.

Every function keeps the leading axis ``S`` of bootstraps and/or posterior draws, so
intervals and p-values (:mod:`ctxppl.analysis`) come from it. Names and output shapes follow
contextualized-ml 0.2.9's ``contextualized.analysis.effects``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ctxppl.analysis._source import check_context, check_model, param_draws

__all__ = ["make_grid_mat", "make_c_vis", "maybe_make_c_vis", "one_at_a_time",
           "get_homogeneous_context_effects", "get_homogeneous_predictor_effects",
           "get_heterogeneous_predictor_effects"]


def make_grid_mat(observation_mat: Any, n_vis: int) -> np.ndarray:
    """A grid ``(n_vis, d)``: each column runs evenly from the minimum to the maximum of the
    same column of ``observation_mat``.

    Examples:
        >>> import numpy as np
        >>> from ctxppl.analysis import make_grid_mat
        >>> make_grid_mat(np.array([[0.0, 10.0], [1.0, 20.0]]), 3)
        array([[ 0. , 10. ],
               [ 0.5, 15. ],
               [ 1. , 20. ]])
    """
    obs = np.asarray(observation_mat.to_numpy() if hasattr(observation_mat, "to_numpy")
                     else observation_mat, dtype=np.float64)
    if obs.ndim != 2:
        raise ValueError(f"`observation_mat` must be 2-D; got shape {obs.shape}.")
    if not isinstance(n_vis, (int, np.integer)) or n_vis < 2:
        raise ValueError(f"`n_vis` must be an int >= 2; got {n_vis!r}.")
    return np.linspace(obs.min(axis=0), obs.max(axis=0), int(n_vis))


def make_c_vis(C: Any, n_vis: int) -> np.ndarray:
    """:func:`make_grid_mat` of a context matrix (array or DataFrame).

    Examples:
        >>> import numpy as np
        >>> from ctxppl.analysis import make_c_vis
        >>> make_c_vis(np.array([[0.0], [2.0]]), 3)[:, 0]
        array([0., 1., 2.])
    """
    return make_grid_mat(C, n_vis)


def maybe_make_c_vis(C: Any, C_vis: Any = None, n_vis: int = 100, verbose: bool = False
                     ) -> np.ndarray:
    """``C_vis`` when given, else :func:`make_c_vis` ``(C, n_vis)``.

    The grid varies each context feature on its own with the others at a reference value,
    which describes the model fully when the encoder is additive (NGAM, linear). With
    interactions pass ``C_vis`` points on the data manifold instead.

    Examples:
        >>> import numpy as np
        >>> from ctxppl.analysis import maybe_make_c_vis
        >>> maybe_make_c_vis(np.zeros((5, 2)), C_vis=np.ones((4, 2))).shape
        (4, 2)
    """
    if C_vis is None:
        if verbose:
            print("Generating a context grid for each feature on its own (exact for additive "
                  "encoders); pass C_vis to use points on the data manifold.")
        return make_c_vis(C, n_vis)
    cv = np.asarray(C_vis.to_numpy() if hasattr(C_vis, "to_numpy") else C_vis, dtype=float)
    c = np.asarray(C.to_numpy() if hasattr(C, "to_numpy") else C)
    if cv.ndim != 2 or (c.ndim == 2 and cv.shape[1] != c.shape[1]):
        raise ValueError(f"`C_vis` must be 2-D with {c.shape[-1]} columns (like `C`); got "
                         f"shape {cv.shape}.")
    if cv.shape[0] < 2:
        raise ValueError(f"`C_vis` needs at least 2 rows; got {cv.shape[0]}.")
    return cv


def _reference(C: np.ndarray, reference: Any) -> np.ndarray:
    d = C.shape[1]
    if reference is None or (isinstance(reference, str) and reference == "mean"):
        return C.mean(axis=0)
    if isinstance(reference, str) and reference == "zero":
        return np.zeros(d)
    if isinstance(reference, str):
        raise ValueError(f"`reference` must be 'mean', 'zero' or an array of {d} values; got "
                         f"{reference!r}.")
    ref = np.asarray(reference, dtype=np.float64).reshape(-1)
    if ref.shape != (d,):
        raise ValueError(f"`reference` must hold one value per context feature ({d}); got "
                         f"shape {np.shape(reference)}.")
    return ref


def one_at_a_time(c_vis: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Stack ``d`` grids ``(d, n_vis, d)``: grid ``j`` moves feature ``j`` along
    ``c_vis[:, j]`` and holds the others at ``reference``.

    Examples:
        >>> import numpy as np
        >>> from ctxppl.analysis._effects import one_at_a_time
        >>> one_at_a_time(np.array([[0.0, 0.0], [1.0, 2.0]]), np.array([9.0, 9.0]))[1]
        array([[9., 0.],
               [9., 2.]])
    """
    d = c_vis.shape[1]
    eye = np.eye(d, dtype=bool)[:, None, :]  # (d, 1, d): which column moves in grid j
    return np.where(eye, c_vis[None, :, :], reference[None, None, :])


def _grid_params(model: Any, C: Any, C_vis: Any, n_vis: int, reference: Any, need_mu: bool
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """One ``predict_params`` call on all one-at-a-time grids: ``(c_vis, betas, mus)`` with
    ``betas`` ``(d, S, n_vis, *O, p)`` and ``mus`` ``(d, S, n_vis, *M)``."""
    check_model(model)
    C = check_context(model, C)
    c_vis = maybe_make_c_vis(C, C_vis, n_vis)
    c_vis = check_context(model, c_vis, "C_vis")
    ref = _reference(C, reference)
    d, m = C.shape[1], c_vis.shape[0]
    grids = one_at_a_time(c_vis, ref).reshape(d * m, d)
    draws = param_draws(model, grids)
    if need_mu and draws.mus is None:
        raise ValueError("context effects need per-sample intercepts, but `model` gives "
                         "none (e.g. a Bayesian network, or FitParams without `mu=`).")

    def split(a: np.ndarray | None) -> np.ndarray | None:
        if a is None:
            return None
        a = a.reshape((a.shape[0], d, m) + a.shape[2:])
        return np.moveaxis(a, 1, 0)

    return c_vis, split(draws.betas), split(draws.mus)


def get_homogeneous_context_effects(model: Any, C: Any, *, C_vis: Any = None, n_vis: int = 100,
                                    reference: Any = None, individual_preds: bool = True,
                                    verbose: bool = False) -> tuple[np.ndarray, np.ndarray]:
    r"""Direct effects of each context feature on the intercepts :math:`\mu`.

    For context feature ``j`` the intercepts are predicted along a grid of ``c_j`` (from the
    minimum to the maximum of ``C[:, j]``) with the other features at ``reference``.

    Args:
        model: A fitted ctxppl estimator or :class:`~ctxppl.analysis.FitParams`.
        C: Contexts ``(n, n_contexts)`` that set the grid's range (original scale).
        C_vis: Optional grid ``(n_vis, n_contexts)`` instead of the even one.
        n_vis: Grid points (contextualized-ml uses 1,000; 100 draws the same curves).
        reference: Value of the other context features: ``"mean"`` (default: the column
            means of ``C``, the centre of a normalised model), ``"zero"`` (as
            contextualized-ml, which expects standardised contexts) or an array.
        individual_preds: Keep the bootstrap / posterior-draw axis ``S``.
        verbose: Print how the grid is built.

    Returns:
        ``(c_vis, effects)`` with ``effects`` of shape ``(n_contexts, S, n_vis, *mu_shape)``
        (without ``S`` when ``individual_preds=False``).

    Examples:
        >>> import numpy as np, ctxppl as ctx
        >>> class Toy:  # mu(c) = 2 c_0, one draw
        ...     def predict_params(self, C, individual_preds=False):
        ...         return np.zeros((1, len(C), 1, 1)), 2 * C[None, :, :1]
        >>> c_vis, eff = ctx.analysis.get_homogeneous_context_effects(
        ...     Toy(), np.array([[0.0, 5.0], [1.0, 7.0]]), n_vis=3)
        >>> eff.shape, eff[0, 0, :, 0]
        ((2, 1, 3, 1), array([0., 1., 2.]))
    """
    if verbose:
        print("Estimating homogeneous context effects.")
    c_vis, _, mus = _grid_params(model, C, C_vis, n_vis, reference, need_mu=True)
    return c_vis, (mus if individual_preds else mus.mean(axis=1))


def get_homogeneous_predictor_effects(model: Any, C: Any, *, C_vis: Any = None,
                                      individual_preds: bool = True, verbose: bool = False
                                      ) -> tuple[np.ndarray, np.ndarray]:
    r"""Context-invariant effects of each predictor: :math:`\beta_k(c)` averaged over contexts.

    The average runs over the rows of ``C`` (the average effect over the observed contexts)
    or over ``C_vis`` when given. contextualized-ml averages over its diagonal grid instead.

    Args:
        model: A fitted ctxppl estimator or :class:`~ctxppl.analysis.FitParams`.
        C: Contexts ``(n, n_contexts)`` to average over.
        C_vis: Optional other contexts to average over.
        individual_preds: Keep the bootstrap / posterior-draw axis ``S``.
        verbose: Print progress.

    Returns:
        ``(c_vis, effects)`` with ``effects`` of shape ``(n_predictors, S, *outcomes)``.

    Examples:
        >>> import numpy as np, ctxppl as ctx
        >>> class Toy:  # beta(c) = (c_0, 1): predictor 1 has a homogeneous effect 1
        ...     def predict_params(self, C, individual_preds=False):
        ...         b = np.stack([C[:, 0], np.ones(len(C))], -1)[None, :, None, :]
        ...         return b, np.zeros(b.shape[:3])
        >>> _, eff = ctx.analysis.get_homogeneous_predictor_effects(
        ...     Toy(), np.array([[-1.0], [1.0]]))
        >>> eff.shape, eff[:, 0, 0]
        ((2, 1, 1), array([0., 1.]))
    """
    if verbose:
        print("Estimating homogeneous predictor effects.")
    check_model(model)
    C = check_context(model, C)
    c_vis = C if C_vis is None else check_context(model, C_vis, "C_vis")
    betas = param_draws(model, c_vis).betas.mean(axis=1)  # (S, *O, p)
    eff = np.moveaxis(betas, -1, 0)  # (p, S, *O)
    return c_vis, (eff if individual_preds else eff.mean(axis=1))


def get_heterogeneous_predictor_effects(model: Any, C: Any, *, C_vis: Any = None,
                                        n_vis: int = 100, reference: Any = None,
                                        individual_preds: bool = True, verbose: bool = False
                                        ) -> tuple[np.ndarray, np.ndarray]:
    r"""Context-dependent effects of each predictor along each context feature:
    :math:`\beta_k(c_j) - \operatorname{mean}_{grid}\beta_k`, per bootstrap / draw.

    Args:
        model: A fitted ctxppl estimator or :class:`~ctxppl.analysis.FitParams`.
        C: Contexts ``(n, n_contexts)`` that set the grid's range.
        C_vis: Optional grid ``(n_vis, n_contexts)`` instead of the even one over the range of
            ``C``.
        n_vis: Grid points per context feature.
        reference: Value of the other context features on the grid: ``"mean"`` (default), ``"zero"``
            or an array.
        individual_preds: Keep the bootstrap / posterior-draw axis ``S``.
        verbose: Print progress.

    Returns:
        ``(c_vis, effects)`` with ``effects`` of shape
        ``(n_contexts, n_predictors, S, n_vis, *outcomes)`` (as contextualized-ml).

    Examples:
        >>> import numpy as np, ctxppl as ctx
        >>> class Toy:  # beta_0(c) = 3 c_1: predictor 0 varies along context 1 only
        ...     def predict_params(self, C, individual_preds=False):
        ...         b = np.stack([3 * C[:, 1], np.ones(len(C))], -1)[None, :, None, :]
        ...         return b, np.zeros(b.shape[:3])
        >>> _, eff = ctx.analysis.get_heterogeneous_predictor_effects(
        ...     Toy(), np.array([[0.0, -1.0], [1.0, 1.0]]), n_vis=3)
        >>> eff.shape, eff[1, 0, 0, :, 0], np.abs(eff[0]).max()
        ((2, 2, 1, 3, 1), array([-3.,  0.,  3.]), np.float64(0.0))
    """
    if verbose:
        print("Estimating heterogeneous predictor effects.")
    c_vis, betas, _ = _grid_params(model, C, C_vis, n_vis, reference, need_mu=False)
    het = betas - betas.mean(axis=2, keepdims=True)  # (d, S, n_vis, *O, p)
    eff = np.moveaxis(het, -1, 1)  # (d, p, S, n_vis, *O)
    return c_vis, (eff if individual_preds else eff.mean(axis=2))
