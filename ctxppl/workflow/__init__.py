r"""Many-models workflow: splits, grids, scores, ``run`` (vmapped, cached, parallel), sharding.

.. code-block:: python

    df = ctx.workflow.run(factory, ctx.workflow.grid(K=[2, 3, 4]), ctx.workflow.kfold(n, 5),
                          data, scoring=[ctx.workflow.elpd()], backend="loky", cache="cache/")
"""

from ctxppl._moved import moved_names
from ctxppl.workflow._evaluation import Evaluation as Evaluation
from ctxppl.workflow._grid import grid as grid
from ctxppl.workflow._run import failures as failures
from ctxppl.workflow._run import run as run
from ctxppl.workflow._scores import Scorer as Scorer
from ctxppl.workflow._scores import adjusted_rand as adjusted_rand
from ctxppl.workflow._scores import auc as auc
from ctxppl.workflow._scores import bic as bic
from ctxppl.workflow._scores import elpd as elpd
from ctxppl.workflow._scores import log_likelihood as log_likelihood
from ctxppl.workflow._scores import loo as loo
from ctxppl.workflow._scores import mse as mse
from ctxppl.workflow._scores import waic as waic
from ctxppl.workflow._sharding import shard_fit as shard_fit
from ctxppl.workflow._spec import ModelSpec as ModelSpec
from ctxppl.workflow._splits import Splits as Splits
from ctxppl.workflow._splits import bootstrap as bootstrap
from ctxppl.workflow._splits import group_kfold as group_kfold
from ctxppl.workflow._splits import holdout as holdout
from ctxppl.workflow._splits import insample as insample
from ctxppl.workflow._splits import kfold as kfold
from ctxppl.workflow._splits import repeated_kfold as repeated_kfold

__all__ = ["run", "ModelSpec", "failures", "grid", "Splits", "kfold", "repeated_kfold",
           "group_kfold", "bootstrap", "holdout", "insample", "Evaluation", "Scorer", "mse",
           "log_likelihood", "elpd", "auc", "adjusted_rand", "bic", "loo", "waic", "shard_fit"]

__getattr__ = moved_names(__name__, {"fingerprint_callable": "ctxppl.workflow._cache",
                                     "fingerprint_data": "ctxppl.workflow._cache"})
