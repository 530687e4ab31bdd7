"""The ``principals`` commands: register who may call the HTTP API, issue and revoke keys.

A machine's API key is printed once, when it is made, and never again: the
store keeps only its prefix and an argon2 hash.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Annotated, Any, cast

import typer
from rich.table import Table

DbOpt = Annotated[
    str, typer.Option("--db", envvar="CHENGXIN_DB", help="SQLite file or postgresql:// URL.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
ExpiresOpt = Annotated[
    str | None, typer.Option("--expires", help="Expiry date YYYY-MM-DD (00:00 UTC).")
]


def _expiry(text: str | None) -> datetime | None:
    from chengxin.cli import parse_day

    day = parse_day(text, "--expires")
    return None if day is None else datetime(day.year, day.month, day.day, tzinfo=UTC)


def _password() -> str:
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\n")
    value: str = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    return value


def _info(p: Any) -> dict[str, Any]:
    return {
        "name": p.principal.name,
        "kind": p.principal.kind,
        "role": p.principal.role,
        "provider": p.principal.provider,
        "service_kind": p.principal.service_kind,
        "scopes": sorted(p.principal.scopes),
        "subject_id": p.principal.subject_id,
        "created_at": p.created_at.isoformat(),
        "expires_at": p.expires_at.isoformat() if p.expires_at else None,
        "revoked_at": p.revoked_at.isoformat() if p.revoked_at else None,
        "keys": list(p.keys),
    }


def add(
    name: Annotated[str, typer.Argument(help="A unique name, e.g. 'China Eastern booking'.")],
    role: Annotated[
        str,
        typer.Option(
            "--role",
            help="admin, policy_author, provider, service, adjudicator, auditor, subject or "
            "public.",
        ),
    ],
    kind: Annotated[
        str | None,
        typer.Option(
            "--kind", help="machine (API key) or person (password); default by --password."
        ),
    ] = None,
    provider: Annotated[
        str | None, typer.Option("--provider", help="Providers: the provider code it writes as.")
    ] = None,
    service_kind: Annotated[
        str | None,
        typer.Option("--service-kind", help="Services: airline, rail, bank, landlord, ..."),
    ] = None,
    scope: Annotated[
        list[str] | None,
        typer.Option(
            "--scope", help="Providers: a record type; services: a measure. Repeat for more."
        ),
    ] = None,
    subject: Annotated[
        str | None, typer.Option("--subject", help="Subjects: cn-rid:…, cn-uscc:… or generic:….")
    ] = None,
    expires: ExpiresOpt = None,
    password: Annotated[
        bool,
        typer.Option("--password", help="A person: prompt for a password (or read it from stdin)."),
    ] = False,
    db: DbOpt = "chengxin.sqlite",
    as_json: JsonOpt = False,
) -> None:
    """Register a principal; a machine's API key is printed once, now."""
    from chengxin.cli import emit, guarded, open_db, out, parse_subject
    from chengxin.service.clock import SystemClock
    from chengxin.service.errors import Invalid
    from chengxin.service.principals import Kind, Role, add_principal, issue_key
    from chengxin.store.db import transaction

    with guarded(as_json):
        who = kind or ("person" if password else "machine")
        if who not in ("machine", "person"):
            raise Invalid(f"--kind must be machine or person, not {who!r}")
        sid = parse_subject(subject) if subject is not None else None
        until = _expiry(expires)
        secret = _password() if password else None
        engine = open_db(db)
        now = SystemClock().now()
        with transaction(engine) as session:
            principal = add_principal(
                session,
                name=name,
                role=cast(Role, role),  # add_principal refuses an unknown role
                kind=cast(Kind, who),
                provider=provider,
                service_kind=service_kind,
                scopes=scope or (),
                subject=sid,
                password=secret,
                expires_at=until,
                now=now,
            )
            key = (
                issue_key(session, principal_id=principal.id, now=now, expires_at=until)
                if who == "machine"
                else None
            )
        data = {"name": principal.name, "role": principal.role, "kind": who, "key": key}
        if as_json:
            emit(data)
            return
        out.print(f"added [bold]{principal.name}[/] ({principal.role}, {who})")
        if key is not None:
            out.print("API key (shown once; store it now):", highlight=False)
            print(key)


def list_(db: DbOpt = "chengxin.sqlite", as_json: JsonOpt = False) -> None:
    """List principals with their registrations and live key prefixes (never keys)."""
    from chengxin.cli import emit, guarded, open_db, out
    from chengxin.service.clock import SystemClock
    from chengxin.service.principals import list_principals
    from chengxin.store.db import transaction

    with guarded(as_json):
        engine = open_db(db)
        with transaction(engine) as session:
            infos = list_principals(session, now=SystemClock().now())
        data = [_info(p) for p in infos]
        if as_json:
            emit(data)
            return
        t = Table("name", "kind", "role", "registered for", "keys", "expires", "revoked")
        for d in data:
            reg = d["provider"] or d["service_kind"] or ""
            if d["scopes"]:
                reg = f"{reg}: {', '.join(d['scopes'])}"
            t.add_row(
                d["name"],
                d["kind"],
                d["role"],
                reg,
                ", ".join(d["keys"]),
                (d["expires_at"] or "")[:10],
                (d["revoked_at"] or "")[:10],
            )
        out.print(t)


def revoke(
    name: Annotated[str, typer.Argument(help="The principal to revoke.")],
    key: Annotated[
        str | None, typer.Option("--key", help="Revoke only the key with this prefix.")
    ] = None,
    db: DbOpt = "chengxin.sqlite",
    as_json: JsonOpt = False,
) -> None:
    """Revoke a principal and all its keys at once (or one key with --key)."""
    from chengxin.cli import emit, guarded, open_db, out
    from chengxin.service.clock import SystemClock
    from chengxin.service.principals import revoke as revoke_principal
    from chengxin.store.db import transaction

    with guarded(as_json):
        engine = open_db(db)
        with transaction(engine) as session:
            keys = revoke_principal(session, name=name, now=SystemClock().now(), key_prefix=key)
        if as_json:
            emit({"name": name, "keys_revoked": keys, "principal_revoked": key is None})
        elif key is None:
            out.print(f"revoked [bold]{name}[/] and {keys} key(s)")
        else:
            out.print(f"revoked key {key} of [bold]{name}[/]")


def key(
    name: Annotated[str, typer.Argument(help="The machine principal to issue a key to.")],
    expires: ExpiresOpt = None,
    db: DbOpt = "chengxin.sqlite",
    as_json: JsonOpt = False,
) -> None:
    """Issue another API key (to rotate keys: issue, deploy, then revoke the old one)."""
    from chengxin.cli import emit, guarded, open_db, out
    from chengxin.service.clock import SystemClock
    from chengxin.service.principals import find_principal, issue_key
    from chengxin.store.db import transaction

    with guarded(as_json):
        until = _expiry(expires)
        engine = open_db(db)
        with transaction(engine) as session:
            pid = find_principal(session, name=name).id
            new = issue_key(session, principal_id=pid, now=SystemClock().now(), expires_at=until)
        if as_json:
            emit({"name": name, "key": new})
            return
        out.print(f"new API key for [bold]{name}[/] (shown once; store it now):")
        print(new)


def register(app: typer.Typer) -> None:
    """Add the ``principals`` command group to the CLI."""
    principals_app = typer.Typer(
        help="Register principals of the HTTP API; issue, list and revoke their keys.",
        no_args_is_help=True,
    )
    principals_app.command("add")(add)
    principals_app.command("list")(list_)
    principals_app.command("revoke")(revoke)
    principals_app.command("key")(key)
    app.add_typer(principals_app, name="principals")
