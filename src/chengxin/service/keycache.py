"""A short-lived in-process cache of API keys already checked against the database.

A busy service presents the same key thousands of times a second; reading
its row on every request costs a query (and on SQLite a transaction). The
cache maps ``sha256(presented key)`` to what the key grants
(:class:`~chengxin.service.principals.KeyGrant`), for ``ttl``:

* **expiry** takes effect exactly: an entry holds the earlier of the key's
  and the principal's expiry, and a hit past it is refused as ``expired``;
* **revocation** (and any other change to the principal or the key) takes
  effect once the entry is ``ttl`` old, measured on the service's clock:
  within ``CHENGXIN_KEY_CACHE_SECONDS`` (5 s by default; 0 turns the cache off);
* a key the database refused is never cached, so a wrong or unknown key pays
  for the database read and argon2 on every attempt, as before.

Only the digest of a key is kept, never the key. Each worker process has
its own cache; it is bounded (least recently used entries leave first).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from chengxin.service.principals import KeyGrant, Principal, Unauthenticated

DEFAULT_TTL_SECONDS = 5.0
"""How long a checked key is trusted without reading the database again."""


@dataclass(frozen=True, slots=True)
class _Entry:
    grant: KeyGrant
    fresh_until: datetime


class KeyCache:
    """``sha256(key) -> KeyGrant`` for ``ttl``, at most ``size`` entries (thread-safe)."""

    def __init__(self, ttl: timedelta, size: int = 10_000) -> None:
        self.ttl = ttl
        self._size = size
        self._lock = threading.Lock()
        self._items: OrderedDict[bytes, _Entry] = OrderedDict()
        self._flights: dict[bytes, tuple[threading.Lock, int]] = {}

    @property
    def enabled(self) -> bool:
        """Whether anything is cached at all (``ttl`` > 0)."""
        return self.ttl > timedelta(0)

    @staticmethod
    def digest(key: str) -> bytes:
        """What an entry is keyed by: the SHA-256 of the presented key."""
        return hashlib.sha256(key.strip().encode()).digest()

    def get(self, key: str, *, now: datetime) -> Principal | None:
        """The principal of a fresh entry for ``key``, None if there is none.

        :class:`Unauthenticated` (``expired``) if the key or its principal has
        expired since the entry was made.
        """
        if not self.enabled:
            return None
        digest = self.digest(key)
        with self._lock:
            entry = self._items.get(digest)
            if entry is None:
                return None
            if now >= entry.fresh_until:
                del self._items[digest]
                return None
            self._items.move_to_end(digest)
        expires = entry.grant.expires_at
        if expires is not None and expires <= now:
            raise Unauthenticated("the API key is expired", "expired")
        return entry.grant.principal

    def put(self, key: str, grant: KeyGrant, *, now: datetime) -> None:
        """Remember what ``key`` grants, as read from the database at ``now``."""
        if not self.enabled:
            return
        digest, entry = self.digest(key), _Entry(grant, now + self.ttl)
        with self._lock:
            self._items[digest] = entry
            self._items.move_to_end(digest)
            while len(self._items) > self._size:
                self._items.popitem(last=False)

    @contextmanager
    def single_flight(self, key: str) -> Iterator[None]:
        """Held by one thread at a time per key (when the cache is on).

        Concurrent first requests of one key then check it once (argon2 costs
        19 MiB and tens of milliseconds) and the others find it cached.
        """
        if not self.enabled:
            yield
            return
        digest = self.digest(key)
        with self._lock:
            lock, users = self._flights.get(digest, (threading.Lock(), 0))
            self._flights[digest] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._lock:
                lock, users = self._flights[digest]
                if users == 1:
                    del self._flights[digest]
                else:
                    self._flights[digest] = (lock, users - 1)

    def clear(self) -> None:
        """Forget every entry."""
        with self._lock:
            self._items.clear()
