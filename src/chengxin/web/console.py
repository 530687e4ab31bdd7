"""The console for people who watch and decide: auditors read the trail, adjudicators a subject.

* ``/console/audit`` (auditors): the audit trail, newest first, filtered by
  action, principal or subject, and on request a walk of both hash chains
  (the audit trail's and the ledger's) naming the first broken entry.
  Reading the trail is itself audited, as ``GET /v1/audit/events`` is.
* ``/console/subject`` (adjudicators, administrators): any subject's record
  as the subject sees it, for a stated purpose that is audited, as
  ``GET /v1/subjects/{scheme}/{id}/explain`` is.

Roles are those of :mod:`chengxin.api.permissions`; anyone else gets 403
(a subject 404, as the API does), and nobody logged in goes to the log-in form.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.responses import Response as FastAPIResponse

from chengxin.api.deps import DbSession, Now
from chengxin.api.errors import ApiError
from chengxin.api.permissions import AUDITORS, CONCEAL_SUBJECTS, SUBJECT_READERS
from chengxin.domain.identifiers import parse_qualified
from chengxin.service import audit
from chengxin.service.principals import Principal
from chengxin.service.subjects import explain
from chengxin.store.ledger import verify as verify_ledger
from chengxin.web.pages import PAGE_ERRORS, current_person, error_page, read_record, render

router = APIRouter(prefix="/console", include_in_schema=False)
PAGE_SIZE = 100
"""Audit events on one console page."""


def _allowed(who: Principal, roles: tuple[str, ...]) -> None:
    """Refuse a person whose role may not use a console page (404 for a subject)."""
    if who.role in roles:
        return
    if who.role in CONCEAL_SUBJECTS:
        raise ApiError(404, "not_found", "there is no such page")
    raise ApiError(403, "forbidden", f"the {who.role} role may not use this page")


def _text(value: str | None, limit: int) -> str | None:
    value = (value or "").strip()
    return value[:limit] or None


@router.get("/audit", response_class=HTMLResponse)
def audit_page(
    request: Request,
    session: DbSession,
    clock: Now,
    action: str | None = None,
    principal: str | None = None,
    subject: str | None = None,
    before: int | None = None,
    verify: bool = False,
) -> FastAPIResponse:
    """The audit trail for auditors, newest first, and the chains' verification on request."""
    who = current_person(request, session, clock)
    if who is None:
        return RedirectResponse("/login", status_code=303)
    filters = {
        "action": _text(action, 40),
        "principal": _text(principal, 120),
        "subject": _text(subject, 90),
    }
    try:
        _allowed(who, AUDITORS)
        subject_id = None
        events: list[audit.AuditEvent] = []
        if filters["subject"] is not None:
            subject_id = audit.subject_id_of(session, parse_qualified(filters["subject"]))
        if filters["subject"] is None or subject_id is not None:
            events = audit.events(
                session,
                subject_id=subject_id,
                principal=filters["principal"],
                action=filters["action"],
                since=None,
                before=before if before and before > 0 else None,
                limit=PAGE_SIZE,
            )
    except PAGE_ERRORS as exc:
        return error_page(request, exc, who=who)
    audit.record(
        session,
        principal=who,
        action="audit.read",
        purpose="audit",
        subject_id=subject_id,
        detail={"action": filters["action"], "events": len(events), "via": "console"},
        now=clock.now(),
    )
    chains = (
        {"audit trail": audit.verify_audit(session), "ledger": verify_ledger(session)}
        if verify
        else None
    )
    return render(
        request,
        "console_audit.html",
        who=who,
        events=events,
        filters=filters,
        chains=chains,
        older=events[-1].seq if len(events) == PAGE_SIZE else None,
    )


@router.get("/subject", response_class=HTMLResponse)
def subject_page(
    request: Request,
    session: DbSession,
    clock: Now,
    subject: str | None = None,
    purpose: str | None = None,
) -> FastAPIResponse:
    """Any subject's record for adjudicators and administrators, for a stated, audited purpose."""
    who = current_person(request, session, clock)
    if who is None:
        return RedirectResponse("/login", status_code=303)
    wanted, why = _text(subject, 90), _text(purpose, 120)
    ctx: dict[str, Any] = {"subject": wanted or "", "purpose": why or ""}
    try:
        _allowed(who, SUBJECT_READERS)
        if wanted is None or why is None:
            error = "give the subject and the purpose of this read" if wanted or why else None
            return render(
                request,
                "console_subject.html",
                who=who,
                status=422 if error else 200,
                error=error,
                ex=None,
                **ctx,
            )
        ex = explain(session, subject=parse_qualified(wanted), clock=clock)
    except PAGE_ERRORS as exc:
        return error_page(request, exc, who=who)
    view = read_record(
        session, who=who, ex=ex, clock=clock, action="subject.explain", purpose=why, via="console"
    )
    return render(request, "console_subject.html", who=who, error=None, **view, **ctx)
