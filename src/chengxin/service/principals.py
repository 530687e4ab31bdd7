"""Principals: who may call the service, with which role, and how they prove it.

Eight roles, and everything is denied unless a role allows it:

``admin``           manages principals (CLI), reads any subject with a stated purpose
``policy_author``   lints and activates policies
``provider``        writes records of the types it is registered for, as its own
                    provider code; corrects or retracts only its own records
``service``         checks the measures it is registered for (its scopes, and
                    the measure's ``consulted_by`` must name its service kind)
``adjudicator``     reads any subject with a stated purpose, and the lists
``auditor``         reads the audit trail and verifies it
``subject``         sees itself only
``public``          the public lists only

Machines hold API keys ``cx_<prefix>_<secret>``: the key is shown once; the
store keeps the prefix (to find the row) and an argon2id hash of the whole
key (RFC 9106; OWASP's minimum parameters, so a verification costs tens of
milliseconds). Keys are revocable and may expire. Verified keys are cached in
process as ``prefix -> sha256(key)``, so only the first request of a key pays
for argon2; :func:`authenticate_key` still reads revocation and expiry from the
database on every call (the HTTP service adds a short-lived cache in front of
it: :mod:`chengxin.service.keycache`). People log in with a password (argon2id
as well).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal, cast, get_args

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import CursorResult, bindparam, insert, select, update
from sqlalchemy.orm import Session

from chengxin.domain.identifiers import (
    InvalidIdentifier,
    Scheme,
    SubjectId,
    expected_kind,
    mask,
    parse_identifier,
    region_of,
    rid_birth_date,
)
from chengxin.domain.policy import CODE_PATTERN, Policy
from chengxin.service.errors import Invalid, NotFound, NotRegistered, ServiceError
from chengxin.service.subjects import ListEntryView
from chengxin.store import ledger, repo
from chengxin.store.schema import api_keys, api_requests, memberships, principals, subjects

Role = Literal[
    "admin", "policy_author", "provider", "service", "adjudicator", "auditor", "subject", "public"
]
"""What a principal may do (see the module docstring)."""
ROLES: Final[tuple[Role, ...]] = get_args(Role)
"""Every role, in a stable order."""
Kind = Literal["machine", "person"]
"""Machines authenticate with API keys, people with a password and a session cookie."""
KINDS: Final[tuple[Kind, ...]] = get_args(Kind)

KEY_PATTERN = re.compile(r"^cx_([0-9a-f]{12})_([A-Za-z0-9_-]{20,100})$")
_SERVICE_KIND = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
_PROVIDER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
_CODE = re.compile(CODE_PATTERN)
_LAST_USED_EVERY = timedelta(minutes=1)  # last_used_at is written at most this often
_CACHE_MAX = 10_000

HASHER = PasswordHasher(time_cost=2, memory_cost=19_456, parallelism=1)
"""argon2id with OWASP's minimum parameters (19 MiB, 2 passes, 1 lane) for keys and passwords.

Hashes carry their parameters, so a test suite may set a cheaper hasher here
and stored hashes still verify.
"""
# Verified against when a name is unknown, so that a wrong name and a wrong
# password take the same time.
_DUMMY_HASH = HASHER.hash("chengxin: no such principal")


class Unauthenticated(ServiceError):
    """The credentials are missing, unknown, wrong, revoked or expired."""

    code = "unauthenticated"

    def __init__(self, message: str, reason: str = "invalid") -> None:
        super().__init__(message)
        self.reason = reason


class ForbiddenProvider(NotRegistered):
    """A provider wrote a line naming another provider."""

    code = "forbidden_provider"


class TypeNotRegistered(NotRegistered):
    """A provider wrote a record type it is not registered for."""

    code = "type_not_registered"


class MeasureNotRegistered(NotRegistered):
    """A service asked for a measure it is not registered for (hard line 6)."""

    code = "measure_not_registered"


class IdempotencyConflict(ServiceError):
    """An idempotency key was used again with a different request."""

    code = "idempotency_conflict"


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: who, in which role, registered for what."""

    id: int
    name: str
    kind: Kind
    role: Role
    provider: str | None = None
    service_kind: str | None = None
    scopes: frozenset[str] = frozenset()
    subject_id: int | None = None


@dataclass(frozen=True, slots=True)
class PrincipalInfo:
    """A principal as an administrator sees it (never a key or a hash)."""

    principal: Principal
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    keys: tuple[str, ...]  # prefixes of the keys that are neither revoked nor expired


def _utc(value: datetime | None) -> datetime | None:
    """A stored instant as aware UTC (SQLite hands back naive UTC)."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _principal(row: Any) -> Principal:
    return Principal(
        id=int(row.id),
        name=row.name,
        kind=row.kind,
        role=row.role,
        provider=row.provider,
        service_kind=row.service_kind,
        scopes=frozenset(json.loads(row.scopes or "[]")),
        subject_id=None if row.subject_id is None else int(row.subject_id),
    )


def _lapsed(expires_at: datetime | None, revoked_at: datetime | None, now: datetime) -> str | None:
    if revoked_at is not None:
        return "revoked"
    exp = _utc(expires_at)
    if exp is not None and exp <= now:
        return "expired"
    return None


def _check_future(expires_at: datetime | None, now: datetime) -> datetime | None:
    when = _utc(expires_at)
    if when is not None and when <= now:
        raise Invalid(f"expiry {when.isoformat()} is not in the future")
    return when


def _check_registration(
    *,
    role: str,
    provider: str | None,
    service_kind: str | None,
    scopes: Sequence[str],
    subject: SubjectId | None,
) -> None:
    if role not in ROLES:
        raise Invalid(f"unknown role {role!r} (roles: {', '.join(ROLES)})")
    if (provider is not None) != (role == "provider"):
        raise Invalid("a provider needs a provider code, and only a provider has one")
    if provider is not None and not _PROVIDER.match(provider):
        raise Invalid(f"provider code {provider!r} must be 1-64 letters, digits, '.', ':' or '-'")
    if (service_kind is not None) != (role == "service"):
        raise Invalid(
            "a service needs a service kind (airline, bank, ...), and only a service has one"
        )
    if service_kind is not None and not _SERVICE_KIND.match(service_kind):
        raise Invalid(f"service kind {service_kind!r} must be lower-case letters, digits or '_'")
    if scopes and role not in ("provider", "service"):
        raise Invalid("only providers (record types) and services (measures) have scopes")
    for scope in scopes:
        if not _CODE.match(scope):
            what = "record type" if role == "provider" else "measure"
            raise Invalid(
                f"scope {scope!r} is not a {what} code such as 'judicial.judgment_unperformed'"
            )
    if (subject is not None) != (role == "subject"):
        raise Invalid("a subject principal needs a subject identifier, and only it has one")


def _subject_id(session: Session, subject: SubjectId, now: datetime) -> int:
    row = repo.find_subject(session, subject)
    if row is not None:
        return row.id
    kinds = expected_kind(subject.scheme)
    if len(kinds) != 1:
        # A cn-uscc names an organisation or a public body and a generic identifier
        # anything: guessing would refuse the providers' later records of the other kind.
        raise Invalid(
            f"no records are held on {subject} yet and its kind cannot be told from the "
            "identifier: add the principal once a provider has reported on it"
        )
    repo.insert_subjects(
        session,
        [
            {
                "scheme": subject.scheme,
                "value": subject.value,
                "kind": kinds[0],
                "name": None,
                "region": region_of(subject),
                "birth_date": rid_birth_date(subject.value) if subject.scheme == "cn-rid" else None,
                "created_at": now,
            }
        ],
    )
    found = repo.find_subject(session, subject)
    assert found is not None
    return found.id


def add_principal(
    session: Session,
    *,
    name: str,
    role: Role,
    kind: Kind,
    provider: str | None = None,
    service_kind: str | None = None,
    scopes: Iterable[str] = (),
    subject: SubjectId | None = None,
    password: str | None = None,
    expires_at: datetime | None = None,
    now: datetime,
) -> Principal:
    """Register a principal (refused with the reason if its registration does not fit its role)."""
    name = name.strip()
    if not name or len(name) > 120:
        raise Invalid("a principal's name must have 1 to 120 characters")
    if kind not in KINDS:
        raise Invalid(f"unknown kind {kind!r} (machine or person)")
    scope_list = sorted(set(scopes))
    _check_registration(
        role=role, provider=provider, service_kind=service_kind, scopes=scope_list, subject=subject
    )
    if kind == "person" and not password:
        raise Invalid("a person logs in with a password: give one")
    if kind == "machine" and password:
        raise Invalid("a machine authenticates with API keys, not a password")
    if password is not None and len(password) < 12:
        raise Invalid("a password needs at least 12 characters")
    _check_future(expires_at, now)
    exists = session.execute(select(principals.c.id).where(principals.c.name == name)).first()
    if exists is not None:
        raise Invalid(f"a principal named {name!r} already exists")
    subject_id = _subject_id(session, subject, now) if subject is not None else None
    new_id = session.execute(
        insert(principals)
        .values(
            name=name,
            kind=kind,
            role=role,
            provider=provider,
            service_kind=service_kind,
            scopes=json.dumps(scope_list),
            subject_id=subject_id,
            password_hash=HASHER.hash(password) if password else None,
            created_at=now,
            expires_at=expires_at,
        )
        .returning(principals.c.id)
    ).scalar_one()
    return Principal(
        int(new_id), name, kind, role, provider, service_kind, frozenset(scope_list), subject_id
    )


def issue_key(
    session: Session, *, principal_id: int, now: datetime, expires_at: datetime | None = None
) -> str:
    """A new API key for a machine principal; the only time the key is ever shown."""
    row = session.execute(select(principals).where(principals.c.id == principal_id)).first()
    if row is None:
        raise NotFound(f"no principal with id {principal_id}")
    if row.kind != "machine":
        raise Invalid(f"{row.name} is a person: people log in with a password, not a key")
    lapsed = _lapsed(row.expires_at, row.revoked_at, now)
    if lapsed is not None:
        raise Invalid(f"{row.name} is {lapsed}: it cannot get a new key")
    expires_at = _check_future(expires_at, now)
    owner_expiry = _utc(row.expires_at)
    if owner_expiry is not None and (expires_at is None or expires_at > owner_expiry):
        expires_at = owner_expiry  # a key never outlives its principal
    prefix = secrets.token_hex(6)
    key = f"cx_{prefix}_{secrets.token_urlsafe(32)}"
    session.execute(
        insert(api_keys).values(
            principal_id=principal_id,
            prefix=prefix,
            key_hash=HASHER.hash(key),
            created_at=now,
            expires_at=expires_at,
        )
    )
    return key


class _VerifiedKeys:
    """prefix -> sha256(key) of keys argon2 has accepted (bounded, thread-safe)."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._items: OrderedDict[str, bytes] = OrderedDict()

    def matches(self, prefix: str, digest: bytes) -> bool:
        with self._lock:
            known = self._items.get(prefix)
            if known is not None:
                self._items.move_to_end(prefix)
        return known is not None and hmac.compare_digest(known, digest)

    def add(self, prefix: str, digest: bytes) -> None:
        with self._lock:
            self._items[prefix] = digest
            self._items.move_to_end(prefix)
            while len(self._items) > self._size:
                self._items.popitem(last=False)


_VERIFIED = _VerifiedKeys(_CACHE_MAX)
# Built once: authentication runs on every request.
_KEY_ROW = (
    select(
        principals,
        api_keys.c.id.label("key_id"),
        api_keys.c.key_hash,
        api_keys.c.expires_at.label("key_expires_at"),
        api_keys.c.revoked_at.label("key_revoked_at"),
        api_keys.c.last_used_at,
    )
    .select_from(api_keys)
    .join(principals, principals.c.id == api_keys.c.principal_id)
    .where(api_keys.c.prefix == bindparam("prefix"))
)
_INVALID_KEY = "the API key is not valid"


@dataclass(frozen=True, slots=True)
class KeyGrant:
    """What a valid API key grants: its principal, until when, and whether to note its use."""

    principal: Principal
    expires_at: datetime | None
    """The earlier of the key's and the principal's expiry (None: neither expires)."""
    key_id: int
    touch_due: bool
    """``last_used_at`` is older than a minute: :func:`touch_key` should note this use."""


def check_key(session: Session, key: str, *, now: datetime) -> KeyGrant:
    """What an API key grants, reading only; :class:`Unauthenticated` if it may not be used."""
    match = KEY_PATTERN.match(key.strip())
    if match is None:
        raise Unauthenticated(_INVALID_KEY)
    prefix = match.group(1)
    row = session.execute(_KEY_ROW, {"prefix": prefix}).first()
    digest = hashlib.sha256(key.encode()).digest()
    if row is None:
        HASHER.verify(_DUMMY_HASH, "chengxin: no such principal")  # same cost as a miss
        raise Unauthenticated(_INVALID_KEY)
    if not _VERIFIED.matches(prefix, digest):
        try:
            HASHER.verify(row.key_hash, key)
        except (VerificationError, InvalidHashError):
            raise Unauthenticated(_INVALID_KEY) from None
        _VERIFIED.add(prefix, digest)
    # Only a caller who holds the whole key learns that it was revoked or has expired.
    lapsed = _lapsed(row.key_expires_at, row.key_revoked_at, now)
    if lapsed is None:
        lapsed = _lapsed(row.expires_at, row.revoked_at, now)
    if lapsed is not None:
        raise Unauthenticated(f"the API key is {lapsed}", lapsed)
    ends = [t for t in (_utc(row.key_expires_at), _utc(row.expires_at)) if t is not None]
    last = _utc(row.last_used_at)
    return KeyGrant(
        principal=_principal(row),
        expires_at=min(ends) if ends else None,
        key_id=int(row.key_id),
        touch_due=last is None or now - last >= _LAST_USED_EVERY,
    )


def touch_key(session: Session, *, key_id: int, now: datetime) -> None:
    """Note that a key was used at ``now`` (a write: callers do it at most once a minute)."""
    session.execute(update(api_keys).where(api_keys.c.id == key_id).values(last_used_at=now))


def authenticate_key(session: Session, key: str, *, now: datetime) -> Principal:
    """The principal an API key belongs to; :class:`Unauthenticated` if it may not be used."""
    grant = check_key(session, key, now=now)
    if grant.touch_due:
        touch_key(session, key_id=grant.key_id, now=now)
    return grant.principal


def verify_password(session: Session, *, name: str, password: str, now: datetime) -> Principal:
    """The person ``name`` if ``password`` is theirs; :class:`Unauthenticated` otherwise."""
    row = session.execute(select(principals).where(principals.c.name == name.strip())).first()
    stored = row.password_hash if row is not None and row.password_hash else None
    try:
        HASHER.verify(stored or _DUMMY_HASH, password)
        ok = stored is not None
    except (VerificationError, InvalidHashError):
        ok = False
    if not ok or row is None:
        raise Unauthenticated("the name or the password is wrong")
    lapsed = _lapsed(row.expires_at, row.revoked_at, now)
    if lapsed is not None:
        raise Unauthenticated(f"the account is {lapsed}", lapsed)
    return _principal(row)


def find_principal(session: Session, *, name: str) -> Principal:
    """A principal by name (revoked or not); :class:`NotFound` if there is none."""
    row = session.execute(select(principals).where(principals.c.name == name)).first()
    if row is None:
        raise NotFound(f"no principal named {name!r}")
    return _principal(row)


def get_principal(session: Session, *, principal_id: int, now: datetime) -> Principal:
    """A principal by id, refused if it has been revoked or has expired since it logged in."""
    row = session.execute(select(principals).where(principals.c.id == principal_id)).first()
    if row is None:
        raise Unauthenticated("the session is not valid")
    lapsed = _lapsed(row.expires_at, row.revoked_at, now)
    if lapsed is not None:
        raise Unauthenticated(f"the account is {lapsed}", lapsed)
    return _principal(row)


def revoke(session: Session, *, name: str, now: datetime, key_prefix: str | None = None) -> int:
    """Revoke a principal and all its keys (or only the key ``key_prefix``); how many keys."""
    row = session.execute(select(principals.c.id).where(principals.c.name == name)).first()
    if row is None:
        raise NotFound(f"no principal named {name!r}")
    keys = update(api_keys).where(
        api_keys.c.principal_id == row.id, api_keys.c.revoked_at.is_(None)
    )
    if key_prefix is not None:
        keys = keys.where(api_keys.c.prefix == key_prefix)
    done = cast(CursorResult[Any], session.execute(keys.values(revoked_at=now))).rowcount
    if key_prefix is not None:
        if not done:
            raise NotFound(f"{name} has no unrevoked key with prefix {key_prefix!r}")
        return int(done)
    session.execute(
        update(principals)
        .where(principals.c.id == row.id, principals.c.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    return int(done)


def list_principals(session: Session, *, now: datetime | None = None) -> list[PrincipalInfo]:
    """Every principal with its live keys' prefixes, by name."""
    when = now or datetime.now(UTC)
    keys: dict[int, list[str]] = {}
    for k in session.execute(
        select(api_keys.c.principal_id, api_keys.c.prefix, api_keys.c.expires_at).where(
            api_keys.c.revoked_at.is_(None)
        )
    ):
        if _lapsed(k.expires_at, None, when) is None:
            keys.setdefault(int(k.principal_id), []).append(k.prefix)
    out = []
    for row in session.execute(select(principals).order_by(principals.c.name)):
        out.append(
            PrincipalInfo(
                _principal(row),
                _utc(row.created_at) or when,
                _utc(row.expires_at),
                _utc(row.revoked_at),
                tuple(sorted(keys.get(int(row.id), ()))),
            )
        )
    return out


def subject_of(session: Session, principal: Principal) -> SubjectId:
    """The subject a subject principal is (:class:`NotFound` for any other principal)."""
    row = None if principal.subject_id is None else repo.get_subject(session, principal.subject_id)
    if row is None:
        raise NotFound(f"{principal.name} is not a subject")
    return SubjectId(cast(Scheme, row.scheme), row.value)


# -- what a principal may do with a request ------------------------------------


def authorize_lines(principal: Principal, lines: Iterable[Mapping[str, Any]]) -> None:
    """Refuse lines a provider may not write: another provider's, or unregistered types."""
    for n, line in enumerate(lines, start=1):
        provider = line.get("provider")
        if isinstance(provider, str) and provider.strip() != principal.provider:
            raise ForbiddenProvider(
                f"line {n} names provider {provider.strip()!r}; {principal.name} writes only as "
                f"{principal.provider!r} and corrects or retracts only its own records"
            )
        rtype = line.get("type")
        if (
            line.get("retracts") in (None, "")
            and isinstance(rtype, str)
            and rtype.strip() not in principal.scopes
        ):
            raise TypeNotRegistered(
                f"line {n}: {principal.name} is not registered for record type "
                f"{rtype.strip()!r} (registered: {', '.join(sorted(principal.scopes)) or 'none'})"
            )


def authorize_check(principal: Principal, measure: str) -> None:
    """Refuse a measure outside a service's scopes (hard line 6: least disclosure)."""
    if measure not in principal.scopes:
        raise MeasureNotRegistered(
            f"{principal.name} is not registered for measure {measure!r} "
            f"(registered: {', '.join(sorted(principal.scopes)) or 'none'}); "
            "hard line 6 (least disclosure)"
        )


# -- what the public sees ----------------------------------------------------

_PUBLIC_QUERY = re.compile(r"[0-9A-Z*]{1,18}")
_SHOWN = 4  # characters mask() shows at each end of a cn-* identifier


def _public_condition(query: str) -> Any:
    """The SQL condition for a public search, which never reveals a masked character."""
    q = query.replace(" ", "").replace("-", "").upper()
    if not _PUBLIC_QUERY.fullmatch(q):
        raise Invalid("search with an identifier, its first characters, or its masked form")
    if "*" not in q:
        for scheme in ("cn-rid", "cn-uscc"):
            try:
                sid = parse_identifier(scheme, q)
            except InvalidIdentifier:
                continue
            return (subjects.c.scheme == sid.scheme) & (subjects.c.value == sid.value)
        if len(q) > _SHOWN:
            raise Invalid(
                f"search with a whole identifier, its first {_SHOWN} characters, or its masked "
                "form (1101**********002X): a longer prefix would unmask it"
            )
        return subjects.c.value.like(q + "%")
    middle = q[_SHOWN : 18 - _SHOWN]
    if middle.strip("*"):
        raise Invalid(f"a masked identifier shows only its first and last {_SHOWN} characters")
    if "*" in q[:_SHOWN] + q[18 - _SHOWN :]:
        raise Invalid(f"a masked identifier shows its first and last {_SHOWN} characters")
    pattern = q[:_SHOWN] + "_" * len(middle) + q[18 - _SHOWN :]
    return subjects.c.value.like(pattern if len(q) == 18 else pattern + "%")


def public_list_members(
    session: Session, *, policy: Policy, list_code: str, query: str | None, limit: int = 50
) -> list[ListEntryView]:
    """Members of a public list matching ``query``, identifiers masked, names left out.

    ``query`` is a whole identifier (exact), up to its first four characters
    (prefix), or its masked form as shown (``1101**********002X``); a longer
    prefix is refused, since it would reveal what the mask hides.
    """
    lst = policy.lists_by_code.get(list_code)
    if lst is None or not lst.public:
        raise NotFound(f"there is no public list {list_code!r}")
    stmt = (
        select(
            memberships.c.list_code,
            memberships.c.kind,
            memberships.c.since,
            memberships.c.until,
            subjects.c.scheme,
            subjects.c.value,
        )
        .join(subjects, subjects.c.id == memberships.c.subject_id)
        .where(memberships.c.list_code == list_code, memberships.c.left_at.is_(None))
        .order_by(subjects.c.value)
        .limit(max(0, limit))
    )
    if query:
        stmt = stmt.where(_public_condition(query))
    return [
        ListEntryView(
            r.list_code,
            r.kind,
            mask(SubjectId(cast(Scheme, r.scheme), r.value)),
            None,
            r.since,
            r.until,
        )
        for r in session.execute(stmt)
    ]


# -- idempotent requests ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """The response first given to an idempotent request."""

    status_code: int
    body: Any


def request_hash(method: str, path: str, body: Any) -> str:
    """What makes two requests "the same": method, path and the canonical JSON body."""
    canon = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{method} {path}\n{canon}".encode()).hexdigest()


def replay(
    session: Session, *, principal_id: int, key: str, request_hash: str
) -> StoredResponse | None:
    """The stored response for a repeated key; :class:`IdempotencyConflict` if the request differs.

    Idempotent requests write the ledger, so the ledger head is locked first:
    two requests with the same key are serialised and the second sees the first.
    """
    if not key or len(key) > 200:
        raise Invalid("an Idempotency-Key has 1 to 200 characters")
    ledger.head(session, lock=True)
    row = session.execute(
        select(
            api_requests.c.request_hash, api_requests.c.status_code, api_requests.c.response
        ).where(api_requests.c.principal_id == principal_id, api_requests.c.key == key)
    ).first()
    if row is None:
        return None
    if not hmac.compare_digest(row.request_hash, request_hash):
        raise IdempotencyConflict(
            f"Idempotency-Key {key!r} was already used for a different request; "
            "use a new key for a new request"
        )
    return StoredResponse(int(row.status_code), json.loads(row.response))


def remember(
    session: Session,
    *,
    principal_id: int,
    key: str,
    request_hash: str,
    status_code: int,
    body: Any,
    now: datetime,
) -> None:
    """Keep the response to an idempotent request, in the request's transaction."""
    session.execute(
        insert(api_requests).values(
            principal_id=principal_id,
            key=key,
            request_hash=request_hash,
            status_code=status_code,
            response=json.dumps(body, separators=(",", ":"), ensure_ascii=False, default=str),
            created_at=now,
        )
    )
