"""Several processes, one program: ``jax.distributed`` set-up and global arrays for ctxppl.

Run the same script on every process (``ctxppl launch -n 2 script.py`` locally; ``srun``,
Kubernetes or explicit arguments on a cluster). Call :func:`initialize` first, give each
process's rows to :func:`global_arrays`, then ``ctx.fit`` / ``ctx.fit_many`` as usual: every
process gets the same :class:`ctxppl.Fit`, and ``Fit.save`` writes once (process 0).
"""

from ctxppl.infer._distributed import DistributedError as DistributedError
from ctxppl.infer._distributed import GlobalArrays as GlobalArrays
from ctxppl.infer._distributed import global_arrays as global_arrays
from ctxppl.infer._distributed import initialize as initialize
from ctxppl.infer._distributed import is_writer as is_writer

__all__ = ["initialize", "global_arrays", "GlobalArrays", "DistributedError", "is_writer"]
