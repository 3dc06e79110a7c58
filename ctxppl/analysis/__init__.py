r"""Analysis of fitted contextualized models (contextualized-ml's ``analysis`` module, with
posterior uncertainty).

Every function reads per-sample parameters through ``predict_params(C,
individual_preds=True)`` -- ctxppl's estimators, or any :class:`ctxppl.Fit` wrapped in
:class:`FitParams` -- whose leading axis holds bootstrap fits and/or posterior draws. So
p-values and intervals come from the posterior wherever there is one (SVI, Laplace, NUTS),
from bootstraps otherwise, or from both.

* Effects: :func:`get_homogeneous_context_effects`, :func:`get_homogeneous_predictor_effects`,
  :func:`get_heterogeneous_predictor_effects`, :func:`effects_table`.
* Tests: :func:`calc_homogeneous_context_effects_pvals`,
  :func:`calc_homogeneous_predictor_effects_pvals`,
  :func:`calc_heterogeneous_predictor_effects_pvals`, :func:`test_each_context`,
  :func:`sign_pvalue`.
* Embeddings (:func:`embed_models`), accuracy by covariate group (:func:`acc_by_covars`),
  bootstrap selection (:func:`select_good_bootstraps`).
* The plots of contextualized-ml's analysis module are re-exported from :mod:`ctxppl.plot`.
"""

from ctxppl._moved import moved_names
from ctxppl.analysis._accuracy import acc_by_covars as acc_by_covars
from ctxppl.analysis._accuracy import get_roc as get_roc
from ctxppl.analysis._accuracy import print_acc_by_covars as print_acc_by_covars
from ctxppl.analysis._bootstraps import select_good_bootstraps as select_good_bootstraps
from ctxppl.analysis._effects import (
    get_heterogeneous_predictor_effects as get_heterogeneous_predictor_effects,
)
from ctxppl.analysis._effects import (
    get_homogeneous_context_effects as get_homogeneous_context_effects,
)
from ctxppl.analysis._effects import (
    get_homogeneous_predictor_effects as get_homogeneous_predictor_effects,
)
from ctxppl.analysis._effects import make_c_vis as make_c_vis
from ctxppl.analysis._effects import make_grid_mat as make_grid_mat
from ctxppl.analysis._effects import maybe_make_c_vis as maybe_make_c_vis
from ctxppl.analysis._embeddings import convert_to_one_hot as convert_to_one_hot
from ctxppl.analysis._embeddings import embed_models as embed_models
from ctxppl.analysis._pvals import (
    calc_heterogeneous_predictor_effects_pvals as calc_heterogeneous_predictor_effects_pvals,
)
from ctxppl.analysis._pvals import (
    calc_homogeneous_context_effects_pvals as calc_homogeneous_context_effects_pvals,
)
from ctxppl.analysis._pvals import (
    calc_homogeneous_predictor_effects_pvals as calc_homogeneous_predictor_effects_pvals,
)
from ctxppl.analysis._pvals import (
    calc_pval_bootstraps_one_sided as calc_pval_bootstraps_one_sided,
)
from ctxppl.analysis._pvals import (
    calc_pval_bootstraps_one_sided_mean as calc_pval_bootstraps_one_sided_mean,
)
from ctxppl.analysis._pvals import effects_table as effects_table
from ctxppl.analysis._pvals import get_possible_pvals as get_possible_pvals
from ctxppl.analysis._pvals import sign_pvalue as sign_pvalue
from ctxppl.analysis._pvals import test_each_context as test_each_context
from ctxppl.analysis._source import FitParams as FitParams

# contextualized-ml's analysis plots live in ctx.plot; re-exported here on first use, so
# importing either package first works (ctx.plot itself uses the analysis functions above).
_PLOTS = {"plot_heterogeneous_predictor_effects": "ctxppl.plot._effects",
          "plot_homogeneous_context_effects": "ctxppl.plot._effects",
          "plot_homogeneous_predictor_effects": "ctxppl.plot._effects",
          "plot_embedding_for_all_covars": "ctxppl.plot._embeddings",
          "plot_lowdim_rep": "ctxppl.plot._embeddings"}


def _plot(name: str):  # noqa: ANN202
    if name in _PLOTS:
        import importlib

        value = getattr(importlib.import_module(_PLOTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ctxppl.analysis' has no attribute {name!r}")


__getattr__ = moved_names(__name__, {"take_fits": "ctxppl.analysis._bootstraps",
                                     "one_at_a_time": "ctxppl.analysis._effects",
                                     "model_matrix": "ctxppl.analysis._embeddings",
                                     "ParamDraws": "ctxppl.analysis._source",
                                     "draw_source": "ctxppl.analysis._source",
                                     "param_draws": "ctxppl.analysis._source"}, fallback=_plot)


__all__ = ["FitParams", "get_homogeneous_context_effects", "get_homogeneous_predictor_effects",
           "get_heterogeneous_predictor_effects", "make_grid_mat", "make_c_vis",
           "maybe_make_c_vis", "effects_table", "sign_pvalue",
           "get_possible_pvals", "calc_pval_bootstraps_one_sided",
           "calc_pval_bootstraps_one_sided_mean", "calc_homogeneous_context_effects_pvals",
           "calc_homogeneous_predictor_effects_pvals",
           "calc_heterogeneous_predictor_effects_pvals", "test_each_context", "embed_models",
           "convert_to_one_hot", "get_roc", "acc_by_covars",
           "print_acc_by_covars", "select_good_bootstraps",
           "plot_homogeneous_context_effects", "plot_homogeneous_predictor_effects",
           "plot_heterogeneous_predictor_effects", "plot_lowdim_rep",
           "plot_embedding_for_all_covars"]
