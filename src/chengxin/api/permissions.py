"""Who may call what: the role sets the routes name, in one place.

Everything is denied unless a role here allows it. Precedence, written once:

1. no valid credentials: 401 ``unauthenticated`` (public routes excepted);
2. a role outside the route's set: 403 ``forbidden`` -- except where a
   subject would learn that another subject exists, which is a 404;
3. a role inside the set, but a registration that does not cover the
   request (a provider's record types and provider code, a service's
   measures): 403 with a code naming what is missing;
4. only then is the input examined (422 naming the field) and the work done.

Administrators manage principals from the command line; over HTTP they
may read subjects with a stated purpose and manage policies, but they do
not write records, check measures or read the audit trail (separation of
duties: the auditor watches the administrator).
"""

from __future__ import annotations

from typing import Final

from chengxin.service.principals import ROLES, Role

ALL_ROLES: Final[tuple[Role, ...]] = ROLES
"""Every role."""

AUTHENTICATED: Final[tuple[Role, ...]] = tuple(r for r in ROLES if r != "public")
"""Every role but ``public`` (which sees the public lists only)."""

PROVIDERS: Final[tuple[Role, ...]] = ("provider",)
"""Who writes records: providers only, each as its own provider code."""

SERVICES: Final[tuple[Role, ...]] = ("service",)
"""Who checks measures: services only, each for its registered measures."""

SUBJECTS: Final[tuple[Role, ...]] = ("subject",)
"""Who reads ``/v1/me``: the subject itself."""

SUBJECT_READERS: Final[tuple[Role, ...]] = ("adjudicator", "admin")
"""Who reads any subject (with a purpose, audited)."""

LIST_READERS: Final[tuple[Role, ...]] = ("adjudicator", "auditor", "admin")
"""Who reads list members with their identifiers (audited)."""

POLICY_WRITERS: Final[tuple[Role, ...]] = ("policy_author", "admin")
"""Who lints and activates policies (activation audited, reason required)."""

AUDITORS: Final[tuple[Role, ...]] = ("auditor",)
"""Who reads and verifies the audit trail."""

CONCEAL_SUBJECTS: Final[tuple[Role, ...]] = ("subject",)
"""Roles that get 404 rather than 403 on another subject's data (no existence leak)."""
