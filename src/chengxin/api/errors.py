"""Machine-readable errors: every 4xx carries ``{"error": {"code", "message"}}``."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from chengxin.domain.identifiers import InvalidIdentifier
from chengxin.domain.policy_load import PolicyError
from chengxin.service.errors import (
    Invalid,
    NoActivePolicy,
    NotFound,
    NotRegistered,
    ServiceError,
)


class ApiError(Exception):
    """An error with an HTTP status, a machine-readable code and a human message."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    """The JSON body of an error response."""
    return {"error": {"code": code, "message": message, **extra}}


def _respond(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse(error_body(code, message, **extra), status_code=status)


_STATUS: dict[type[ServiceError], int] = {
    NotFound: 404,
    Invalid: 422,
    NotRegistered: 403,
    NoActivePolicy: 503,
}


def install(app: FastAPI) -> None:
    """Register the handlers that turn exceptions into error responses."""

    @app.exception_handler(ApiError)
    async def _api(_: Request, exc: ApiError) -> JSONResponse:
        return _respond(exc.status, exc.code, exc.message, **exc.extra)

    @app.exception_handler(ServiceError)
    async def _service(_: Request, exc: ServiceError) -> JSONResponse:
        status = next((s for t, s in _STATUS.items() if isinstance(exc, t)), 400)
        return _respond(status, exc.code, str(exc))

    @app.exception_handler(InvalidIdentifier)
    async def _identifier(_: Request, exc: InvalidIdentifier) -> JSONResponse:
        return _respond(422, f"identifier.{exc.code}", str(exc))

    @app.exception_handler(PolicyError)
    async def _policy(_: Request, exc: PolicyError) -> JSONResponse:
        problems = [
            {"path": p.path, "line": p.line, "message": p.message, "hard_line": p.hard_line}
            for p in exc.problems
        ]
        return _respond(422, "policy_invalid", str(exc).splitlines()[0], problems=problems)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = [
            {"loc": [str(x) for x in e.get("loc", ())], "message": e.get("msg", "")}
            for e in exc.errors()
        ]
        first = details[0] if details else {"loc": [], "message": "invalid request"}
        where = ".".join(first["loc"][1:]) or "body"
        return _respond(422, "invalid_request", f"{where}: {first['message']}", details=details)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {
            404: "not_found",
            405: "method_not_allowed",
            413: "body_too_large",
            415: "unsupported_media_type",
            401: "unauthenticated",
            403: "forbidden",
            429: "rate_limited",
        }
        return _respond(exc.status_code, codes.get(exc.status_code, "http_error"), str(exc.detail))
