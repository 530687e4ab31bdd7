"""Every request timed, counted and logged: one ASGI middleware, no personal data.

For each HTTP request it

* takes the request id from ``X-Request-ID`` when that is a UUID or 32 hex
  digits (what proxies generate), else makes one, and returns it in
  ``X-Request-ID``; handlers find it in ``request.state.request_id``;
* observes ``chengxin_http_request_duration_seconds{method, route, status}``,
  where ``route`` is the matched route's template, never the path;
* logs one JSON line on ``chengxin.access`` (see :mod:`chengxin.api.logging`),
  with the principal's name and role when authentication put a
  :class:`~chengxin.service.principals.Principal` in ``request.state.principal``
  -- a subject's own name is left out: it is the person's.

Body size and media type are guarded per route (``deps.GuardedRoute``), not here.
It is plain ASGI rather than Starlette's ``BaseHTTPMiddleware``, which would
copy every body through a task and an extra stream.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import time
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chengxin.api.logging import ACCESS_LOGGER
from chengxin.api.metrics import Metrics

access_log = logging.getLogger(ACCESS_LOGGER)

REQUEST_ID_HEADER = "X-Request-ID"
_REQUEST_ID_KEY = REQUEST_ID_HEADER.lower().encode("latin-1")
# A UUID or 32 hex digits: what proxies send. Anything else could carry an identifier.
_REQUEST_ID = re.compile(
    rb"^(?:[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
    rb"|[0-9a-fA-F]{32})$"
)
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"
"""The ``route`` label of a request no route matched (the path is never a label)."""


def route_template(scope: Scope) -> str:
    """The template of the route that handled ``scope`` (``/v1/lists/{code}/members``)."""
    route = scope.get("route")
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    return template if isinstance(template, str) else UNMATCHED


class _RequestIds:
    """Fresh request ids: 16 random hex digits per process, then a 16-digit counter.

    Not ``os.urandom`` per request: that system call lets go of the GIL, and
    the event loop then waits to get it back from a busy thread.
    """

    def __init__(self) -> None:
        self._reset()
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._prefix = os.urandom(8).hex()
        self._count = itertools.count()

    def next(self) -> bytes:
        """A request id that no other request, in any process, is likely to have."""
        return f"{self._prefix}{next(self._count):016x}".encode("ascii")


_fresh_ids = _RequestIds()


def _request_id(scope: Scope) -> bytes:
    for key, value in scope["headers"]:
        if key == _REQUEST_ID_KEY and _REQUEST_ID.match(value):
            return bytes(value.lower())
    return _fresh_ids.next()


def _who(scope: Scope) -> tuple[str | None, str | None]:
    principal = scope.get("state", {}).get("principal")
    role = getattr(principal, "role", None)
    if role is None:
        return None, None
    name = None if role == "subject" else getattr(principal, "name", None)
    return name, role


class ObservabilityMiddleware:
    """Times, counts and logs each HTTP request; stamps it with a request id."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the request through the app, then observe and log it."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = _request_id(scope)
        scope.setdefault("state", {})["request_id"] = request_id.decode("ascii")
        status = 0

        async def stamped(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = list(message.get("headers", ()))
                headers.append((_REQUEST_ID_KEY, request_id))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, stamped)
        except BaseException:
            status = status or 500  # what ServerErrorMiddleware answers
            raise
        finally:
            self._observe(scope, status or 500, time.perf_counter() - started, request_id)

    def _observe(self, scope: Scope, status: int, seconds: float, request_id: bytes) -> None:
        method = scope["method"] if scope["method"] in _METHODS else "other"
        route = route_template(scope)
        self.metrics.requests.labels(method, route, str(status)).observe(seconds)
        if not access_log.isEnabledFor(logging.INFO):
            return
        principal, role = _who(scope)
        fields: dict[str, Any] = {
            "method": method,
            "route": route,
            "status": status,
            "duration_ms": round(seconds * 1000, 2),
            "principal": principal,
            "role": role,
            "request_id": request_id.decode("ascii"),
        }
        access_log.info("request", extra={"fields": fields})


def install(app: FastAPI, metrics: Metrics) -> None:
    """Put the middleware in front of ``app``'s routes (inside its 500 handler)."""
    app.add_middleware(ObservabilityMiddleware, metrics=metrics)
