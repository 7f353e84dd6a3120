"""One at a time per key, in this process: handlers whose events write the same
hot document (a best seller's stock) would only conflict in their transactions
and re-run; queued on a green lock per key instead, they run back to back.

Across replicas the transactions still conflict now and then, and the
write-conflict retry (shared.retry) settles that; inside one process, where
the prefetch window holds many events for the same few documents, nothing
conflicts."""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from eventlet.semaphore import Semaphore


class KeyedLocks:
    def __init__(self):
        self._locks: dict[str, tuple[Semaphore, int]] = {}

    @contextmanager
    def holding(self, keys: Iterable[str]) -> Iterator[None]:
        """Hold every key's lock; taken in sorted order so two holders never wait on each other."""
        taken: list[str] = []
        try:
            for key in sorted(set(keys)):
                lock, users = self._locks.get(key) or (Semaphore(1), 0)
                self._locks[key] = (lock, users + 1)
                taken.append(key)
                lock.acquire()
            yield
        finally:
            for key in reversed(taken):
                lock, users = self._locks[key]
                lock.release()
                if users == 1:
                    del self._locks[key]  # nobody waits: the table holds only keys in use
                else:
                    self._locks[key] = (lock, users - 1)

    def __len__(self) -> int:
        return len(self._locks)


# One table per process, shared by every handler that names a key: the keys say
# which documents they write (e.g. "stock:<product_id>"), whatever the event.
HOT_KEYS = KeyedLocks()
