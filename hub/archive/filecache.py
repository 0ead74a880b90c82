"""What was worked out from a stored file, kept while the file is unchanged.

A viewer asks about the same files over and over (every frame of a clip, the
metadata of each series it opens), so the header read is done once. The key
is the path with its size and modification time: a file rewritten by
reconciliation is read again.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

T = TypeVar("T")


class ByFile(Generic[T]):
    """A bounded least-recently-used cache of one value per file."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[tuple[str, int, int], T] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: Path, make: Callable[[Path], T]) -> T:
        """The value for ``path``, made by ``make(path)`` when the file is new or
        changed (outside the lock: two threads may both make it, once each)."""
        st = path.stat()
        key = (str(path), st.st_size, st.st_mtime_ns)
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
                return found
        value = make(path)
        with self._lock:
            self._items[key] = value
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return value
