"""Pin a peer's numerical runtimes to ``n`` threads (its best setting on 2 shared cores).

Call before numpy or torch is imported: the BLAS/OpenMP caps are read from the environment
when their runtimes load.
"""

import os


def pin_threads(n: int):  # noqa: ANN201
    """Set the BLAS/OpenMP thread caps, then import torch and cap its pools; returns torch."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(n)
    import torch

    torch.set_num_threads(n)
    torch.set_num_interop_threads(n)
    return torch
