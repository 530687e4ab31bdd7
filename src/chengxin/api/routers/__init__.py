"""The API's routers, one per resource."""

from __future__ import annotations

from fastapi import FastAPI


def include_all(app: FastAPI) -> None:
    """Mount every router on ``app``."""
    from chengxin.api.routers import health

    app.include_router(health.router)
