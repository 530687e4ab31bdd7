"""Structured logs: one JSON line per request, and no personal data anywhere in them."""

from __future__ import annotations

import logging
import logging.config
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi import FastAPI, Request
from hypothesis import given
from hypothesis import strategies as st

from api_ops.opstools import LogCapture, TestClient, bearer, wrong_check
from chengxin.api.logging import JsonFormatter, _Stamps, log_config
from chengxin.service.principals import Principal, Role

pytestmark = pytest.mark.usefixtures("backend")
Keys = dict[Role, str]
FIELDS = {
    "time",
    "level",
    "logger",
    "message",
    "method",
    "route",
    "status",
    "duration_ms",
    "principal",
    "role",
    "request_id",
}


def test_each_request_gives_one_json_line_with_its_request_id(
    client: TestClient, keys: Keys, logs: LogCapture
) -> None:
    r = client.get("/v1/lists", headers=bearer(keys["auditor"]))
    assert r.status_code == 200
    client.get("/healthz")
    first, second = logs.lines("chengxin.access")
    assert set(first) == FIELDS
    assert first["request_id"] == r.headers["X-Request-ID"]
    assert len(first["request_id"]) == 32
    assert first["time"].endswith("+00:00")
    assert (first["method"], first["route"], first["status"]) == ("GET", "/v1/lists", 200)
    assert (first["principal"], first["role"]) == ("auditor-1", "auditor")
    assert isinstance(first["duration_ms"], float) and first["duration_ms"] >= 0
    assert (second["route"], second["principal"], second["role"]) == ("/healthz", None, None)
    third = client.get("/healthz").headers["X-Request-ID"]
    ids = {first["request_id"], second["request_id"], third}
    assert len(ids) == 3 and all(len(i) == 32 and int(i, 16) >= 0 for i in ids)


def test_a_proxy_request_id_is_kept_if_it_cannot_carry_an_identifier(
    client: TestClient, logs: LogCapture, rid: Callable[[int], str]
) -> None:
    given = str(uuid.uuid4())
    assert client.get("/healthz", headers={"X-Request-ID": given}).headers["X-Request-ID"] == given
    smuggled = client.get("/healthz", headers={"X-Request-ID": rid(2)})
    assert smuggled.headers["X-Request-ID"] != rid(2)
    assert logs.lines("chengxin.access")[0]["request_id"] == given
    assert rid(2) not in logs.text


def test_a_subject_is_logged_by_role_only(
    app: FastAPI, client: TestClient, logs: LogCapture
) -> None:
    @app.get("/whoami")
    def whoami(request: Request) -> None:
        request.state.principal = Principal(id=9, name="Li Si", kind="machine", role="subject")

    client.get("/whoami")
    (line,) = logs.lines("chengxin.access")
    assert (line["principal"], line["role"]) == (None, "subject")
    assert "Li Si" not in logs.text


def test_no_identifier_name_purpose_reference_or_query_is_ever_logged(
    client: TestClient,
    keys: Keys,
    logs: LogCapture,
    record_line: Any,
    rid: Callable[[int], str],
) -> None:
    line = record_line(rid=rid(2), name="Zhang San")
    provider, service = bearer(keys["provider"]), bearer(keys["service"])
    assert client.post("/v1/records", json=line, headers=provider).status_code == 201
    bad = record_line(rid=wrong_check(rid(4)), name="Wang Wu")
    assert client.post("/v1/records", json=bad, headers=provider).status_code == 422
    for who in (rid(2), rid(777)):
        body = {
            "subject": {"scheme": "cn-rid", "id": who},
            "measure": "transport.flight_booking",
            "purpose": "booking MU5101",
        }
        assert client.post("/v1/checks", json=body, headers=service).status_code == 200
    explain = f"/v1/subjects/cn-rid/{rid(2)}/history"
    r = client.get(explain, params={"purpose": "dispute review 7"}, headers=bearer(keys["admin"]))
    assert r.status_code == 200
    public = client.get("/v1/public/lists/judgment-defaulters", params={"q": rid(2)})
    assert public.status_code == 200 and public.json()
    client.get(f"/v1/subjects/cn-rid/{rid(5)}/history", params={"purpose": "x"})  # 401
    client.get(f"/nowhere/{rid(3)}", params={"name": "Zhao Liu"})
    me = client.get("/v1/me", headers=bearer(keys["subject"]))
    assert me.status_code == 200

    lines = logs.lines()
    assert len(logs.lines("chengxin.access")) == 9
    for secret in (
        *(rid(n) for n in (1, 2, 3, 4, 5, 777)),
        wrong_check(rid(4)),
        "Zhang",
        "Wang Wu",
        "Zhao Liu",
        "MU5101",
        "dispute review",
        line["ref"],
        "?",
        "cn-rid",
    ):
        assert secret not in logs.text, f"{secret!r} was logged"
    routes = {x["route"] for x in lines if x["logger"] == "chengxin.access"}
    assert "/v1/subjects/{scheme}/{id}/history" in routes and "unmatched" in routes


def test_an_exception_is_logged_by_type_and_frames_without_its_message(
    rid: Callable[[int], str],
) -> None:
    def fail() -> None:
        raise ValueError(f"{rid(2)} has a bad check character")

    try:
        fail()
    except ValueError:
        record = logging.LogRecord(
            "uvicorn.error",
            logging.ERROR,
            __file__,
            1,
            "Exception in ASGI application",
            None,
            sys.exc_info(),
        )
    text = JsonFormatter().format(record)
    assert rid(2) not in text
    assert '"exception":"ValueError"' in text and "in fail" in text


def test_serve_logs_json_and_turns_off_uvicorns_access_log() -> None:
    config = log_config("warning")
    before = {
        name: (lg.level, lg.handlers[:], lg.propagate)
        for name in ("uvicorn", "uvicorn.access", "chengxin")
        for lg in [logging.getLogger(name)]
    }
    try:
        logging.config.dictConfig(config)
        access = logging.getLogger("uvicorn.access")
        assert not access.isEnabledFor(logging.ERROR) and not access.propagate
        chengxin = logging.getLogger("chengxin")
        assert isinstance(chengxin.handlers[0].formatter, JsonFormatter)
        assert chengxin.level == logging.WARNING
    finally:
        for name, (level, handlers, propagate) in before.items():
            lg = logging.getLogger(name)
            lg.setLevel(level)
            lg.handlers[:] = handlers
            lg.propagate = propagate


@given(
    st.floats(min_value=0, max_value=4_102_444_800, allow_nan=False)  # to 2100
    | st.integers(0, 4_102_444_800).map(lambda s: s + 0.9999995)  # rounding up a second
    | st.integers(0, 4_102_444_800).map(lambda s: s + 0.0005)
)
def test_the_time_of_a_line_is_datetimes_iso_format_to_the_millisecond(t: float) -> None:
    stamps = _Stamps()
    expected = datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds")
    assert stamps(t) == expected
    assert stamps(t) == expected  # from the second's memo
    assert stamps(t + 1) == datetime.fromtimestamp(t + 1, UTC).isoformat(timespec="milliseconds")
