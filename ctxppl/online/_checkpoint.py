"""Checkpoints of one entity type's random effects: exact, atomic, pickle-free."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ctxppl._files import read_npz, write_npz
from ctxppl.online._features import IndexMap
from ctxppl.online._rules import Rule
from ctxppl.online._state import EntityIndex, EntityState

__all__ = ["Checkpoint", "FORMAT"]

FORMAT = "ctxppl.online.RandomEffects/1"


class Checkpoint:
    """``save`` / ``load`` of :class:`~ctxppl.online.RandomEffects` (a mixin)."""

    def _arrays(self, prefix: str = "") -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        st = self.state
        arrays = {prefix + k: np.ascontiguousarray(v) for k, v in st._asdict().items()}
        arrays[prefix + "keys"] = self._index.to_array()
        meta = {"format": FORMAT, "rule": self.rule.to_dict(), "step": self.step,
                "num_features": self.num_features, "dtype": self.dtype.name,
                "key_kind": self._index.kind,
                "features": None if self.features is None else self.features.to_dict(),
                "prior_mean": (self.prior_mean.tolist() if isinstance(self.prior_mean,
                                                                       np.ndarray) else None),
                "prior_mean_callable": callable(self.prior_mean)}
        return arrays, meta

    def save(self, path: str | os.PathLike) -> None:
        """Checkpoint to ``path`` (``.npz``), atomically; :meth:`load` restores it exactly
        (state arrays bit for bit, entity keys, index map, rule and step).

        Examples:
            >>> import os, tempfile, numpy as np, ctxppl as ctx
            >>> re = ctx.online.RandomEffects(ctx.online.ridge(), 1)
            >>> _ = re.update(["a"], np.ones((1, 1)), np.ones(1))
            >>> p = os.path.join(tempfile.mkdtemp(), "re.npz"); re.save(p)
            >>> back = ctx.online.RandomEffects.load(p)
            >>> bool(np.array_equal(back.state.mean, re.state.mean)), back.step
            (True, 0)
        """
        arrays, meta = self._arrays()
        write_npz(path, arrays, meta)

    @classmethod
    def _from_arrays(cls, arrays: dict, meta: dict, prefix: str = "", *,
                     prior_mean: Any = None, threads: int | None = None) -> Any:
        if meta.get("format") != FORMAT:
            raise ValueError(f"not a RandomEffects checkpoint (format {meta.get('format')!r}).")
        rd = dict(meta["rule"])
        if isinstance(rd["prior_precision"], list):
            rd["prior_precision"] = tuple(rd["prior_precision"])
        rule = Rule(**rd)
        feats = (IndexMap.from_dict(meta["features"]) if meta["features"] is not None
                 else meta["num_features"])
        if prior_mean is None and meta["prior_mean"] is not None:
            prior_mean = meta["prior_mean"]
        if prior_mean is None and meta["prior_mean_callable"]:
            raise ValueError("this checkpoint's prior mean was a function of the context; "
                             "pass it again: load(path, prior_mean=...).")
        out = cls(rule, feats, prior_mean=prior_mean, dtype=meta["dtype"], threads=threads)
        st = EntityState(*(arrays[prefix + f] for f in EntityState._fields))
        out._state = st
        keys = arrays[prefix + "keys"]
        out._index = EntityIndex(keys.astype(object) if meta["key_kind"] == "str" else keys)
        out.step = int(meta["step"])
        return out

    @classmethod
    def load(cls, path: str | os.PathLike, *, prior_mean: Any = None,
             threads: int | None = None) -> Any:
        """Restore a checkpoint written by :meth:`save`.

        Args:
            path: The ``.npz`` file.
            prior_mean: The prior-mean function, if the saved table had one (functions are
                not pickled into checkpoints).
            threads: As in the constructor.

        Examples:
            See :meth:`save`.
        """
        arrays, meta = read_npz(path, expect=FORMAT.rpartition("/")[0])
        return cls._from_arrays(arrays, meta, prior_mean=prior_mean, threads=threads)
