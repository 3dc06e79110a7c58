"""Splitters: partitions, weights, sklearn agreement, and input errors."""

import numpy as np
import pytest
from sklearn import model_selection

import ctxppl as ctx
from ctxppl.workflow._splits import as_splits


def test_kfold_partitions_rows_and_matches_sklearn():
    s = ctx.workflow.kfold(23, k=5, seed=3)
    assert len(s) == 5 and s.kind == "kfold"
    held = np.sort(np.concatenate(s.test))
    np.testing.assert_array_equal(held, np.arange(23))  # every row held out exactly once
    ref = list(model_selection.KFold(5, shuffle=True, random_state=3).split(np.zeros((23, 1))))
    for (tr, te), (rtr, rte) in zip(s, ref, strict=True):
        np.testing.assert_array_equal(tr, rtr)
        np.testing.assert_array_equal(te, rte)
    W = s.weights()
    assert W.shape == (5, 23) and W.dtype == np.float32
    np.testing.assert_array_equal(W, 1.0 - s.test_mask())


def test_stratified_kfold_keeps_label_proportions():
    y = np.repeat([0, 1], [30, 10])
    s = ctx.workflow.kfold(40, k=5, stratify=y)
    assert s.kind == "stratified_kfold"
    for te in s.test:
        assert np.sum(y[te] == 1) == 2 and np.sum(y[te] == 0) == 6


def test_repeated_and_group_kfold():
    s = ctx.workflow.repeated_kfold(12, k=3, repeats=2, seed=1)
    assert len(s) == 6
    first, second = np.sort(np.concatenate(s.test[:3])), np.sort(np.concatenate(s.test[3:]))
    np.testing.assert_array_equal(first, np.arange(12))
    np.testing.assert_array_equal(second, np.arange(12))
    groups = np.repeat(np.arange(6), 3)
    g = ctx.workflow.group_kfold(groups, k=3)
    for tr, te in g:
        assert not set(groups[tr]) & set(groups[te])  # no group on both sides


def test_bootstrap_weights_are_counts_and_test_is_out_of_bag():
    s = ctx.workflow.bootstrap(40, num=7, seed=2)
    W = s.weights()
    assert W.shape == (7, 40)
    np.testing.assert_array_equal(W.sum(axis=1), 40.0)
    for i, (tr, te) in enumerate(s):
        np.testing.assert_array_equal(W[i], np.bincount(tr, minlength=40))
        np.testing.assert_array_equal(np.sort(te), np.flatnonzero(W[i] == 0))


def test_holdout_and_insample():
    s = ctx.workflow.holdout(20, test_size=0.25, num=3, seed=0)
    assert len(s) == 3 and all(len(t) == 5 for t in s.test)
    for tr, te in s:
        assert not set(tr) & set(te)
    ins = ctx.workflow.insample(np.zeros((4, 2)))  # array-like: its length
    np.testing.assert_array_equal(ins.weights(), np.ones((1, 4)))
    np.testing.assert_array_equal(ins.test[0], np.arange(4))
    both = ctx.workflow.kfold(4, k=2) + ins
    assert len(both) == 3 and both.kind == "kfold+insample"
    np.testing.assert_array_equal(both.weights()[2], np.ones(4))
    with pytest.raises(ValueError, match="cannot add splits over 4 and 5 rows"):
        both + ctx.workflow.insample(5)


def test_bad_splits_raise_with_the_argument_named():
    with pytest.raises(ValueError, match=r"`train\[1\]` must lie in \[0, 4\)"):
        ctx.workflow.Splits(4, train=[[0, 1], [2, 9]], test=[[2], [0]])
    with pytest.raises(ValueError, match="same number of splits"):
        ctx.workflow.Splits(4, train=[[0, 1]], test=[[2], [3]])
    with pytest.raises(ValueError, match="`k`=5 folds need at least 5 rows"):
        ctx.workflow.kfold(4, k=5)
    with pytest.raises(ValueError, match="`k` must be an int >= 2"):
        ctx.workflow.kfold(10, k=1)
    with pytest.raises(ValueError, match="made for 10 rows but the data"):
        as_splits(ctx.workflow.kfold(10), 12)
    with pytest.raises(ValueError, match=r"must lie in \[0, 5\)"):
        as_splits([(np.array([0, 1]), np.array([5]))], 5)
    with pytest.raises(TypeError, match="list of \\(train, test\\)"):
        as_splits([np.arange(3)], 5)
    with pytest.raises(ValueError, match="`train\\[0\\]` is empty"):
        ctx.workflow.Splits(3, train=[np.array([], int)], test=[np.arange(3)])
