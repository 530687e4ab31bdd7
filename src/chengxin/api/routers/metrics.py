"""Prometheus metrics: ``GET /metrics`` in the text exposition format.

Nothing here is personal data: labels are route templates, methods,
statuses, measure codes and decisions. Keep the endpoint off the public
side of the proxy all the same (see docs/operations.md).
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from chengxin.api.metrics import metrics

router = APIRouter(tags=["operations"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
    summary="Prometheus metrics",
)
async def read_metrics(request: Request) -> Response:
    """Request latency, checks by decision, ingest by outcome, outbox lag (read now)."""
    found = metrics(request)
    # The outbox lag is a database read: keep it off the event loop.
    body = await run_in_threadpool(found.exposition)
    return Response(body, media_type=found.content_type)
