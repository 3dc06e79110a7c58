"""Name-term-value features: index maps from records / DataFrames, tables back."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

import ctxppl as ctx
from ctxppl.online import IndexMap
from ctxppl.online._features import records_to_arrays


def records():
    feat = lambda n, t, v: SimpleNamespace(name=n, term=t, value=v)  # Lambda Learner style
    return [
        {"entity": "u1", "label": 1, "offset": 0.3,
         "features": [feat("season", "winter", 1.0), feat("age", "", 0.2)]},
        {"entity": "u2", "label": 0, "weight": 2.0, "features": [("season", "summer", 1.0)]},
        {"entity": "u1", "label": 0, "features": [("season", "winter", 1.0),
                                                  ("season", "winter", 0.5)]},
    ]


def test_index_map_from_records_and_transform():
    imap = IndexMap.from_records(records())
    assert imap.name_terms == (("intercept", "intercept"), ("season", "winter"), ("age", ""),
                               ("season", "summer"))
    assert imap.index("season", "summer") == 3
    x = imap.transform(records(), dtype=np.float64)
    # repeated name-terms in one record add up (as a sparse COO matrix would)
    np.testing.assert_array_equal(x, [[1, 1, 0.2, 0], [1, 0, 0, 1], [1, 1.5, 0, 0]])
    with pytest.raises(KeyError, match="not in the index map"):
        imap.index("season", "autumn")


def test_index_map_from_frame_matches_records():
    rows = [(i, nt[0], nt[1], nt[2]) for i, r in enumerate(records())
            for nt in [(f.name, f.term, f.value) if hasattr(f, "name") else f
                       for f in r["features"]]]
    df = pd.DataFrame(rows, columns=["record", "name", "term", "value"])
    imap = IndexMap.from_frame(df)
    assert imap == IndexMap.from_records(records())
    np.testing.assert_array_equal(imap.transform_frame(df), imap.transform(records()))
    with pytest.raises(ValueError, match="no column 'nom'"):
        IndexMap.from_frame(df, name="nom")


def test_tables_round_trip():
    imap = IndexMap([("a", "x"), ("b", "")])
    coef = np.array([[0.5, 1.0, -2.0], [0.0, 3.0, 4.0]])
    t = imap.table(coef, variances=np.ones_like(coef), entities=["e1", "e2"])
    assert list(t.columns) == ["entity", "name", "term", "value", "variance"]
    for i, e in enumerate(["e1", "e2"]):
        np.testing.assert_array_equal(imap.from_table(t[t.entity == e]), coef[i])
    assert IndexMap.from_dict(imap.to_dict()) == imap
    assert imap.extend([("c", "z")]).index("c", "z") == 3


def test_update_records_equals_dense_update():
    recs = [{"entity": f"u{i % 3}", "label": float(i % 4 == 0), "offset": 0.1 * (i % 5),
             "weight": 1.0 + (i % 2), "features": [("f", str(i % 2), 1.0)]}
            for i in range(36)]
    imap = IndexMap.from_records(recs)
    rule = ctx.online.bayes_logistic(1.0)
    a = ctx.online.RandomEffects(rule, imap)
    a.update_records(recs)
    arr = records_to_arrays(recs, imap)
    b = ctx.online.RandomEffects(rule, len(imap))
    b.update(arr["ids"], arr["X"], arr["y"], offset=arr["offset"], weight=arr["weight"])
    np.testing.assert_array_equal(a.state.mean, b.state.mean)
    t = a.table()
    assert set(t.entity) == {"u0", "u1", "u2"} and set(t.name) == {"intercept", "f"}
    got = imap.from_table(t[t.entity == "u1"])
    np.testing.assert_allclose(got, a.coefficients(["u1"])[0], rtol=1e-6)
