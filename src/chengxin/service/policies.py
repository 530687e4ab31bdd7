"""Policies in the store: add a version, activate it (an audited ledger entry), find the active."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from functools import lru_cache

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from chengxin.domain.policy import Policy
from chengxin.domain.policy_load import load_policy_text
from chengxin.service.errors import Invalid, NoActivePolicy, NotFound
from chengxin.store import ledger
from chengxin.store.schema import activations, policies


@dataclass(frozen=True, slots=True)
class StoredPolicy:
    """A policy version as kept in the store."""

    id: int
    policy: Policy


@lru_cache(maxsize=64)
def _parse(source: str, name: str) -> Policy:
    return load_policy_text(source, name)


def add_policy(session: Session, *, text: str, source: str, now: datetime) -> StoredPolicy:
    """Store a policy version (refused with every problem if it does not load)."""
    policy = load_policy_text(text, source)
    row = session.execute(
        select(policies.c.id, policies.c.content_hash).where(
            policies.c.name == policy.policy, policies.c.version == policy.version
        )
    ).first()
    if row is not None:
        if row.content_hash != policy.content_hash:
            raise Invalid(
                f"{policy.label} is already stored with different content: give the changed "
                "policy a new version"
            )
        return StoredPolicy(int(row.id), policy)
    new_id = session.execute(
        insert(policies)
        .values(
            name=policy.policy,
            version=policy.version,
            content_hash=policy.content_hash,
            source=text,
            loaded_at=now,
        )
        .returning(policies.c.id)
    ).scalar_one()
    return StoredPolicy(int(new_id), policy)


def get_policy(session: Session, *, ref: str) -> StoredPolicy:
    """A stored policy by ``name@version``, ``name`` (newest) or content hash."""
    stmt = select(policies.c.id, policies.c.source, policies.c.name)
    if ref.startswith("sha256:"):
        stmt = stmt.where(policies.c.content_hash == ref)
    elif "@" in ref:
        name, version = ref.split("@", 1)
        stmt = stmt.where(policies.c.name == name, policies.c.version == version)
    else:
        stmt = stmt.where(policies.c.name == ref).order_by(policies.c.id.desc()).limit(1)
    row = session.execute(stmt).first()
    if row is None:
        raise NotFound(f"no stored policy {ref!r}")
    return StoredPolicy(int(row.id), _parse(row.source, f"{row.name} (stored)"))


def activate(
    session: Session,
    *,
    policy_id: int,
    actor: str,
    reason: str,
    now: datetime,
    effective_from: date | None = None,
) -> int:
    """Activate a stored policy from ``effective_from`` (default today); returns the ledger seq."""
    if not reason.strip():
        raise Invalid("activating a policy needs a reason (it is kept in the ledger)")
    if not actor.strip():
        raise Invalid("activating a policy needs an actor")
    row = session.execute(
        select(policies.c.name, policies.c.version, policies.c.content_hash).where(
            policies.c.id == policy_id
        )
    ).first()
    if row is None:
        raise NotFound(f"no stored policy with id {policy_id}")
    start = effective_from or now.date()
    payload = ledger.canonical_json(
        {
            "policy": row.name,
            "version": row.version,
            "content_hash": row.content_hash,
            "actor": actor,
            "reason": reason,
            "effective_from": start.isoformat(),
        }
    )
    (seq,) = ledger.append(
        session, [ledger.NewEntry(kind="policy.activation", payload=payload)], now=now
    )
    session.execute(
        insert(activations).values(
            policy_id=policy_id,
            activated_at=now,
            effective_from=start,
            actor=actor,
            reason=reason,
            ledger_seq=seq,
        )
    )
    return seq


SINCE_EVER = date(1970, 1, 1)
"""The ``effective_from`` of a first policy: in force for every record a feed may hold."""


def install_policy(
    session: Session,
    *,
    text: str,
    source: str,
    actor: str,
    reason: str,
    now: datetime,
    effective_from: date = SINCE_EVER,
) -> StoredPolicy:
    """Store a policy and activate it at once (a new database's first policy, a demo, a test)."""
    stored = add_policy(session, text=text, source=source, now=now)
    activate(
        session,
        policy_id=stored.id,
        actor=actor,
        reason=reason,
        now=now,
        effective_from=effective_from,
    )
    return stored


def active_policy(session: Session, *, on: date | None = None) -> StoredPolicy:
    """The policy in force on ``on`` (default: the latest activation)."""
    stmt = (
        select(policies.c.id, policies.c.source, policies.c.name)
        .join(activations, activations.c.policy_id == policies.c.id)
        .order_by(activations.c.effective_from.desc(), activations.c.id.desc())
        .limit(1)
    )
    if on is not None:
        stmt = stmt.where(activations.c.effective_from <= on)
    row = session.execute(stmt).first()
    if row is None:
        when = f" on {on}" if on else ""
        raise NoActivePolicy(
            f"no policy is active{when}: run `chengxin policy activate` (or `chengxin init`)"
        )
    return StoredPolicy(int(row.id), _parse(row.source, f"{row.name} (stored)"))


PACKS = ("national", "city-points", "driving-points")


def read_policy_source(name_or_path: str) -> tuple[str, str]:
    """The YAML text and a source label for a shipped pack name or a file path."""
    from importlib.resources import files
    from pathlib import Path

    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.exists():
            raise NotFound(f"policy file {path} does not exist")
        try:
            return path.read_text(encoding="utf-8"), str(path)
        except UnicodeDecodeError as exc:
            raise Invalid(f"{path} is not UTF-8 text (byte {exc.start})") from None
    resource = files("chengxin.policies") / f"{name_or_path}.yaml"
    if not resource.is_file():
        raise NotFound(f"no policy pack or file named {name_or_path!r} (packs: {', '.join(PACKS)})")
    return resource.read_text(encoding="utf-8"), f"{name_or_path}.yaml"
