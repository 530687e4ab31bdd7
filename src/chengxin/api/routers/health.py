"""Liveness and readiness."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up (no database access: the baseline of the load benchmarks)."""
    return {"status": "ok"}


@router.get("/readyz", response_model=None)
def readyz(request: Request) -> Any:
    """The database answers and its schema is current."""
    from chengxin.store.db import current_revision, head_revision

    engine = request.app.state.runtime.engine
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        have, want = current_revision(engine), head_revision(engine)
    except Exception as exc:  # any failure means not ready
        return JSONResponse({"status": "unavailable", "reason": str(exc)[:200]}, 503)
    if have != want:
        return JSONResponse({"status": "unavailable", "reason": f"schema {have}, need {want}"}, 503)
    return {"status": "ready", "schema": have}
