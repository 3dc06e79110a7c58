"""Bad input fails early with messages that name the problem; singular fits warn."""

import numpy as np
import pandas as pd
import pytest

import ctxppl as ctx
from ctxppl.models.mixed import SingularFitWarning


@pytest.fixture
def df(rng):
    g = np.repeat(np.arange(8), 6)
    d = pd.DataFrame({"g": g, "x": rng.normal(size=48), "h": np.tile([0, 1], 24)})
    d["y"] = 1.0 + d.x + rng.normal(size=8)[g] + rng.normal(size=48)
    d["count"] = rng.poisson(3.0, size=48)
    d["binary"] = rng.integers(0, 2, size=48)
    return d


def test_unknown_column_is_named_with_suggestion(df):
    with pytest.raises(ValueError, match=r"'xx' \(used in the fixed effects\).*did you mean 'x'"):
        ctx.mixed("y ~ xx + (1 | g)", df)
    with pytest.raises(ValueError, match=r"'gg' \(used in \(1 \| gg\)\)"):
        ctx.mixed("y ~ x + (1 | gg)", df)
    with pytest.raises(ValueError, match="`weights`"):
        ctx.mixed("y ~ x + (1 | g)", df, weights="w")


def test_nan_rows_are_reported_and_can_be_dropped(df):
    d = df.copy()
    d.loc[[3, 17], "x"] = np.nan
    d.loc[5, "notused"] = 1.0  # NaN elsewhere in an unused column must not matter
    with pytest.raises(ValueError, match=r"\{'x': 2\} at 2 row\(s\) \[3, 17\].*na_action='drop'"):
        ctx.mixed("y ~ x + (1 | g)", d)
    res = ctx.mixed("y ~ x + (1 | g)", d, na_action="drop")
    assert res.nobs == 46
    full = ctx.mixed("y ~ x + (1 | g)", df.drop(index=[3, 17]))
    np.testing.assert_allclose(res.params, full.params, rtol=1e-6)


def test_single_level_grouping_factor(df):
    with pytest.raises(ValueError, match="grouping factor `one`.*single level"):
        ctx.mixed("y ~ x + (1 | one)", df.assign(one="a"))


@pytest.mark.parametrize("family,col,msg", [
    ("poisson", "y", "non-negative integer counts"),
    ("bernoulli", "count", "binary"),
    ("negative_binomial", "x", "non-negative integer counts"),
])
def test_family_outcome_mismatch(df, family, col, msg):
    with pytest.raises(ValueError, match=msg):
        ctx.mixed(f"{col} ~ h + (1 | g)", df, family=family)


def test_binomial_needs_successes_within_trials(df):
    with pytest.raises(ValueError, match="between 0 and `trials`"):
        ctx.mixed("count ~ h + (1 | g)", df, family="binomial", trials=np.full(48, 2))


def test_bad_arguments(df):
    with pytest.raises(ValueError, match="`family` must be one of"):
        ctx.mixed("y ~ x + (1 | g)", df, family="gamma")
    with pytest.raises(ValueError, match="`link`='log' is not available"):
        ctx.mixed("binary ~ x + (1 | g)", df, family="bernoulli", link="log")
    with pytest.raises(ValueError, match="`reml=True` needs family='gaussian'"):
        ctx.mixed("count ~ x + (1 | g)", df, family="poisson", reml=True)
    with pytest.raises(ValueError, match="no random-effect term"):
        ctx.mixed("y ~ x", df)
    with pytest.raises(ValueError, match="two-sided"):
        ctx.mixed("~ x + (1 | g)", df)
    with pytest.raises(ValueError, match="`priors` apply to the program engine"):
        ctx.mixed("y ~ x + (1 | g)", df, engine="marginal", priors={"sigma": None})
    with pytest.raises(ValueError, match="`key` is required"):
        ctx.mixed("y ~ x + (1 | g)", df, method="nuts")
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['sigmaa'\] in `priors`"):
        ctx.models.mixed.program("y ~ x + (1 | g)", df, priors={"sigmaa": None})
    with pytest.raises(ValueError, match="`na_action` must be"):
        ctx.mixed("y ~ x + (1 | g)", df, na_action="omit")
    with pytest.raises(ValueError, match="rank deficient: \\['x2'\\]"):
        ctx.mixed("y ~ x + x2 + (1 | g)", df.assign(x2=2 * df.x))


def test_context_must_be_group_level(df):
    with pytest.raises(ValueError, match="constant within each group of `g`"):
        ctx.mixed("y ~ 1 + (1 | g)", df, context="x")


def test_singular_fit_warns_naming_the_term(rng):
    """Groups with no between-group variance: REML puts the SD at zero (lme4 reports
    'boundary (singular) fit')."""
    g = np.repeat(np.arange(10), 5)
    d = pd.DataFrame({"g": g, "y": rng.normal(size=50)})
    # remove every between-group difference exactly: the group means are all equal
    d["y"] -= d.groupby("g")["y"].transform("mean")
    with pytest.warns(SingularFitWarning, match=r"\(1 \| g\).*`g`.*at zero"):
        res = ctx.mixed("y ~ 1 + (1 | g)", d)
    assert res.random_effects["sd"][0] < 1e-3
    assert np.isfinite(res.sigma)


def test_new_groups_need_permission(df):
    res = ctx.mixed("y ~ x + (1 | g)", df)
    new = pd.DataFrame({"x": [0.0, 1.0], "g": [0, 99]})
    with pytest.raises(ValueError, match=r"level\(s\) \[99\].*allow_new_groups=True"):
        res.predict(new)
    pred = res.predict(new, allow_new_groups=True)
    beta = res.params
    assert pred[1] == pytest.approx(beta["Intercept"] + beta["x"], rel=1e-6)
