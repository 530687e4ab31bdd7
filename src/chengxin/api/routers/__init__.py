"""The API's routers, one per resource."""

from __future__ import annotations

from fastapi import FastAPI


def include_all(app: FastAPI) -> None:
    """Mount every router on ``app``, with the state they share (``app.state.api``)."""
    from chengxin.api import deps
    from chengxin.api.routers import (
        audit,
        checks,
        health,
        lists,
        policies,
        public,
        records,
        session,
        subjects,
        webhooks,
    )

    app.include_router(deps.install(app))
    # Starlette tries routes in order: the busiest first (checks), then the probes.
    app.include_router(checks.router)
    app.include_router(health.router)
    for module in (records, subjects, lists, public, policies, audit, session, webhooks):
        app.include_router(module.router)
