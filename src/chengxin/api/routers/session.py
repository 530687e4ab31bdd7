"""Sessions for people: log in with a name and password, get a cookie and a CSRF token.

The cookie is ``HttpOnly`` and ``SameSite=Strict``; requests that change
anything must also send the CSRF token as ``X-CSRF-Token``. Log-in attempts
are limited per client address and name.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request, Response
from pydantic import ValidationError

from chengxin.api import auth
from chengxin.api.deps import (
    JSON,
    Caller,
    GuardedRoute,
    accepts,
    api_state,
    error_responses,
    rate_limit,
)
from chengxin.api.errors import ApiError
from chengxin.api.schemas import PrincipalRead, SessionCreate, SessionRead
from chengxin.service.principals import Principal, Unauthenticated, verify_password

router = APIRouter(prefix="/v1", tags=["session"], route_class=GuardedRoute)
FORM = "application/x-www-form-urlencoded"


def _principal(p: Principal) -> PrincipalRead:
    return PrincipalRead(
        name=p.name,
        kind=p.kind,
        role=p.role,
        provider=p.provider,
        service_kind=p.service_kind,
        scopes=sorted(p.scopes),
    )


async def _credentials(request: Request) -> SessionCreate:
    raw: Any
    if request.headers.get("content-type", "").startswith(JSON):
        raw = orjson.loads(await request.body())
    else:
        raw = dict((await request.form()).items())
    try:
        return SessionCreate.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "body"
        raise ApiError(422, "invalid_request", f"{where}: {first['msg']}") from None


@router.post(
    "/session",
    response_model=SessionRead,
    responses=error_responses(400, 401, 413, 415, 422, 429),
    summary="Log in (people)",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                JSON: {"schema": SessionCreate.model_json_schema()},
                FORM: {"schema": SessionCreate.model_json_schema()},
            },
        }
    },
)
@accepts(JSON, FORM)
async def log_in(request: Request, response: Response) -> SessionRead:
    """Check a person's name and password; set the session cookie; return the CSRF token."""
    creds = await _credentials(request)
    client = request.client.host if request.client else "unknown"
    state = api_state(request)
    rate_limit(request, state.login_rate, "login", client, creds.username)
    runtime = request.app.state.runtime
    now = runtime.clock.now()

    def check() -> Principal:
        with request.app.state.sessions() as session, session.begin():
            return verify_password(session, name=creds.username, password=creds.password, now=now)

    from starlette.concurrency import run_in_threadpool

    try:
        principal = await run_in_threadpool(check)  # argon2 takes tens of milliseconds
    except Unauthenticated as exc:
        raise ApiError(401, "unauthenticated", str(exc), reason=exc.reason) from None
    csrf = auth.start_session(
        response, principal, secret=state.session_secret, secure=runtime.settings.cookie_secure
    )
    return SessionRead(principal=_principal(principal), csrf_token=csrf)


@router.get(
    "/session",
    response_model=SessionRead,
    responses=error_responses(401),
    summary="Who am I (and my CSRF token)",
)
def read_session(request: Request, caller: Caller) -> SessionRead:
    """The caller, and the CSRF token of its session cookie (null with an API key)."""
    csrf = auth.csrf_of(request, secret=api_state(request).session_secret)
    return SessionRead(principal=_principal(caller), csrf_token=csrf)


@router.delete(
    "/session",
    status_code=204,
    responses=error_responses(401, 403),
    summary="Log out",
)
def log_out(request: Request, caller: Caller) -> Response:
    """Clear the session cookie (a no-op for API keys)."""
    response = Response(status_code=204)
    auth.end_session(response, secure=request.app.state.runtime.settings.cookie_secure)
    return response
