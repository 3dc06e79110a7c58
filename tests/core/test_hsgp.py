r"""``ctx.nn.HSGP``: shapes, priors, Gaussian-weight marking, and the kernel it approximates.

The prior covariance of the GP part, :math:`\sum_j \phi_j(x)\phi_j(x') S_j \alpha^2`, must
match the exact kernel inside the domain (Solin & Särkkä 2020: the error falls with the
number of basis functions and the box size; the tolerances below are the approximation
error at these settings, far below the kernel's scale of 1).
"""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import pytest

import ctxppl as ctx


def gp_cov(gp, X):
    """Prior covariance of output 0 of the GP part at the rows of ``X`` (weights ~ N(0, I))."""
    F = jax.vmap(gp.features)(jnp.asarray(X))[:, :, 0]  # (n, basis)
    return np.asarray(F @ F.T)


def matern52(r):
    s = np.sqrt(5.0) * r
    return (1 + s + s**2 / 3) * np.exp(-s)


@pytest.mark.parametrize("kernel, exact", [
    ("se", lambda r: np.exp(-0.5 * r**2)),
    ("matern52", matern52),
])
def test_joint_features_approximate_the_exact_kernel(kernel, exact):
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, (40, 2))
    gp = ctx.nn.HSGP(2, 1, num_basis=24, domain=X, kernel=kernel)
    ell = np.asarray(gp.lengthscale())
    r = np.sqrt((((X[:, None] - X[None]) / ell) ** 2).sum(-1))
    tol = 1e-3 if kernel == "se" else 3e-2  # Matern's spectrum has heavier tails
    np.testing.assert_allclose(gp_cov(gp, X), exact(r), atol=tol)


def test_additive_features_are_a_sum_of_one_dimensional_kernels():
    rng = np.random.default_rng(1)
    X = rng.uniform(-2, 2, (30, 3))
    gp = ctx.nn.HSGP(3, 2, num_basis=30, domain=X, additive=True)
    ell = np.asarray(gp.lengthscale())
    want = sum(np.exp(-0.5 * ((X[:, None, j] - X[None, :, j]) / ell[j]) ** 2) for j in range(3))
    np.testing.assert_allclose(gp_cov(gp, X), want, atol=1e-3)


@pytest.mark.parametrize("additive", [False, True])
@pytest.mark.parametrize("out_shape", [(2,), (2, 3), ()])
def test_shapes(additive, out_shape):
    X = np.linspace(-1, 1, 10)[:, None] * np.ones((1, 2))
    gp = ctx.nn.HSGP(2, out_shape, num_basis=5, domain=X, additive=additive)
    assert gp(jnp.zeros(2)).shape == out_shape
    assert jax.vmap(gp)(jnp.asarray(X)).shape == (10,) + out_shape


def test_priors_and_gaussian_weight_marks():
    X = np.random.default_rng(2).normal(size=(20, 2))
    gp = ctx.nn.HSGP(2, 3, num_basis=4, domain=X)

    def model():
        return ctx.encoder("enc", gp, prior=gp.prior)

    tr = numpyro.handlers.trace(numpyro.handlers.seed(model, 0)).get_trace()
    linear = {n for n, s in tr.items() if s["infer"].get("ctx_linear")}
    assert linear == {"enc.weights", "enc.linear"}
    assert set(tr) == linear | {"enc.raw_lengthscale", "enc.raw_amplitude"}
    assert tr["enc.weights"]["value"].shape == (16, 3)


def test_lengthscale_floor_and_box():
    X = np.array([[-1.0, 0.0], [1.0, 2.0]])
    gp = ctx.nn.HSGP(2, 1, num_basis=10, domain=X, box=3.0, box_lengthscales=3.0)
    assert gp.center == (0.0, 1.0) and gp.half_range == (1.0, 1.0)
    np.testing.assert_allclose(gp.min_lengthscale(), 1.75 * 3.0 / 10, rtol=1e-6)
    assert np.all(np.asarray(gp.lengthscale()) > np.asarray(gp.min_lengthscale()))
    L = np.asarray(gp.half_widths())
    assert np.all(L >= 3.0 - 1e-6) and np.all(L >= 3.0 * np.asarray(gp.lengthscale()) - 1e-5)


def test_bad_arguments_are_named():
    X = np.zeros((5, 2))
    with pytest.raises(ValueError, match="`domain` of ctx.nn.HSGP is required"):
        ctx.nn.HSGP(2, 1)
    with pytest.raises(ValueError, match=r"must be an \(n, 2\) array"):
        ctx.nn.HSGP(2, 1, domain=np.zeros((5, 3)))
    with pytest.raises(ValueError, match="`kernel` must be one of"):
        ctx.nn.HSGP(2, 1, domain=X, kernel="rbf")
    with pytest.raises(ValueError, match="use additive=True"):
        ctx.nn.HSGP(4, 1, num_basis=10, domain=np.zeros((5, 4)), additive=False)
    with pytest.raises(ValueError, match="`box` must be >= 1.2"):
        ctx.nn.HSGP(2, 1, domain=X, box=1.0)
    with pytest.raises(ValueError, match="has no array for site"):
        ctx.nn.HSGP(2, 1, domain=X).prior("enc.other", (1,))
