r"""lme4 formula syntax on top of formulaic: parse, validate and build the design arrays.

formulaic tokenizes the whole formula and materializes every design matrix (fixed effects,
the varying coefficients of each random-effect term, offsets, categorical codings and
interactions, and the same codings again for new data). This module only recognises the
lme4 additions formulaic does not know about:

* ``(expr | g)``: coefficients ``expr`` (a formulaic formula, intercept implied as in lme4)
  varying by group ``g`` with a full (correlated) covariance;
* ``(expr || g)``: the same with independent coefficients (diagonal covariance);
* ``g`` may be ``a:b`` (interaction groups) or ``a/b`` (nested: ``a`` and ``a:b``);
* ``offset(expr)`` terms and a ``cbind(successes, failures)`` response.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import formulaic
import numpy as np
import pandas as pd
from formulaic.parser.algos.tokenize import tokenize
from formulaic.parser.types import Token

from ctxppl.models.mixed._families import Family

__all__ = ["RandomTerm", "ParsedFormula", "parse_formula", "Design", "RandomBlock",
           "GroupingFactor", "build_design"]


class RandomTerm(NamedTuple):
    """One ``(lhs | group)`` term of an lme4 formula."""

    lhs: str
    group: str
    group_columns: tuple[str, ...]
    correlated: bool
    text: str


class ParsedFormula(NamedTuple):
    """A formula split into response, fixed part, random terms and offsets."""

    text: str
    response: str
    cbind: tuple[str, str] | None
    fixed: str
    random: tuple[RandomTerm, ...]
    offsets: tuple[str, ...]


def _kind(t: Any, kind: str) -> bool:
    return t.kind is getattr(Token.Kind, kind)


def _depth_step(t: Any) -> int:
    if _kind(t, "CONTEXT"):
        return 1 if t.token in ("(", "[") else -1
    return 0


def _group_columns(expr: str, term_text: str) -> list[tuple[str, ...]]:
    """``a/b`` -> [(a,), (a, b)], ``a:b`` -> [(a, b)], ``a`` -> [(a,)] (formulaic expands)."""
    try:
        terms = list(formulaic.Formula(expr))
    except Exception as e:  # noqa: BLE001 - re-raised with the term named
        raise ValueError(f"cannot parse the grouping factor {expr!r} of {term_text} in "
                         f"`formula`: {e}") from e
    out = []
    for term in terms:
        cols = tuple(str(f.expr) for f in term.factors)
        if cols == ("1",):
            continue
        out.append(cols)
    if not out:
        raise ValueError(f"{term_text} in `formula` has no grouping factor after '|'.")
    return out


def parse_formula(formula: str) -> ParsedFormula:
    r"""Split an lme4-style formula into its parts (no data needed).

    Args:
        formula: e.g. ``"y ~ x + (x | g) + (1 | a/b)"``.

    Returns:
        A :class:`ParsedFormula`; ``(1|a/b)`` becomes two terms, ``a`` and ``a:b``.

    Examples:
        >>> from ctxppl.models.mixed import parse_formula
        >>> p = parse_formula("y ~ x + (x | g) + (1 | a/b)")
        >>> p.fixed, [t.group for t in p.random]
        ('x', ['g', 'a', 'a:b'])
    """
    if not isinstance(formula, str):
        raise TypeError(f"`formula` must be a string like 'y ~ x + (1 | g)'; got "
                        f"{type(formula).__name__}.")
    try:
        tokens = _split_operators(tokenize(formula), formula)
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"cannot tokenize `formula` {formula!r}: {e}") from e
    depth, tilde = 0, None
    for i, t in enumerate(tokens):
        depth += _depth_step(t)
        if depth < 0:
            raise ValueError(f"`formula` {formula!r} has a ')' without a matching '(' at "
                             f"character {t.source_start + 1}.")
        if _kind(t, "OPERATOR") and t.token == "~" and depth == 0:
            if tilde is not None:
                raise ValueError(f"`formula` {formula!r} has more than one '~'.")
            tilde = i
    if depth > 0:
        raise ValueError(f"`formula` {formula!r} has {depth} unclosed '(': close every "
                         "parenthesis, e.g. 'y ~ x + (1 | g)'.")
    if tilde is None or tilde == 0:
        raise ValueError(f"`formula` must be two-sided, 'response ~ predictors'; got "
                         f"{formula!r}.")
    response = formula[: tokens[tilde].source_start].strip()
    cbind = None
    if response.replace(" ", "").startswith("cbind(") and response.endswith(")"):
        inner = response[response.index("(") + 1: -1]
        parts = [s.strip() for s in inner.split(",")]
        if len(parts) != 2 or not all(parts):
            raise ValueError(f"`formula` response {response!r}: cbind takes two columns, "
                             "cbind(successes, failures).")
        cbind = (parts[0], parts[1])
    # Split the right-hand side at top-level + and - (keeping char spans of each piece).
    pieces: list[tuple[str, list[_Tok], int, int]] = []
    cur: list[_Tok] = []
    sign, start, depth = "+", tokens[tilde].source_start + 1, 0
    for t in tokens[tilde + 1:]:
        if depth == 0 and _kind(t, "OPERATOR") and t.token in ("+", "-"):
            if cur:
                pieces.append((sign, cur, start, t.source_start))
            sign, cur, start = t.token, [], t.source_start + 1
            continue
        depth += _depth_step(t)
        cur.append(t)
    if cur:
        pieces.append((sign, cur, start, len(formula)))
    fixed_parts: list[str] = []
    random: list[RandomTerm] = []
    offsets: list[str] = []
    for sign, toks, a, b in pieces:
        text = formula[a:b].strip()
        bar = _bar(toks)
        if bar is not None:
            if sign != "+":
                raise ValueError(f"random-effect term {text} in `formula` must be added "
                                 "('+'), not subtracted.")
            open_, close = toks[0], toks[-1]
            lhs = formula[open_.source_start + 1: bar.source_start].strip()
            rhs = formula[bar.source_start + len(bar.token): close.source_start].strip()
            if not lhs:
                raise ValueError(f"{text} in `formula` has nothing before '{bar.token}'; "
                                 "write (1 | g) for a random intercept.")
            for cols in _group_columns(rhs, text):
                random.append(RandomTerm(lhs, ":".join(cols), cols, bar.token == "|", text))
            continue
        if len(toks) == 1 and _kind(toks[0], "PYTHON") and toks[0].token.startswith("offset("):
            if sign != "+":
                raise ValueError(f"{text} in `formula` must be added, not subtracted.")
            offsets.append(toks[0].token[len("offset("): -1].strip())
            continue
        fixed_parts.append(f"{sign} {text}")
    fixed = " ".join(fixed_parts).strip()
    if fixed.startswith("+ "):
        fixed = fixed[2:]
    if not fixed:
        fixed = "1"
    return ParsedFormula(formula, response, cbind, fixed, tuple(random), tuple(offsets))


class _Tok(NamedTuple):
    token: str
    kind: Any
    source_start: int


def _split_operators(tokens: Any, formula: str) -> list[_Tok]:
    """formulaic glues adjacent operators ('~ -', '+-'); split those into single characters."""
    out = []
    for t in tokens:
        tok = str(t.token)
        if t.kind is Token.Kind.OPERATOR and len(tok) > 1 and set(tok) <= set("~+-"):
            pos = t.source_start
            for ch in tok:
                pos = formula.index(ch, pos)
                out.append(_Tok(ch, t.kind, pos))
                pos += 1
        else:
            out.append(_Tok(tok, t.kind, t.source_start))
    return out


def _bar(toks: list[_Tok]) -> _Tok | None:
    """The '|' or '||' at depth 1 of a piece that is exactly one parenthesised group."""
    if not (toks and _kind(toks[0], "CONTEXT") and toks[0].token == "("
            and _kind(toks[-1], "CONTEXT") and toks[-1].token == ")"):
        return None
    depth, bar = 0, None
    for i, t in enumerate(toks):
        depth += _depth_step(t)
        if depth == 0 and i != len(toks) - 1:
            return None  # "(a) + ..." style: the first group closes before the end
        if depth == 1 and _kind(t, "OPERATOR") and t.token in ("|", "||"):
            bar = t
    return bar


# ----------------------------------------------------------------------------- design
class GroupingFactor(NamedTuple):
    """Integer codes of a grouping factor and its level labels (sorted)."""

    name: str
    columns: tuple[str, ...]
    codes: np.ndarray
    levels: pd.Index

    @property
    def size(self) -> int:
        return len(self.levels)


class RandomBlock(NamedTuple):
    """Design of one random-effect term: per-observation coefficients ``Z`` (n, q)."""

    term: RandomTerm
    name: str  # unique name (site suffix): the group, or group_k when a group repeats
    factor: GroupingFactor
    Z: np.ndarray
    coef_names: tuple[str, ...]
    spec: Any  # formulaic ModelSpec, to rebuild Z for new data

    @property
    def q(self) -> int:
        return self.Z.shape[1]


@dataclass
class ContextInfo:
    """Group-level context of one grouping factor (raw and standardized)."""

    columns: tuple[str, ...]
    names: tuple[str, ...]
    spec: Any
    values: np.ndarray  # (G, d) raw
    mean: np.ndarray
    scale: np.ndarray

    def standardize(self, c: np.ndarray) -> np.ndarray:
        return (np.asarray(c, float) - self.mean) / self.scale


@dataclass
class Design:
    """Everything a mixed-model engine needs, as float64/int32 numpy arrays."""

    parsed: ParsedFormula
    family: Family
    response: str
    y: np.ndarray
    X: np.ndarray
    x_names: tuple[str, ...]
    x_spec: Any
    blocks: list[RandomBlock]
    offset: np.ndarray | None
    weights: np.ndarray | None
    trials: np.ndarray | None
    rows: pd.Index
    contexts: dict[str, ContextInfo] = field(default_factory=dict)
    offset_arg: Any = None
    dropped: np.ndarray | None = None

    @property
    def n(self) -> int:
        return self.y.shape[0]

    @property
    def p(self) -> int:
        return self.X.shape[1]

    @property
    def factors(self) -> dict[str, GroupingFactor]:
        return {b.factor.name: b.factor for b in self.blocks}

    def intercept_column(self) -> int | None:
        for j, name in enumerate(self.x_names):
            if name == "Intercept":
                return j
        return None


def _close(name: str, columns: list[str]) -> str:
    m = difflib.get_close_matches(name, columns, n=1)
    return f" (did you mean {m[0]!r}?)" if m else ""


def _required(expr: str, where: str) -> set[str]:
    try:
        return set(formulaic.Formula(expr).required_variables)
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"cannot parse {where} {expr!r}: {e}") from e


def _rows_text(rows: pd.Index, mask: np.ndarray) -> str:
    bad = np.flatnonzero(mask)
    labels = [r.item() if hasattr(r, "item") else r for r in rows[bad[:10]]]
    more = f" and {bad.size - 10} more" if bad.size > 10 else ""
    return f"{labels}{more}"


def _matrix(expr: str, data: pd.DataFrame, where: str) -> Any:
    try:
        return formulaic.model_matrix(expr, data, na_action="ignore")
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"cannot build {where} from {expr!r}: {e}") from e


def _as_float(mm: Any, where: str, rows: pd.Index) -> np.ndarray:
    arr = np.asarray(mm, dtype=float)
    if arr.ndim == 1:
        arr = arr[:, None]
    bad = ~np.all(np.isfinite(arr), axis=1)
    if bad.any():
        raise ValueError(f"{where} is NaN/inf at {int(bad.sum())} row(s) {_rows_text(rows, bad)}"
                         " (e.g. log of a non-positive value); fix or drop those rows.")
    return arr


def _column_or_array(arg: Any, data: pd.DataFrame, name: str) -> np.ndarray | None:
    if arg is None:
        return None
    if isinstance(arg, str):
        return np.asarray(data[arg], dtype=float)
    arr = np.asarray(arg, dtype=float)
    if arr.shape != (len(data),):
        raise ValueError(f"`{name}` must be a column name or an array of shape ({len(data)},) "
                         f"(one value per row of `data`); got shape {arr.shape}.")
    return arr


def _factorize(data: pd.DataFrame, cols: tuple[str, ...]) -> tuple[np.ndarray, pd.Index]:
    if len(cols) == 1:
        codes, uniques = pd.factorize(data[cols[0]], sort=True)
        return codes.astype(np.int32), pd.Index(uniques, name=cols[0])
    mi = pd.MultiIndex.from_arrays([data[c] for c in cols])
    codes, uniques = pd.factorize(mi, sort=True)
    labels = [":".join(str(v) for v in u) for u in uniques]
    return codes.astype(np.int32), pd.Index(labels, name=":".join(cols))


def _normalize_context(context: Any, groups: list[str]) -> dict[str, tuple[str, ...]]:
    if context is None:
        return {}
    if isinstance(context, str):
        context = [context]
    if isinstance(context, list | tuple):
        if len(groups) != 1:
            raise ValueError(f"`context` is a list but the formula has {len(groups)} grouping "
                             f"factors {groups}; pass a dict {{group: [columns]}}.")
        return {groups[0]: tuple(context)}
    if isinstance(context, dict):
        out = {}
        for g, cols in context.items():
            if g not in groups:
                raise ValueError(f"`context` key {g!r} is not a grouping factor of the formula; "
                                 f"grouping factors are {groups}.")
            out[g] = (cols,) if isinstance(cols, str) else tuple(cols)
        return out
    raise TypeError(f"`context` must be a column name, a list of columns or a dict "
                    f"{{group: columns}}; got {type(context).__name__}.")


def build_design(parsed: ParsedFormula, data: Any, family: Family, *, weights: Any = None,
                 offset: Any = None, trials: Any = None, context: Any = None,
                 na_action: str = "raise") -> Design:
    """Validate ``data`` against the formula and build every design array.

    Raises ``ValueError`` before any fitting for: unknown columns, missing values in used
    columns (``na_action="raise"``; ``"drop"`` drops those rows), a grouping factor with a
    single level, an outcome the family cannot produce, context columns that vary within a
    group.
    """
    if na_action not in ("raise", "drop"):
        raise ValueError(f"`na_action` must be 'raise' or 'drop'; got {na_action!r}.")
    if isinstance(data, dict):
        data = pd.DataFrame(data)
    if not isinstance(data, pd.DataFrame):
        raise TypeError(f"`data` must be a pandas DataFrame; got {type(data).__name__}.")
    if len(data) == 0:
        raise ValueError("`data` has no rows.")
    columns = [str(c) for c in data.columns]
    groups = list(dict.fromkeys(t.group for t in parsed.random))
    ctx_cols = _normalize_context(context, groups)

    # 1. unknown columns, each named with the place it was used
    uses: dict[str, set[str]] = {}
    resp = parsed.cbind if parsed.cbind else (parsed.response,)
    for r in resp:
        uses.setdefault("the response", set()).update(_required(r, "the response"))
    uses["the fixed effects"] = _required(parsed.fixed, "the fixed effects")
    for t in parsed.random:
        uses.setdefault(t.text, set()).update(_required(t.lhs, t.text) | set(t.group_columns))
    for o in parsed.offsets:
        uses.setdefault(f"offset({o})", set()).update(_required(o, "offset"))
    for name, arg in (("weights", weights), ("offset", offset), ("trials", trials)):
        if isinstance(arg, str):
            uses[f"`{name}`"] = {arg}
    for g, cols in ctx_cols.items():
        uses[f"`context` of {g!r}"] = set(cols)
    unknown = [(v, where) for where, vs in uses.items() for v in sorted(vs) if v not in columns]
    if unknown:
        lines = "; ".join(f"{v!r} (used in {where}){_close(v, columns)}" for v, where in unknown)
        raise ValueError(f"unknown column(s) in `formula`/arguments: {lines}. `data` has "
                         f"columns {columns}.")
    used = sorted(set().union(*uses.values()))

    # 2. missing values in used columns (and in array arguments)
    na = data[used].isna().to_numpy() if used else np.zeros((len(data), 0), bool)
    mask = na.any(axis=1)
    arrays = {}
    for name, arg in (("weights", weights), ("offset", offset), ("trials", trials)):
        if arg is not None and not isinstance(arg, str):
            arr = _column_or_array(arg, data, name)
            arrays[name] = arr
            mask = mask | ~np.isfinite(arr)
    dropped = None
    if mask.any():
        if na_action == "raise":
            per_col = {c: int(n) for c, n in zip(used, na.sum(axis=0), strict=True) if n}
            per_col.update({f"`{k}`": int((~np.isfinite(v)).sum()) for k, v in arrays.items()
                            if (~np.isfinite(v)).any()})
            raise ValueError(f"missing values (NaN/None) in used column(s) {per_col} at "
                             f"{int(mask.sum())} row(s) {_rows_text(data.index, mask)}; "
                             "impute them or pass `na_action='drop'` to drop those rows.")
        dropped = data.index[mask].to_numpy()
        data = data.loc[~mask]
        arrays = {k: v[~mask] for k, v in arrays.items()}
        if len(data) == 0:
            raise ValueError("every row of `data` has a missing value in a used column.")
    rows = data.index

    # 3. response
    if parsed.cbind:
        succ = _as_float(_matrix(f"0 + I({parsed.cbind[0]})", data, "the response"),
                         "the response", rows)[:, 0]
        fail = _as_float(_matrix(f"0 + I({parsed.cbind[1]})", data, "the response"),
                         "the response", rows)[:, 0]
        if trials is not None:
            raise ValueError("give either cbind(successes, failures) or `trials`, not both.")
        y, trial_arr = succ, succ + fail
        if family.name not in ("binomial",):
            raise ValueError(f"a cbind(successes, failures) response needs family='binomial'; "
                             f"got {family.name!r}.")
    else:
        if parsed.response in columns:
            col = data[parsed.response]
            if not (pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col)):
                raise ValueError(f"the response {parsed.response!r} must be numeric or boolean; "
                                 f"got dtype {col.dtype}. Recode it (e.g. 0/1 for bernoulli).")
            y = np.asarray(col, dtype=float)
        else:
            mm = _matrix(f"0 + I({parsed.response})", data, "the response")
            y = _as_float(mm, "the response", rows)
            if y.shape[1] != 1:
                raise ValueError(f"the response {parsed.response!r} must be one numeric column; "
                                 f"it expands to {list(mm.columns)}.")
            y = y[:, 0]
        trial_arr = (arrays["trials"] if "trials" in arrays
                     else _column_or_array(trials, data, "trials"))
    if trial_arr is not None and family.name not in ("binomial",):
        raise ValueError(f"`trials` only applies to family='binomial'; got {family.name!r}.")
    family.check_outcome(y, trial_arr, rows)

    # 4. fixed effects
    mm = _matrix(parsed.fixed, data, "the fixed effects")
    X = _as_float(mm, "the fixed-effect design", rows)
    x_names = tuple(str(c) for c in mm.columns)
    if X.shape[1] == 0:
        raise ValueError("the fixed-effect part of `formula` is empty; keep at least an "
                         "intercept, or add a predictor.")

    # 5. random effects
    factors: dict[str, GroupingFactor] = {}
    blocks: list[RandomBlock] = []
    seen: dict[str, int] = {}
    for t in parsed.random:
        if t.group not in factors:
            codes, levels = _factorize(data, t.group_columns)
            if len(levels) < 2:
                level = levels[:1].tolist()[0]  # a Python value: 3, not np.int64(3)
                raise ValueError(f"grouping factor `{t.group}` in {t.text} has a single level "
                                 f"({level!r}); a random effect needs at least 2 groups. "
                                 "Drop the term (or use the factor as a fixed effect).")
            factors[t.group] = GroupingFactor(t.group, t.group_columns, codes, levels)
        zmm = _matrix(t.lhs, data, f"the random-effect term {t.text}")
        Z = _as_float(zmm, f"the random-effect design of {t.text}", rows)
        if Z.shape[1] == 0:
            raise ValueError(f"random-effect term {t.text} has no coefficients.")
        k = seen.get(t.group, 0)
        seen[t.group] = k + 1
        name = t.group if k == 0 else f"{t.group}_{k}"
        blocks.append(RandomBlock(t, name, factors[t.group], Z,
                                  tuple(str(c) for c in zmm.columns), zmm.model_spec))

    # 6. offsets, weights
    off = None
    for o in parsed.offsets:
        v = _as_float(_matrix(f"0 + I({o})", data, "offset"), f"offset({o})", rows)[:, 0]
        off = v if off is None else off + v
    off_arg = arrays.get("offset", _column_or_array(offset, data, "offset"))
    if off_arg is not None:
        off = off_arg if off is None else off + off_arg
    w = arrays.get("weights", _column_or_array(weights, data, "weights"))
    if w is not None:
        if not (np.all(np.isfinite(w)) and np.all(w >= 0)):
            raise ValueError("`weights` must be finite and non-negative.")
        if family.name == "gaussian" and np.any(w <= 0):
            raise ValueError("gaussian `weights` are precisions and must be > 0; drop rows "
                             "with zero weight.")

    # 7. group-level context
    contexts = {}
    for g, cols in ctx_cols.items():
        contexts[g] = _group_context(data, cols, factors[g], rows)
    return Design(parsed, family, parsed.response, y, X, x_names, mm.model_spec, blocks, off, w,
                  trial_arr, rows, contexts, offset, dropped)


def _group_context(data: pd.DataFrame, cols: tuple[str, ...], factor: GroupingFactor,
                   rows: pd.Index) -> ContextInfo:
    mm = _matrix("0 + " + " + ".join(f"`{c}`" if not c.isidentifier() else c for c in cols),
                 data, f"`context` of {factor.name!r}")
    C = _as_float(mm, f"`context` of {factor.name!r}", rows)
    G = factor.size
    first = np.full(G, -1)
    order = np.arange(len(factor.codes))
    first[factor.codes[::-1]] = order[::-1]
    per_group = C[first]
    dev = np.abs(C - per_group[factor.codes]).max(axis=1)
    if np.any(dev > 1e-8 * (1 + np.abs(C).max())):
        i = int(np.flatnonzero(dev > 1e-8 * (1 + np.abs(C).max()))[0])
        g = factor.levels[factor.codes[i]]
        raise ValueError(f"`context` columns {list(cols)} must be constant within each group of "
                         f"`{factor.name}` (group-level covariates); group {g!r} has several "
                         "values. For observation-level encoders write the program with "
                         "ctx.contextual directly.")
    mean = per_group.mean(axis=0)
    scale = per_group.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    return ContextInfo(tuple(cols), tuple(str(c) for c in mm.columns), mm.model_spec, per_group,
                       mean, scale)
