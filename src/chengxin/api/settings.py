"""Settings of the HTTP service, read once by the app factory (never at import time)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Settings:
    """What the service needs to start: the database, limits and secrets."""

    db: str = "chengxin.sqlite"
    max_body_bytes: int = 8 * 1024 * 1024
    max_batch: int = 10_000
    public_rate: str = "60/minute"
    session_secret: str = field(default="", repr=False)
    cookie_secure: bool = False
    key_cache_seconds: float = 5.0
    """How long a checked API key is trusted without reading the database (0: off)."""
    audit_batch_max: int = 256
    """Audit events of concurrent checks committed in one transaction at most."""
    audit_batch_wait_ms: float = 0.0
    """How long the audit writer waits for more events after the first of a batch."""

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        """Settings from ``CHENGXIN_*`` environment variables, then ``overrides``."""
        env = os.environ
        values: dict[str, object] = {
            "db": env.get("CHENGXIN_DB", cls.db),
            "max_body_bytes": int(env.get("CHENGXIN_MAX_BODY_BYTES", cls.max_body_bytes)),
            "max_batch": int(env.get("CHENGXIN_MAX_BATCH", cls.max_batch)),
            "public_rate": env.get("CHENGXIN_PUBLIC_RATE", cls.public_rate),
            "session_secret": env.get("CHENGXIN_SESSION_SECRET", ""),
            "cookie_secure": env.get("CHENGXIN_COOKIE_SECURE", "") == "1",
            "key_cache_seconds": float(
                env.get("CHENGXIN_KEY_CACHE_SECONDS", cls.key_cache_seconds)
            ),
            "audit_batch_max": int(env.get("CHENGXIN_AUDIT_BATCH_MAX", cls.audit_batch_max)),
            "audit_batch_wait_ms": float(
                env.get("CHENGXIN_AUDIT_BATCH_WAIT_MS", cls.audit_batch_wait_ms)
            ),
        }
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]
