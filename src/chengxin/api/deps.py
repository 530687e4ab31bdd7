"""FastAPI dependencies, declared once as aliases: ``DbSession``, ``Caller``, ``Now``, ``require``.

``DbSession`` is one transaction per request: committed when the handler
returns without error (before the response is sent), rolled back otherwise.
``Caller`` is the authenticated principal (401 ``unauthenticated`` without
valid credentials); ``require(*roles)`` lets only those roles through
(403 ``forbidden``, or 404 for the roles the route must not reveal anything
to). Everything is denied unless a role allows it.

Authentication reads its own short read-only transaction, not the
request's (on SQLite a request transaction held open would make the fast
checker wait for the writer lock), and only on a miss of the key cache
(:mod:`chengxin.service.keycache`): a key checked in the last
``key_cache_seconds`` is answered from memory, on the event loop. The
dependencies here are ``async`` so that a request hands work to the thread
pool only where it blocks.
"""

from __future__ import annotations

import contextlib
import math
import queue
import secrets
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.dependencies.models import Dependant, SecurityRequirement
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.security import APIKeyCookie, HTTPBearer
from limits import RateLimitItem, parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from sqlalchemy import Engine
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from chengxin.api.errors import ApiError, error_body
from chengxin.service.audit_writer import AuditWriter
from chengxin.service.checker import Checker
from chengxin.service.checking import gc_paused
from chengxin.service.clock import Clock
from chengxin.service.errors import ServiceError
from chengxin.service.keycache import KeyCache
from chengxin.service.principals import Principal, Role
from chengxin.store.db import read_transaction

COOKIE_NAME = "chengxin_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
JSON = "application/json"
LOGIN_RATE = "10/minute"  # per client address and name (OWASP: throttle password guessing)
CHECKERS_PER_APP = 4  # fast checkers each hold a pooled connection; the pool has 5 + 10


class HeaderedError(ApiError):
    """An :class:`ApiError` that also sets response headers (Retry-After, WWW-Authenticate)."""

    def __init__(
        self, status: int, code: str, message: str, *, headers: dict[str, str], **extra: Any
    ) -> None:
        super().__init__(status, code, message, **extra)
        self.headers = headers


# -- the state routes share (built once per app) -------------------------------


class CheckerPool:
    """At most ``size`` fast checkers, each lent to one request at a time (not thread-safe)."""

    def __init__(self, engine: Engine, clock: Clock, size: int) -> None:
        self._engine = engine
        self._clock = clock
        self._size = size
        self._idle: queue.LifoQueue[Checker] = queue.LifoQueue()
        self._lock = threading.Lock()
        self._live: list[Checker] = []

    @contextmanager
    def checker(self) -> Iterator[Checker]:
        """Borrow a checker; one whose connection failed is closed, not returned."""
        try:
            chk = self._idle.get_nowait()
        except queue.Empty:
            chk = self._new() or self._idle.get(timeout=30)
        try:
            yield chk
        except ServiceError:
            self._idle.put(chk)
            raise
        except BaseException:
            self._drop(chk)
            raise
        else:
            self._idle.put(chk)

    def _new(self) -> Checker | None:
        with self._lock:
            if len(self._live) >= self._size:
                return None
            chk = Checker(self._engine, clock=self._clock)
            self._live.append(chk)
            return chk

    def _drop(self, chk: Checker) -> None:
        with self._lock:
            if chk in self._live:
                self._live.remove(chk)
        with contextlib.suppress(Exception):  # the connection is already gone
            chk.close()

    def close(self) -> None:
        """Close every checker (at shutdown)."""
        with self._lock:
            live, self._live = self._live, []
        for chk in live:
            with contextlib.suppress(Exception):  # the connection is already gone
                chk.close()


@dataclass
class ApiState:
    """What the routers share: the session signer's secret, rate limiters, checkers, caches."""

    session_secret: str
    limiter: MovingWindowRateLimiter
    public_rate: RateLimitItem
    login_rate: RateLimitItem
    checkers: CheckerPool
    keys: KeyCache
    audit: AuditWriter
    decide_on_writer: bool
    """Checks decide with the audit writer's batch (SQLite, in process) or in the pool."""


def install(app: FastAPI) -> APIRouter:
    """Build the shared state on ``app``; the returned router closes it at shutdown."""
    runtime = app.state.runtime
    settings = runtime.settings
    # A random secret when none is set: sessions then end when the process does.
    secret = settings.session_secret or secrets.token_urlsafe(32)
    sqlite = runtime.engine.dialect.name == "sqlite"  # one process, no round trips: inline
    app.state.api = ApiState(
        session_secret=secret,
        limiter=MovingWindowRateLimiter(MemoryStorage()),
        public_rate=parse(settings.public_rate),
        login_rate=parse(LOGIN_RATE),
        checkers=CheckerPool(runtime.engine, runtime.clock, CHECKERS_PER_APP),
        keys=KeyCache(timedelta(seconds=settings.key_cache_seconds)),
        audit=AuditWriter(
            runtime.engine,
            max_batch=settings.audit_batch_max,
            wait=timedelta(milliseconds=settings.audit_batch_wait_ms),
            observer=app.state.metrics.audit_batch.observe,
            inline=sqlite,
        ),
        decide_on_writer=sqlite,
    )

    async def handle(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, HeaderedError)
        return JSONResponse(
            error_body(exc.code, exc.message, **exc.extra), exc.status, headers=exc.headers
        )

    app.add_exception_handler(HeaderedError, handle)

    @asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        yield
        app.state.api.audit.close()
        app.state.api.checkers.close()

    return APIRouter(lifespan=lifespan)


def api_state(request: Request) -> ApiState:
    """The shared state of the app serving ``request``."""
    state: ApiState = request.app.state.api
    return state


def rate_limit(request: Request, item: RateLimitItem, *keys: str) -> None:
    """Count one hit; 429 ``rate_limited`` with Retry-After when over ``item``."""
    state = api_state(request)
    if state.limiter.hit(item, *keys):
        return
    stats = state.limiter.get_window_stats(item, *keys)
    # The limiter counts in real time (not the app's clock, which tests stand still).
    wait = min(max(1, math.ceil(stats.reset_time - time.time())), item.get_expiry())
    raise HeaderedError(
        429,
        "rate_limited",
        f"too many requests: at most {item} per client; try again in {wait} s",
        headers={"Retry-After": str(wait)},
        retry_after=wait,
    )


# -- sessions and clock -------------------------------------------------------


def get_session(request: Request) -> Iterator[Session]:
    """One transaction per request: committed if the handler succeeds, rolled back if not."""
    with request.app.state.sessions() as session:
        try:
            yield session
        except BaseException:
            session.rollback()
            raise
        session.commit()


# scope="function": the commit happens when the handler returns, before the
# response is sent, so a failed commit is a 500 and never a lost write.
DbSession = Annotated[Session, Depends(get_session, scope="function")]


def clock_of(request: Request) -> Clock:
    """The app's clock (a fixed one in tests), without a dependency to solve."""
    clock: Clock = request.app.state.runtime.clock
    return clock


async def get_clock(request: Request) -> Clock:
    """The app's clock (a fixed one in tests)."""
    return clock_of(request)


Now = Annotated[Clock, Depends(get_clock)]


# -- who is calling ------------------------------------------------------------

bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="apiKey",
    description="A machine principal's API key: `Authorization: Bearer cx_<prefix>_<secret>`.",
)
cookie_scheme = APIKeyCookie(
    name=COOKIE_NAME,
    auto_error=False,
    scheme_name="session",
    description=(
        "A person's session cookie from `POST /v1/session`; unsafe methods also need the "
        f"`{CSRF_HEADER}` header."
    ),
)


def _unauthenticated(message: str, reason: str = "missing") -> HeaderedError:
    return HeaderedError(
        401,
        "unauthenticated",
        message,
        headers={"WWW-Authenticate": 'Bearer realm="chengxin"'},
        reason=reason,
    )


def _from_key(request: Request, key: str, now: datetime) -> Principal:
    """Check a key against the database (read-only), note its use when due, cache it."""
    from chengxin.service.principals import check_key, touch_key

    sessions, cache = request.app.state.sessions, api_state(request).keys
    with cache.single_flight(key):
        cached = cache.get(key, now=now)  # another thread may have checked it meanwhile
        if cached is not None:
            return cached
        with read_transaction(sessions) as session:
            grant = check_key(session, key, now=now)
        if grant.touch_due:
            with sessions() as session, session.begin():
                touch_key(session, key_id=grant.key_id, now=now)
        cache.put(key, grant, now=now)
    return grant.principal


def _from_cookie(request: Request, cookie: str, now: datetime) -> Principal:
    """The person of a session cookie, read from the database (read-only)."""
    from chengxin.api import auth

    with read_transaction(request.app.state.sessions) as session:
        return auth.principal_from_cookie(
            session, request, cookie, secret=api_state(request).session_secret, now=now
        )


def _bearer_token(header: str) -> str | None:
    """The credentials of ``Authorization: Bearer <token>``, as ``HTTPBearer`` reads them."""
    scheme, _, token = header.partition(" ")
    return token if scheme.lower() == "bearer" and token else None


async def current_principal(request: Request) -> Principal:
    """The authenticated caller: an API key, or a session cookie (+ CSRF token when unsafe).

    It reads the two credentials itself rather than through ``bearer_scheme``
    and ``cookie_scheme`` as sub-dependencies: each solved dependency costs
    every request a step. The OpenAPI document still names both schemes
    (:func:`declares_credentials`, applied by :class:`GuardedRoute`).
    """
    from chengxin.service.principals import Unauthenticated

    header = request.headers.get("authorization")
    cookie = request.cookies.get(COOKIE_NAME) or None  # as APIKeyCookie: empty is none
    if header is None and cookie is None:
        raise _unauthenticated("credentials are required: an API key or a session cookie")
    now = clock_of(request).now()
    try:
        if header is not None:
            token = _bearer_token(header)
            if token is None:
                raise Unauthenticated("use `Authorization: Bearer <API key>`")
            principal = api_state(request).keys.get(token, now=now)
            if principal is None:
                principal = await run_in_threadpool(_from_key, request, token, now)
        else:
            assert cookie is not None
            principal = await run_in_threadpool(_from_cookie, request, cookie, now)
    except Unauthenticated as exc:
        raise _unauthenticated(str(exc), exc.reason) from None
    request.state.principal = principal  # for the access log (api/middleware.py)
    return principal


CREDENTIALS = (bearer_scheme, cookie_scheme)
"""The ways to authenticate, in the order the OpenAPI document lists them."""


def declares_credentials(dependency: Callable[..., Any]) -> Callable[..., Any]:
    """Mark ``dependency`` as authenticating: its routes list :data:`CREDENTIALS` in OpenAPI."""
    dependency.__chengxin_credentials__ = CREDENTIALS  # type: ignore[attr-defined]
    return dependency


declares_credentials(current_principal)


def _declare_credentials(dependant: Dependant) -> None:
    """Give each authenticating dependency in the tree its OpenAPI security requirements.

    FastAPI reads security requirements only to write the OpenAPI document;
    solving a request never looks at them.
    """
    for sub in dependant.dependencies:
        schemes = getattr(sub.call, "__chengxin_credentials__", ())
        known = {id(r.security_scheme) for r in sub.security_requirements}
        sub.security_requirements.extend(
            SecurityRequirement(security_scheme=s, scopes=[]) for s in schemes if id(s) not in known
        )
        _declare_credentials(sub)


Caller = Annotated[Principal, Depends(current_principal)]


def require(
    *roles: Role, conceal_from: tuple[Role, ...] = ()
) -> Callable[..., Awaitable[Principal]]:
    """A dependency letting only ``roles`` through: 403 ``forbidden`` for the others.

    Roles in ``conceal_from`` get 404 instead, as if the resource did not exist
    (a subject asking about another subject learns nothing, not even that).
    """
    allowed = frozenset(roles)
    listed = ", ".join(roles)

    @declares_credentials
    async def dependency(request: Request) -> Principal:
        caller = await current_principal(request)  # called, not solved: one step fewer
        if caller.role in allowed:
            return caller
        if caller.role in conceal_from:
            raise ApiError(404, "not_found", "no records are held on this subject")
        raise ApiError(
            403, "forbidden", f"the {caller.role} role may not do this (allowed: {listed})"
        )

    dependency.__name__ = "require_" + "_".join(roles)
    dependency.__doc__ = f"Only {listed} may call this."
    return dependency


# -- request bodies: size, media type, JSON ---------------------------------


def accepts(*media_types: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Mark an endpoint as taking these media types (default ``application/json`` only)."""

    def mark(endpoint: Callable[..., Any]) -> Callable[..., Any]:
        endpoint.__chengxin_accepts__ = media_types  # type: ignore[attr-defined]
        return endpoint

    return mark


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise ApiError(400, "bad_request", "Content-Length is not a number") from None
        if size > limit:
            raise ApiError(413, "body_too_large", f"the body is {size} bytes; at most {limit}")
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:  # a body sent without (or with a false) Content-Length
            raise ApiError(413, "body_too_large", f"the body is over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def guard_body(request: Request, media_types: tuple[str, ...]) -> None:
    """Refuse oversized bodies (413), other media types (415) and malformed JSON (400)."""
    ctype = request.headers.get("content-type", "")
    media = ctype.split(";", 1)[0].strip().lower()
    if media not in media_types:
        raise ApiError(
            415,
            "unsupported_media_type",
            f"send {' or '.join(media_types)}, not {media or 'no Content-Type'}",
        )
    limit: int = request.app.state.runtime.settings.max_body_bytes
    body = await _read_body(request, limit)
    request._body = body  # what Request.body() returns from now on
    if media == JSON:
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise ApiError(400, "malformed_json", f"the body is not JSON: {exc}") from None
        request._json = parsed  # FastAPI reads the body through Request.json()


def bulk(endpoint: Callable[..., Any]) -> Callable[..., Any]:
    """Mark an endpoint as a bulk job: the cyclic garbage collector is off while it runs.

    From the request's first byte until its parsed body is freed
    (:func:`~chengxin.service.checking.gc_paused`): a 1,000-line batch makes
    some 10^5 short-lived objects, which collections during its parsing and
    validation would otherwise walk, promote, and walk again.
    """
    endpoint.__chengxin_bulk__ = True  # type: ignore[attr-defined]
    return endpoint


class GuardedRoute(APIRoute):
    """A route whose body is checked for size, media type and JSON before anything else."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        _declare_credentials(self.dependant)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """The route's handler, behind the body checks."""
        handler = super().get_route_handler()
        media_types: tuple[str, ...] = getattr(self.endpoint, "__chengxin_accepts__", (JSON,))

        async def guarded(request: Request) -> Response:
            if request.method in ("POST", "PUT", "PATCH"):
                await guard_body(request, media_types)
            return await handler(request)

        if not getattr(self.endpoint, "__chengxin_bulk__", False):
            return guarded

        async def paused(request: Request) -> Response:
            with gc_paused():
                try:
                    return await guarded(request)
                finally:
                    # The handler's values are gone; the parsed body goes too before
                    # the collector is back, so it has nothing of this request to walk.
                    request.__dict__.pop("_json", None)

        return paused


# Error responses every protected route may give, for the OpenAPI document.
def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for these error statuses."""
    from chengxin.api.schemas import ErrorRead

    text = {
        400: "Malformed request (malformed_json)",
        401: "Missing, unknown, revoked or expired credentials (unauthenticated)",
        403: "The role or registration does not allow this",
        404: "Not found (or not yours to know about)",
        409: "Idempotency-Key reused for a different request (idempotency_conflict)",
        413: "The body is too large (body_too_large)",
        415: "Wrong Content-Type (unsupported_media_type)",
        422: "Invalid input: the field and the reason are named",
        429: "Too many requests (rate_limited); see Retry-After",
        503: "No policy is active (no_active_policy)",
    }
    return {s: {"model": ErrorRead, "description": text.get(s, "error")} for s in statuses}
