"""Credentials over HTTP: API keys for machines, signed session cookies for people.

A session cookie holds ``{principal id, CSRF token}`` signed with
itsdangerous (HMAC-SHA1 over a key derived from ``settings.session_secret``)
and timestamped; it is ``HttpOnly`` and ``SameSite=Strict``, and ``Secure``
when ``settings.cookie_secure``. Unsafe methods sent with the cookie must
repeat the CSRF token in ``X-CSRF-Token`` (OWASP's signed double-submit
pattern). Each request re-reads the principal, so a revoked or expired
account loses its sessions at once.
"""

from __future__ import annotations

import hmac
import secrets
from datetime import datetime
from typing import Any

from fastapi import Request, Response
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from sqlalchemy.orm import Session

from chengxin.api.deps import COOKIE_NAME, CSRF_HEADER, SAFE_METHODS
from chengxin.api.errors import ApiError
from chengxin.service.principals import (
    Principal,
    Unauthenticated,
    authenticate_key,
    get_principal,
)

SESSION_SECONDS = 8 * 3600
"""How long a login lasts."""
_SALT = "chengxin.session"


def _serializer(secret: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(secret, salt=_SALT)


def principal_from_key(session: Session, key: str, *, now: datetime) -> Principal:
    """The principal holding an API key (:class:`Unauthenticated` if it may not be used)."""
    return authenticate_key(session, key, now=now)


def read_cookie(cookie: str, *, secret: str) -> dict[str, Any]:
    """The signed content of a session cookie; :class:`Unauthenticated` if forged or old."""
    try:
        data = _serializer(secret).loads(cookie, max_age=SESSION_SECONDS)
    except SignatureExpired:
        raise Unauthenticated("the session has expired: log in again", "expired") from None
    except BadSignature:
        raise Unauthenticated("the session cookie is not valid", "invalid") from None
    if not (isinstance(data, dict) and isinstance(data.get("p"), int) and data.get("c")):
        raise Unauthenticated("the session cookie is not valid", "invalid")
    return data


def principal_from_cookie(
    session: Session, request: Request, cookie: str, *, secret: str, now: datetime
) -> Principal:
    """The person a session cookie belongs to, after the CSRF check for unsafe methods."""
    data = read_cookie(cookie, secret=secret)
    if request.method not in SAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(sent.encode(), str(data["c"]).encode()):
            raise ApiError(
                403,
                "csrf_failed",
                f"a request with a session cookie must send its CSRF token in {CSRF_HEADER}",
            )
    return get_principal(session, principal_id=int(data["p"]), now=now)


def csrf_of(request: Request, *, secret: str) -> str | None:
    """The CSRF token of the request's session cookie, if it has a valid one."""
    cookie = request.cookies.get(COOKIE_NAME)
    if cookie is None:
        return None
    try:
        return str(read_cookie(cookie, secret=secret)["c"])
    except Unauthenticated:
        return None


def start_session(response: Response, principal: Principal, *, secret: str, secure: bool) -> str:
    """Set the session cookie on ``response``; return the CSRF token that goes with it."""
    csrf = secrets.token_urlsafe(32)
    value = _serializer(secret).dumps({"p": principal.id, "c": csrf})
    response.set_cookie(
        COOKIE_NAME,
        value,
        max_age=SESSION_SECONDS,
        path="/",
        secure=secure,
        httponly=True,
        samesite="strict",
    )
    return csrf


def end_session(response: Response, *, secure: bool) -> None:
    """Clear the session cookie."""
    response.delete_cookie(COOKIE_NAME, path="/", secure=secure, httponly=True, samesite="strict")
