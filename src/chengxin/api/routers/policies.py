"""Policies: read the one in force; lint and activate (policy authors, administrators).

Activation is an audited act: a ledger entry with the actor and the reason
(``service.policies.activate``) and an audit event. Everyone is rescored
afterwards, in the background, unless the request says not to (snapshots
made under another policy are rescored when read, so checks are right
either way).
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, BackgroundTasks, Depends, Request
from pydantic import ValidationError

from chengxin.api.deps import (
    JSON,
    DbSession,
    GuardedRoute,
    Now,
    accepts,
    error_responses,
    require,
)
from chengxin.api.errors import ApiError
from chengxin.api.permissions import AUTHENTICATED, POLICY_WRITERS
from chengxin.api.schemas import (
    PolicyActivate,
    PolicyActivationRead,
    PolicyLintRead,
    PolicyLintRequest,
    PolicyRead,
    ProblemRead,
)
from chengxin.domain.policy_load import lint_policy_text
from chengxin.service import audit
from chengxin.service.batch import rescore_all
from chengxin.service.policies import activate, active_policy, add_policy, get_policy
from chengxin.service.principals import Principal

router = APIRouter(prefix="/v1", tags=["policies"], route_class=GuardedRoute)
Author = Annotated[Principal, Depends(require(*POLICY_WRITERS))]
Reader = Annotated[Principal, Depends(require(*AUTHENTICATED))]
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml", "text/plain")


@router.get(
    "/policies/active",
    response_model=PolicyRead,
    responses=error_responses(401, 403, 503),
    summary="The policy in force",
)
def read_active(session: DbSession, clock: Now, caller: Reader) -> PolicyRead:
    """The policy in force today: label, content hash and the whole document."""
    policy = active_policy(session, on=clock.today()).policy
    return PolicyRead(
        label=policy.label,
        policy=policy.policy,
        version=policy.version,
        content_hash=policy.content_hash,
        document=policy.canonical(),
    )


@router.post(
    "/policies:lint",
    response_model=PolicyLintRead,
    responses=error_responses(400, 401, 403, 413, 415, 422),
    summary="Lint a policy",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/yaml": {"schema": {"type": "string"}},
                "text/yaml": {"schema": {"type": "string"}},
                JSON: {"schema": PolicyLintRequest.model_json_schema()},
            },
        }
    },
)
@accepts(JSON, *YAML_TYPES)
async def lint_policy(request: Request, caller: Author) -> PolicyLintRead:
    """Every problem a policy has (schema, cross-references, hard lines); ``ok`` if no error."""
    body = await request.body()
    if request.headers.get("content-type", "").startswith(JSON):
        try:
            text = PolicyLintRequest.model_validate(orjson.loads(body)).yaml
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(x) for x in first["loc"]) or "body"
            raise ApiError(422, "invalid_request", f"{where}: {first['msg']}") from None
    else:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ApiError(
                400, "bad_encoding", f"the policy is not UTF-8 (byte {exc.start})"
            ) from None
    policy, problems = lint_policy_text(text, "request")
    return PolicyLintRead(
        ok=not any(p.severity == "error" for p in problems),
        policy=policy.label if policy else None,
        content_hash=policy.content_hash if policy else None,
        problems=[
            ProblemRead(
                path=p.path,
                line=p.line,
                severity=p.severity,
                message=p.message,
                hard_line=p.hard_line,
            )
            for p in problems
        ],
    )


@router.post(
    "/policies:activate",
    response_model=PolicyActivationRead,
    responses=error_responses(400, 401, 403, 404, 413, 415, 422),
    summary="Activate a policy (audited; a reason is required)",
)
def activate_policy(
    body: PolicyActivate,
    request: Request,
    background: BackgroundTasks,
    session: DbSession,
    clock: Now,
    caller: Author,
) -> PolicyActivationRead:
    """Store (if new) and activate a policy version; a ledger entry and an audit event record it."""
    if (body.yaml is None) == (body.policy is None):
        raise ApiError(422, "invalid_request", "give either 'yaml' or 'policy', not both")
    if body.yaml is not None:
        stored = add_policy(session, text=body.yaml, source="request", now=clock.now())
    else:
        assert body.policy is not None
        stored = get_policy(session, ref=body.policy)
    start = body.effective_from or clock.today()
    seq = activate(
        session,
        policy_id=stored.id,
        actor=caller.name,
        reason=body.reason,
        now=clock.now(),
        effective_from=start,
    )
    audit.record(
        session,
        principal=caller,
        action="policy.activate",
        purpose=None,
        subject_id=None,
        detail={
            "policy": stored.policy.label,
            "content_hash": stored.policy.content_hash,
            "ledger_seq": seq,
            "effective_from": start.isoformat(),
        },
        now=clock.now(),
    )
    if body.rescore:
        runtime: Any = request.app.state.runtime
        background.add_task(rescore_all, runtime.engine, clock=runtime.clock)
    return PolicyActivationRead(
        activated=stored.policy.label,
        content_hash=stored.policy.content_hash,
        ledger_seq=seq,
        effective_from=start,
    )
