"""Write the "Death to Cluster Models" demo data as an .npz for the peer runners.

    python make_seed_demo.py [OUT.npz]   (default /tmp/seed_demo.npz; needs numpy only)

75x75 grid over [-1,1]^2; W0 = C0 + C1^2, W1 = C0^2 + C1; Y = sum(X*W).
Train = grid points within 0.1 of five cluster centres (221), test = the rest (5404).
"""

import sys

import numpy as np

n = 75
rng = np.random.default_rng(0)
z = np.linspace(-1, 1, n)
Z = np.array([[zi, zj] for zi in z for zj in z])
C = Z[::-1].copy()
W = np.stack([C[:, 0] + C[:, 1] ** 2, C[:, 0] ** 2 + C[:, 1]], axis=1)
X = rng.uniform(-1, 1, size=(n * n, 2))
Y = (X * W).sum(axis=1)[:, None]

centers = np.array([[0, 0], [0.5, 0.5], [0.5, -0.5], [-0.5, 0.5], [-0.5, -0.5]])
dist = np.linalg.norm(Z[:, None, :] - centers[None], axis=-1).min(axis=1)
train = dist < 0.1
test = ~train

mean, std = C[train].mean(axis=0), C[train].std(axis=0)
Cs = (C - mean) / std

out = sys.argv[1] if len(sys.argv) > 1 else "/tmp/seed_demo.npz"
np.savez(
    out,
    C_train=Cs[train],
    X_train=X[train],
    Y_train=Y[train],
    C_test=Cs[test],
    X_test=X[test],
    Y_test=Y[test],
    W_test=W[test],
    W_train=W[train],
)
print(f"wrote {out}: {train.sum()} train, {test.sum()} test")
