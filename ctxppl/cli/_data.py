"""Reading and checking the CSV input of the ``ctxppl`` command line.

Every problem with the user's files or options raises :class:`UsageError` (exit code 2)
before any fitting starts, with a message that names the file, option and column.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pandas as pd

__all__ = ["UsageError", "read_csv", "split_columns", "require_columns", "numeric_matrix",
           "row_ids", "check_outcome", "MODELS", "METHODS"]

MODELS = ("regression", "classification", "markov", "bayesian-network", "mixed")
METHODS = ("map", "svi", "nuts")
#: Most distinct labels ``--model classification`` accepts before calling the outcome
#: continuous.
MAX_CLASSES = 50


class UsageError(Exception):
    """Bad command-line usage or input data (the command exits with code 2)."""


def read_csv(path: str, what: str = "DATA.csv") -> pd.DataFrame:
    """Read a CSV file, turning every I/O or parse problem into a :class:`UsageError`.

    Examples:
        >>> import os, pathlib, tempfile
        >>> p = os.path.join(tempfile.mkdtemp(), "d.csv")
        >>> _ = pathlib.Path(p).write_text("a,b\\n1,2\\n3,4\\n")
        >>> read_csv(p).shape
        (2, 2)
        >>> read_csv(p + ".missing")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ctxppl.cli._data.UsageError: `DATA.csv`: no such file: '...d.csv.missing'.
    """
    if not os.path.exists(path):
        raise UsageError(f"`{what}`: no such file: {path!r}.")
    if os.path.isdir(path):
        raise UsageError(f"`{what}`: {path!r} is a folder; expected a CSV file.")
    try:
        df = pd.read_csv(path)
    except pd.errors.EmptyDataError as e:
        raise UsageError(f"`{what}`: {path!r} is empty.") from e
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise UsageError(f"`{what}`: cannot parse {path!r} as CSV: {e}") from e
    if df.shape[0] == 0:
        raise UsageError(f"`{what}`: {path!r} has a header but no rows.")
    df.columns = [str(c).strip() for c in df.columns]
    return df


def split_columns(value: str | None, option: str) -> list[str]:
    """``"a, b,c"`` -> ``["a", "b", "c"]``; rejects empty names and duplicates.

    Examples:
        >>> split_columns("x1, x2", "--predictors")
        ['x1', 'x2']
    """
    if value is None:
        return []
    cols = [c.strip() for c in value.split(",")]
    if any(not c for c in cols):
        raise UsageError(f"`{option}` has an empty column name in {value!r}; write "
                         "comma-separated names such as `a,b`.")
    dup = sorted({c for c in cols if cols.count(c) > 1})
    if dup:
        raise UsageError(f"`{option}` names column(s) {dup} more than once.")
    return cols


def require_columns(df: pd.DataFrame, cols: Sequence[str], option: str, path: str) -> None:
    """Raise :class:`UsageError` naming the unknown columns and listing the file's columns."""
    missing = [c for c in cols if c not in df.columns]
    if missing:
        have = list(df.columns)
        shown = ", ".join(have[:30]) + (" ..." if len(have) > 30 else "")
        raise UsageError(f"`{option}`: column(s) {missing} not in {path!r}; its columns are: "
                         f"{shown}.")


def numeric_matrix(df: pd.DataFrame, cols: Sequence[str], option: str, path: str
                   ) -> np.ndarray:
    """The columns as a float ``(n, len(cols))`` array; non-numeric or NaN columns raise
    :class:`UsageError` naming the column and the first offending rows (1-based data rows).

    Examples:
        >>> df = pd.DataFrame({"a": [1.0, 2.0], "b": ["x", "y"]})
        >>> numeric_matrix(df, ["a"], "--context", "d.csv").shape
        (2, 1)
        >>> numeric_matrix(df, ["b"], "--context", "d.csv")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ctxppl.cli._data.UsageError: `--context`: column 'b' of 'd.csv' is not numeric ...
    """
    require_columns(df, cols, option, path)
    out = []
    for c in cols:
        s = df[c]
        if s.dtype == bool:
            s = s.astype(float)
        if not pd.api.types.is_numeric_dtype(s):
            conv = pd.to_numeric(s, errors="coerce")
            bad = conv.isna() & s.notna()
            i = int(np.flatnonzero(bad.to_numpy())[0]) if bad.any() else 0
            example = s.iloc[i:i + 1].tolist()[0]  # a Python value, not np.str_(...)
            raise UsageError(
                f"`{option}`: column {c!r} of {path!r} is not numeric (dtype {s.dtype}, e.g. "
                f"{example!r} in data row {i + 1}); encode it as numbers (for categories: "
                "one 0/1 column per level).")
        v = s.to_numpy(dtype=float)
        bad = ~np.isfinite(v)
        if bad.any():
            rows = (np.flatnonzero(bad)[:5] + 1).tolist()
            raise UsageError(f"`{option}`: column {c!r} of {path!r} has {int(bad.sum())} "
                             f"missing/NaN/inf value(s) (data rows {rows}"
                             f"{' ...' if bad.sum() > 5 else ''}); drop or impute those rows "
                             "first.")
        out.append(v)
    return np.stack(out, axis=1)


def row_ids(df: pd.DataFrame, id_col: str | None, path: str) -> pd.Series:
    """Row identifiers: the ``--id`` column (must be unique, no missing values) or the
    0-based row number, as a Series named after the column (``"row"`` by default)."""
    if id_col is None:
        return pd.Series(np.arange(len(df)), name="row")
    require_columns(df, [id_col], "--id", path)
    ids = df[id_col]
    if ids.isna().any():
        raise UsageError(f"`--id`: column {id_col!r} of {path!r} has missing values.")
    if ids.duplicated().any():
        dup = ids[ids.duplicated()].iloc[:5].tolist()
        raise UsageError(f"`--id`: column {id_col!r} of {path!r} is not unique (repeated: "
                         f"{dup}).")
    return ids.reset_index(drop=True).rename(id_col)


def check_outcome(model: str, df: pd.DataFrame, outcome: str | None, path: str) -> None:
    """Check that ``--outcome`` suits ``--model`` (exists, right kind, no missing values)."""
    networks = ("markov", "bayesian-network")
    if model in networks:
        if outcome is not None:
            raise UsageError(f"`--model {model}` learns a network among the `--predictors` "
                             f"and takes no `--outcome` (got {outcome!r}); add the outcome "
                             "to `--predictors` to make it a node of the network.")
        return
    if outcome is None:
        raise UsageError(f"`--model {model}` needs `--outcome COLUMN`.")
    require_columns(df, [outcome], "--outcome", path)
    y = df[outcome]
    if y.isna().any():
        rows = (np.flatnonzero(y.isna().to_numpy())[:5] + 1).tolist()
        raise UsageError(f"`--outcome`: column {outcome!r} of {path!r} has "
                         f"{int(y.isna().sum())} missing value(s) (data rows {rows}).")
    numeric = pd.api.types.is_numeric_dtype(y) and y.dtype != bool
    if model in ("regression", "mixed"):
        if not numeric:
            example = y.iloc[:1].tolist()[0]
            raise UsageError(f"`--model {model}` needs a numeric `--outcome`; column "
                             f"{outcome!r} has dtype {y.dtype} (e.g. {example!r}). For "
                             "class labels use `--model classification`.")
        if not np.all(np.isfinite(y.to_numpy(dtype=float))):
            raise UsageError(f"`--outcome`: column {outcome!r} of {path!r} has inf values.")
        if y.nunique() < 2:
            raise UsageError(f"`--outcome`: column {outcome!r} is constant; nothing to model.")
        return
    # classification
    k = y.nunique()
    if k < 2:
        raise UsageError(f"`--model classification` needs at least 2 classes in `--outcome`; "
                         f"column {outcome!r} has only {y.unique().tolist()}.")
    if numeric and y.dtype.kind == "f" and not np.all(np.mod(y.to_numpy(), 1) == 0):
        raise UsageError(f"`--model classification` needs class labels, but `--outcome` "
                         f"column {outcome!r} holds non-integer numbers (e.g. "
                         f"{float(y[np.mod(y, 1) != 0].iloc[0])!r}); use `--model regression`.")
    if k > MAX_CLASSES:
        raise UsageError(f"`--model classification`: `--outcome` column {outcome!r} has {k} "
                         f"distinct values (more than {MAX_CLASSES}); it looks continuous. "
                         "Use `--model regression`.")
