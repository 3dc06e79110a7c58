"""A small thread-safe least-recently-used map: the in-process memo of derived values (model
structures, NUTS runners, compiled programs) that ctxppl keeps per model and shapes, like
``jax.jit``'s own cache."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

__all__ = ["LRU"]

V = TypeVar("V")


class LRU(Generic[V]):
    """At most ``size`` entries; the least recently used goes first. Safe across threads.

    Examples:
        >>> memo = LRU(2)
        >>> memo.put("a", 1); memo.put("b", 2); memo.get("a")
        1
        >>> memo.put("c", 3)  # "b" was used least recently
        >>> memo.get("b") is None, len(memo)
        (True, 2)
        >>> memo.get_or_make("d", lambda: 4)
        4
        >>> memo.pop("d"), memo.pop("d")
        (4, None)
    """

    def __init__(self, size: int):
        if size < 1:
            raise ValueError(f"`size` must be a positive int; got {size!r}.")
        self.size = size
        self._items: OrderedDict[Hashable, V] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: Hashable) -> V | None:
        """The value of ``key`` (now the most recently used), or ``None``."""
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: Hashable, value: V) -> None:
        """Remember ``value`` under ``key``, forgetting the oldest entry beyond ``size``."""
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def pop(self, key: Hashable) -> V | None:
        """Remove ``key`` and return its value, or ``None``."""
        with self._lock:
            return self._items.pop(key, None)

    def get_or_make(self, key: Hashable, make: Callable[[], V]) -> V:
        """The value of ``key``, made by ``make()`` (under the lock: made once) if absent."""
        with self._lock:
            value = self._items.get(key)
            if value is None:
                value = self._items[key] = make()
                while len(self._items) > self.size:
                    self._items.popitem(last=False)
            else:
                self._items.move_to_end(key)
            return value

    def clear(self) -> None:
        """Forget every entry."""
        with self._lock:
            self._items.clear()
