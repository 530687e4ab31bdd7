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
        }
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]
