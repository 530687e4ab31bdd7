"""The common line, checked without building the domain's objects.

:func:`chengxin.domain.records.check_submission` is the definition of a good
line; checking a feed through it builds three frozen dataclasses and walks
every field through general code, about two thirds of a checking worker's
time. :func:`fast_row` handles the lines a feed is made of -- a new record or
an amendment, every field of the expected JSON type and within its limits --
and gives the very row :func:`chengxin.service.checking.check_line` would.
On anything else (a retraction, a ``reason``, a value it would have to
coerce, a float anywhere, any fault at all) it returns ``None`` and the caller checks the line
the reference way, so every refusal keeps its code, field and message.
The tests hold the two to the same rows, line for line.

A subject's identifier recurs across a feed: its verdict (canonical value,
region, birth date) is remembered per process, for valid identifiers only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import date
from typing import Any

import orjson

from chengxin.domain.identifiers import InvalidIdentifier, expected_kind, parse_identifier
from chengxin.domain.policy import Policy
from chengxin.domain.records import SUBJECT_FIELDS, TOP_LEVEL, RecordRejected, check_attributes

IDENTIFIERS_MAX = 200_000
"""Valid identifiers a process remembers (about 250 bytes each); then it starts afresh."""

# (scheme, value as sent) -> (canonical value, region, birth date, birth date ISO).
_IDENTIFIERS: dict[tuple[str, str], tuple[str, str | None, date | None, str | None]] = {}


def _identifier(scheme: str, value: str) -> tuple[str, str | None, date | None, str | None] | None:
    """What a valid identifier's rows hold, remembered; None if ``parse_identifier`` refuses it."""
    key = (scheme, value)
    found = _IDENTIFIERS.get(key)
    if found is not None:
        return found
    try:
        canonical = parse_identifier(scheme, value).value
    except InvalidIdentifier:
        return None
    if scheme == "cn-rid":
        # GB 11643: characters 7-14 are the birth date YYYYMMDD (parse_identifier checked it).
        year, month, day = canonical[6:10], canonical[10:12], canonical[12:14]
        born = date(int(year), int(month), int(day))
        found = (canonical, canonical[:6], born, f"{year}-{month}-{day}")
    elif scheme == "cn-uscc":
        found = (canonical, canonical[2:8], None, None)  # GB 32100: characters 3-8
    else:
        found = (canonical, None, None, None)
    if len(_IDENTIFIERS) >= IDENTIFIERS_MAX:
        _IDENTIFIERS.clear()
    _IDENTIFIERS[key] = found
    return found


def _text(value: Any, limit: int) -> str | None:
    """``value`` stripped if it is text of 1 to ``limit`` characters so; else None."""
    if type(value) is not str:
        return None
    value = value.strip()
    return value if 0 < len(value) <= limit else None


def fast_row(
    line: int, raw: Mapping[str, Any], policy: Policy, today: date
) -> tuple[Any, ...] | None:
    """The :class:`~chengxin.service.checking.Checked` fields of a common good line, or None.

    None means "check it the reference way": the line may still be good.
    """
    if type(raw) is not dict or not raw.keys() <= TOP_LEVEL:
        return None
    if raw.get("retracts") is not None or raw.get("reason") is not None:
        return None
    provider = _text(raw.get("provider"), 64)
    ref = _text(raw.get("ref"), 200)
    if provider is None or ref is None:
        return None
    amends = raw.get("amends")
    if amends is not None:
        amends = _text(amends, 200)
        if amends is None or amends == ref:
            return None
    subject = raw.get("subject")
    if type(subject) is not dict or not subject.keys() <= SUBJECT_FIELDS:
        return None
    scheme = _text(subject.get("scheme"), 16)
    kind = _text(subject.get("kind"), 16)
    value = subject.get("id")
    if scheme is None or kind is None or type(value) is not str or not value.strip():
        return None
    name = subject.get("name")
    if name is not None and name != "":
        name = _text(name, 200)
        if name is None:
            return None
    else:
        name = None
    ident = _identifier(scheme, value)
    if ident is None or kind not in expected_kind(scheme):
        return None
    canonical, region, born, born_iso = ident
    type_code = _text(raw.get("type"), 80)
    rtype = policy.types.get(type_code) if type_code is not None else None
    if rtype is None or kind not in rtype.applies_to:
        return None
    occurred_text = raw.get("occurred_at")
    if type(occurred_text) is not str:
        return None
    occurred_text = occurred_text.strip()
    if len(occurred_text) > 10 and occurred_text[10] in "T ":
        occurred_text = occurred_text[:10]  # a timestamp: the day is what counts
    try:
        occurred = date.fromisoformat(occurred_text)
    except ValueError:
        return None
    if occurred > today or (born is not None and occurred < born):
        return None
    attributes = raw.get("attributes")
    if attributes is None or attributes == "":
        attributes = {}
    elif type(attributes) is not dict:
        return None
    if attributes and float in map(type, attributes.values()):
        return None  # orjson reads an integer past 64 bits as a float: see parse_jsonl_line
    if attributes or rtype.attributes:  # the record type's schema, as the reference applies it
        try:
            attributes = check_attributes(policy, rtype.code, attributes)
        except RecordRejected:
            return None
    evidence = raw.get("evidence")
    if evidence is not None and evidence != "":
        evidence = _text(evidence, 200)
        if evidence is None:
            return None
    else:
        evidence = None
    # Submission.payload(), written out.
    subj = {"scheme": scheme, "id": canonical, "kind": kind}
    if name:
        subj["name"] = name
    occurred_iso = occurred.isoformat()
    payload: dict[str, Any] = {
        "provider": provider,
        "ref": ref,
        "subject": subj,
        "type": type_code,
        "occurred_at": occurred_iso,
    }
    if attributes:
        payload["attributes"] = attributes
    if evidence is not None:
        payload["evidence"] = evidence
    if amends is not None:
        payload["amends"] = amends
    try:
        # store.ledger.canonical_json, as bytes: they are what sha256_hex hashes.
        blob = orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)
        attributes_json = (
            orjson.dumps(attributes, option=orjson.OPT_SORT_KEYS).decode() if attributes else "{}"
        )
    except orjson.JSONEncodeError:  # a lone surrogate: the reference refuses the line
        return None
    return (
        line,
        provider,
        ref,
        "record" if amends is None else "amendment",
        blob.decode(),
        hashlib.sha256(blob).hexdigest(),
        amends,
        scheme,
        canonical,
        kind,
        name,
        region,
        born_iso,
        type_code,
        rtype.domain,
        occurred_iso,
        attributes_json,
        evidence,
    )
