"""The pages people use: start page, published policy, public lists, log-in and the subject portal.

Every page is server-rendered HTML without scripts, served with a strict
Content-Security-Policy. Pages call the same service functions as the HTTP
API and follow its rules: public lists are masked and rate limited per
client address; a subject sees only itself, and each such read is audited
as the API's ``GET /v1/me`` is; the log-in form is limited like
``POST /v1/session``. Forms that change something (log-out) carry the
session's CSRF token; the log-in form is refused when its ``Origin`` is
another site's. Errors are pages too, with the same status codes the API
gives.
"""

from __future__ import annotations

import hmac
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from chengxin.api import auth
from chengxin.api.deps import COOKIE_NAME, DbSession, HeaderedError, Now, api_state, rate_limit
from chengxin.api.errors import ApiError
from chengxin.domain.decisions import principal_reasons, triggered
from chengxin.domain.identifiers import InvalidIdentifier
from chengxin.domain.policy import Policy
from chengxin.service import audit
from chengxin.service.clock import Clock
from chengxin.service.errors import NoActivePolicy, NotFound, ServiceError
from chengxin.service.policies import active_policy
from chengxin.service.principals import (
    Principal,
    Unauthenticated,
    public_list_members,
    subject_of,
    verify_password,
)
from chengxin.service.subjects import Explanation, explain
from chengxin.web.charts import grade_scale

router = APIRouter(include_in_schema=False)
HERE = Path(__file__).resolve().parent
TEMPLATES = Jinja2Templates(directory=HERE / "templates")
FORM_LIMIT = 4096
"""The largest form body a page accepts, in bytes."""
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
"""Headers on every page: no scripts, no framing, nothing cached (pages can be personal)."""
_STATUS_TITLES = {
    400: "That request cannot be read",
    401: "Log in first",
    403: "Refused",
    404: "Not found",
    413: "Too large",
    422: "That cannot be read",
    429: "Too many requests",
    503: "Not ready",
}


@cache
def _stylesheet() -> bytes:
    return (HERE / "static" / "style.css").read_bytes()


def current_person(request: Request, session: Session, clock: Clock) -> Principal | None:
    """The person logged in with a valid session cookie, or None."""
    cookie = request.cookies.get(COOKIE_NAME)
    if cookie is None:
        return None
    secret = api_state(request).session_secret
    try:  # pages read only on safe methods, so no CSRF token is asked for here
        principal = auth.principal_from_cookie(
            session, request, cookie, secret=secret, now=clock.now()
        )
    except Unauthenticated:
        return None
    request.state.principal = principal  # for the access log, as the API does
    return principal


def render(
    request: Request, template: str, *, who: Principal | None, status: int = 200, **ctx: Any
) -> HTMLResponse:
    """A page from ``template`` with the log-in state in its header."""
    csrf = auth.csrf_of(request, secret=api_state(request).session_secret) if who else None
    context = {
        "who": who.name if who else None,
        "role": who.role if who else None,
        "csrf": csrf,
        **ctx,
    }
    return TEMPLATES.TemplateResponse(
        request, template, context, status_code=status, headers=PAGE_HEADERS
    )


def error_page(request: Request, exc: Exception, *, who: Principal | None = None) -> HTMLResponse:
    """The page for a refused request: the API's status code and message, as HTML."""
    if isinstance(exc, ApiError):
        status, message = exc.status, exc.message
    elif isinstance(exc, NoActivePolicy):
        status, message = 503, str(exc)
    elif isinstance(exc, NotFound):
        status, message = 404, str(exc)
    elif isinstance(exc, InvalidIdentifier | ServiceError):
        status, message = 422, str(exc)
    else:  # pragma: no cover - callers pass only the errors above
        raise exc
    page = render(
        request,
        "error.html",
        who=who,
        status=status,
        heading=_STATUS_TITLES.get(status, "Refused"),
        message=message,
    )
    if isinstance(exc, HeaderedError) and "Retry-After" in exc.headers:
        page.headers["Retry-After"] = exc.headers["Retry-After"]
    return page


PAGE_ERRORS = (ApiError, ServiceError, InvalidIdentifier)


@router.get("/static/style.css")
def stylesheet() -> Response:
    """The pages' one stylesheet."""
    return Response(
        _stylesheet(), media_type="text/css", headers={"Cache-Control": "public, max-age=3600"}
    )


@router.get("/", response_class=HTMLResponse)
def home(request: Request, session: DbSession, clock: Now) -> HTMLResponse:
    """The start page: the policy in force and its public lists."""
    who = current_person(request, session, clock)
    try:
        policy = active_policy(session, on=clock.today()).policy
    except PAGE_ERRORS as exc:
        return error_page(request, exc, who=who)
    public = [lst for lst in policy.lists if lst.public]
    return render(request, "home.html", who=who, policy=policy, lists=public)


@router.get("/policy", response_class=HTMLResponse)
def policy_page(request: Request, session: DbSession, clock: Now) -> HTMLResponse:
    """The policy in force, in full: grades, rules, lists and measures (no secret methods)."""
    who = current_person(request, session, clock)
    try:
        policy = active_policy(session, on=clock.today()).policy
    except PAGE_ERRORS as exc:
        return error_page(request, exc, who=who)
    by_type: dict[str, list[Any]] = {}
    for rule in policy.rules:
        by_type.setdefault(rule.type, []).append(rule)
    return render(request, "policy.html", who=who, policy=policy, rules_by_type=by_type)


@router.get("/lists/{code}", response_class=HTMLResponse)
def public_list_page(
    code: str, request: Request, session: DbSession, clock: Now, q: str | None = None
) -> HTMLResponse:
    """Search one public list; identifiers masked, no names, rate limited per client."""
    who = current_person(request, session, clock)
    limit = 50
    try:
        client = request.client.host if request.client else "unknown"
        rate_limit(request, api_state(request).public_rate, "public", client)
        policy = active_policy(session, on=clock.today()).policy
        lst = policy.lists_by_code.get(code)
        if lst is None or not lst.public:
            raise NotFound(f"there is no public list {code!r}")
    except PAGE_ERRORS as exc:
        return error_page(request, exc, who=who)
    query = (q or "").strip()[:40] or None
    error = None
    members: list[Any] = []
    try:
        members = public_list_members(
            session, policy=policy, list_code=code, query=query, limit=limit
        )
    except PAGE_ERRORS as exc:  # a query that would unmask: said on the page itself
        error = str(exc)
    return render(
        request,
        "public_list.html",
        who=who,
        lst=lst,
        q=query,
        members=members,
        limit=limit,
        error=error,
        status=422 if error else 200,
    )


async def _form(request: Request) -> dict[str, str]:
    """The fields of a small urlencoded form (413 past :data:`FORM_LIMIT` bytes)."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > FORM_LIMIT:
            raise ApiError(413, "too_large", f"a form is at most {FORM_LIMIT} bytes")
    try:
        fields = parse_qs(body.decode("utf-8"), max_num_fields=8, strict_parsing=False)
    except (UnicodeDecodeError, ValueError):
        raise ApiError(400, "bad_form", "the form could not be read") from None
    return {k: v[0] for k, v in fields.items()}


def _same_origin(request: Request) -> bool:
    """False when the browser says the form came from another site."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    return urlsplit(origin).netloc == request.headers.get("host", "")


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request) -> HTMLResponse:
    """The log-in form."""
    return render(request, "login.html", who=None)


@router.post("/login", response_class=HTMLResponse)
async def log_in(request: Request) -> Response:
    """Check a person's name and password; set the session cookie and go to their record."""
    try:
        if not _same_origin(request):
            raise ApiError(403, "cross_site", "log in from chengxin's own page")
        form = await _form(request)
        name, password = form.get("username", "").strip(), form.get("password", "")
        if not name or not password:
            raise ApiError(422, "invalid_request", "give a name and a password")
        client = request.client.host if request.client else "unknown"
        rate_limit(request, api_state(request).login_rate, "login", client, name)
    except ApiError as exc:
        return error_page(request, exc)
    now = request.app.state.runtime.clock.now()

    def check() -> Principal:
        with request.app.state.sessions() as session, session.begin():
            return verify_password(session, name=name, password=password, now=now)

    try:
        principal = await run_in_threadpool(check)  # argon2 takes tens of milliseconds
    except Unauthenticated as exc:
        return render(request, "login.html", who=None, status=401, error=str(exc), username=name)
    response = RedirectResponse("/me", status_code=303)
    auth.start_session(
        response,
        principal,
        secret=api_state(request).session_secret,
        secure=request.app.state.runtime.settings.cookie_secure,
    )
    return response


@router.post("/logout")
async def log_out(request: Request) -> Response:
    """End the session (the form must carry the session's CSRF token)."""
    try:
        form = await _form(request)
    except ApiError as exc:
        return error_page(request, exc)
    expected = auth.csrf_of(request, secret=api_state(request).session_secret)
    sent = form.get("csrf_token", "")
    if expected is not None and not hmac.compare_digest(sent.encode(), expected.encode()):
        return error_page(request, ApiError(403, "csrf_failed", "log out from chengxin's own page"))
    response = RedirectResponse("/", status_code=303)
    auth.end_session(response, secure=request.app.state.runtime.settings.cookie_secure)
    return response


def read_record(
    session: Session,
    *,
    who: Principal,
    ex: Explanation,
    clock: Clock,
    action: str,
    purpose: str,
    via: str,
) -> dict[str, Any]:
    """Audit a read of a subject's record; what the record pages (portal, console) show of it."""
    audit.record(
        session,
        principal=who,
        action=action,
        purpose=purpose,
        subject_id=ex.subject.id,
        detail={"policy": ex.policy.label, "via": via},
        now=clock.now(),
    )
    data = ex.as_dict()
    data["raw_delta"] = sum(c["value"] for c in data["contributions"])
    return {
        "ex": data,
        "effects": _effects(ex.policy, ex),
        "list_titles": {lst.code: lst.title or lst.code for lst in ex.policy.lists},
        "appeal": ex.policy.appeal,
        "chart": grade_scale(ex.policy, ex.result.score),
        "consultations": audit.consultations(session, subject_id=ex.subject.id, limit=200),
    }


def _effects(policy: Policy, ex: Explanation) -> list[dict[str, Any]]:
    """The measures that apply to the subject now, each with its reasons and appeal route."""
    out = []
    for m in policy.measures:
        if not triggered(policy, m, ex.result):
            continue
        if m.kind == "sanction":
            effect = "services may refuse you this"
        else:
            effect = "offered to you" + (" if you consent" if m.consent_required else "")
        out.append(
            {
                "code": m.code,
                "title": m.title or m.code,
                "kind": m.kind,
                "effect": effect,
                "reasons": principal_reasons(policy, m, ex.result),
                "appeal": m.appeal or policy.appeal,
            }
        )
    return out


@router.get("/me", response_class=HTMLResponse)
def my_record(request: Request, session: DbSession, clock: Now) -> Response:
    """The subject's own record: score, grade, every point, lists, records and who consulted it."""
    who = current_person(request, session, clock)
    if who is None:
        return RedirectResponse("/login", status_code=303)
    try:
        if who.role != "subject" or who.subject_id is None:
            raise ApiError(
                403, "forbidden", f"this page shows a subject's own record; {who.name} is not one"
            )
        ex = explain(session, subject=subject_of(session, who), clock=clock)
    except PAGE_ERRORS as exc:
        return error_page(request, exc, who=who)
    view = read_record(
        session, who=who, ex=ex, clock=clock, action="subject.read", purpose="self", via="portal"
    )
    return render(request, "me.html", who=who, **view)
