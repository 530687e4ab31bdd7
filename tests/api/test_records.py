"""Providers write records over HTTP: lines, batches, idempotency; every bad input refused."""

from __future__ import annotations

import gc
import json
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from chengxin.service.checking import gc_paused
from chengxin.store.schema import api_requests, ledger, records

Auth = Callable[[str], dict[str, str]]
State = Callable[..., Any]
RecordLine = Callable[..., dict[str, Any]]

pytestmark = pytest.mark.usefixtures("backend")


def test_one_record_is_stored_and_a_repeat_is_a_duplicate_with_the_original_seq(
    client: TestClient, auth: Auth, record_line: RecordLine, rows: Any
) -> None:
    line = record_line()
    first = client.post("/v1/records", json=line, headers=auth("provider"))
    assert first.status_code == 201, first.text
    body = first.json()
    assert body["status"] == "accepted" and body["ref"] == line["ref"] and body["seq"] >= 1
    again = client.post("/v1/records", json=line, headers=auth("provider"))
    assert again.status_code == 200
    assert again.json()["status"] == "duplicate" and again.json()["seq"] == body["seq"]
    assert len(rows(records)) == 1


def test_a_rejected_line_is_422_with_its_code_and_field_and_stores_nothing(
    client: TestClient,
    auth: Auth,
    record_line: RecordLine,
    rid: Any,
    state: State,
    wrong_check: Callable[[str], str],
) -> None:
    before = state()
    bad = record_line(rid=wrong_check(rid(3)))
    r = client.post("/v1/records", json=bad, headers=auth("provider"))
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["code"] == "identifier.bad_check_character"
    assert err["field"] == "subject.id" and "check character" in err["message"]
    assert state() == before


def test_a_provider_retracts_its_own_record(
    client: TestClient, auth: Auth, record_line: RecordLine, rows: Any
) -> None:
    line = record_line()
    assert client.post("/v1/records", json=line, headers=auth("provider")).status_code == 201
    retraction = {
        "provider": line["provider"],
        "ref": line["ref"] + "-r",
        "retracts": line["ref"],
        "reason": "entered in error",
    }
    r = client.post("/v1/records", json=retraction, headers=auth("provider"))
    assert r.status_code == 201, r.text
    assert [row.status for row in rows(records)] == ["retracted"]


@pytest.mark.parametrize(
    ("override", "code"),
    [
        ({"provider": "tax-110105"}, "forbidden_provider"),
        ({"type": "societal.fail_to_yield_pedestrian", "attributes": None}, "type_not_registered"),
    ],
)
def test_a_provider_may_not_write_as_another_or_an_unregistered_type(
    client: TestClient,
    auth: Auth,
    record_line: RecordLine,
    state: State,
    override: dict[str, Any],
    code: str,
) -> None:
    before = state()
    r = client.post("/v1/records", json=record_line(**override), headers=auth("provider"))
    assert r.status_code == 403
    assert r.json()["error"]["code"] == code
    batch = {"records": [record_line(), record_line(**override)], "atomic": False}
    r = client.post("/v1/records:batch", json=batch, headers=auth("provider"))
    assert r.status_code == 403 and r.json()["error"]["code"] == code
    assert "line 2" in r.json()["error"]["message"]
    assert state() == before


def test_a_provider_cannot_retract_another_providers_record(
    client: TestClient, auth: Auth, ingest: Any, record_line: RecordLine, state: State
) -> None:
    other = record_line(provider="court-110108")
    assert ingest(other).count("accepted") == 1
    before = state()
    # Naming the other provider is refused outright ...
    theirs = {"provider": "court-110108", "ref": "x-1", "retracts": other["ref"]}
    r = client.post("/v1/records", json=theirs, headers=auth("provider"))
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden_provider"
    # ... and under its own code the ref is not one of its records.
    mine = {"provider": "court-110105", "ref": "x-1", "retracts": other["ref"]}
    r = client.post("/v1/records", json=mine, headers=auth("provider"))
    assert r.status_code == 422 and r.json()["error"]["code"] == "bad_reference"
    assert state() == before


def test_atomic_batch_with_one_bad_line_stores_nothing_and_lists_the_errors(
    client: TestClient, auth: Auth, record_line: RecordLine, rid: Any, state: State
) -> None:
    before = state()
    lines = [record_line(rid=rid(n)) for n in range(5)]
    lines[3]["occurred_at"] = "2099-01-01"
    r = client.post(
        "/v1/records:batch", json={"records": lines, "atomic": True}, headers=auth("provider")
    )
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["code"] == "batch_rejected"
    assert [(e["line"], e["code"]) for e in err["results"]] == [(4, "future_date")]
    assert state() == before


def test_non_atomic_batch_gives_per_line_results(
    client: TestClient, auth: Auth, record_line: RecordLine, rid: Any, rows: Any
) -> None:
    lines = [record_line(rid=rid(n)) for n in range(4)]
    lines[1]["subject"]["id"] = "110105"  # too short
    lines.append(lines[0])  # a repeat within the batch
    r = client.post(
        "/v1/records:batch", json={"records": lines, "atomic": False}, headers=auth("provider")
    )
    assert r.status_code == 200, r.text
    data = r.json()
    assert (data["accepted"], data["duplicates"], data["rejected"]) == (3, 1, 1)
    statuses = {res["line"]: (res["status"], res["code"]) for res in data["results"]}
    assert statuses[2] == ("rejected", "identifier.wrong_length")
    assert statuses[5][0] == "duplicate"
    assert len(rows(records)) == 3


def test_idempotency_key_returns_the_identical_response_and_refuses_a_different_body(
    client: TestClient, auth: Auth, record_line: RecordLine, rid: Any, rows: Any, state: State
) -> None:
    body = {"records": [record_line(rid=rid(n)) for n in range(3)], "atomic": True}
    headers = {**auth("provider"), "Idempotency-Key": "batch-2026-11-01-a"}
    first = client.post("/v1/records:batch", json=body, headers=headers)
    assert first.status_code == 200, first.text
    after_first = state()
    again = client.post("/v1/records:batch", json=body, headers=headers)
    assert again.status_code == 200
    assert again.content == first.content  # the identical response, not "3 duplicates"
    assert state() == after_first
    other = {"records": [record_line(rid=rid(9))], "atomic": True}
    conflict = client.post("/v1/records:batch", json=other, headers=headers)
    assert conflict.status_code == 409
    assert conflict.json()["error"]["code"] == "idempotency_conflict"
    assert state() == after_first
    assert len(rows(api_requests)) == 1
    # Without the key, (provider, ref) still makes the repeat harmless.
    plain = client.post("/v1/records:batch", json=body, headers=auth("provider"))
    assert plain.json()["duplicates"] == 3
    assert [r["seq"] for r in plain.json()["results"]] == [
        r["seq"] for r in first.json()["results"]
    ]


def test_idempotent_single_record_replays_its_status(
    client: TestClient, auth: Auth, record_line: RecordLine
) -> None:
    headers = {**auth("provider"), "Idempotency-Key": "one"}
    line = record_line()
    assert client.post("/v1/records", json=line, headers=headers).status_code == 201
    again = client.post("/v1/records", json=line, headers=headers)
    assert again.status_code == 201 and again.json()["status"] == "accepted"


# -- bad input: the right 4xx and code, and nothing stored ---------------------


def _raw(client: TestClient, auth: Auth, content: bytes, ctype: str | None) -> Any:
    headers = {**auth("provider")}
    if ctype is not None:
        headers["Content-Type"] = ctype
    return client.post("/v1/records", content=content, headers=headers)


@pytest.mark.parametrize(
    ("content", "ctype", "status", "code"),
    [
        (b'{"provider": ', "application/json", 400, "malformed_json"),
        (b"", "application/json", 400, "malformed_json"),
        (b"provider=court", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
        (b'{"provider": "court-110105"}', "text/plain", 415, "unsupported_media_type"),
        (b'{"provider": "court-110105"}', None, 415, "unsupported_media_type"),
        (b"[1, 2]", "application/json", 422, "invalid_request"),
    ],
)
def test_bad_bodies_get_their_code_and_store_nothing(
    client: TestClient,
    auth: Auth,
    state: State,
    content: bytes,
    ctype: str | None,
    status: int,
    code: str,
) -> None:
    before = state()
    r = _raw(client, auth, content, ctype)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == code and err["message"]
    assert state() == before


def test_unknown_fields_are_422_naming_the_field(
    client: TestClient, auth: Auth, record_line: RecordLine, state: State
) -> None:
    before = state()
    line = record_line()
    line["severity"] = "high"
    r = client.post("/v1/records", json=line, headers=auth("provider"))
    assert r.status_code == 422
    assert "severity" in r.json()["error"]["message"]
    line = record_line()
    line["subject"]["birthday"] = "1949-12-31"
    r = client.post("/v1/records", json=line, headers=auth("provider"))
    assert r.status_code == 422 and "subject.birthday" in r.json()["error"]["message"]
    batch = {"records": [record_line()], "atomic": True, "dry_run": True}
    r = client.post("/v1/records:batch", json=batch, headers=auth("provider"))
    assert r.status_code == 422 and "dry_run" in r.json()["error"]["message"]
    assert state() == before


def test_oversized_bodies_are_413_by_length_and_by_stream(
    app: Any, client: TestClient, auth: Auth, record_line: RecordLine, state: State
) -> None:
    limit = app.state.runtime.settings.max_body_bytes
    before = state()
    big = json.dumps({"records": [record_line()] * (limit // 300 + 1)}).encode()
    assert len(big) > limit
    r = client.post(
        "/v1/records:batch",
        content=big,
        headers={**auth("provider"), "Content-Type": "application/json"},
    )
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"

    def chunks() -> Any:  # no Content-Length: the stream is counted
        for start in range(0, len(big), 65536):
            yield big[start : start + 65536]

    r = client.post(
        "/v1/records:batch",
        content=chunks(),
        headers={**auth("provider"), "Content-Type": "application/json"},
    )
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"
    assert state() == before


def test_batch_size_is_bounded(
    client: TestClient, auth: Auth, record_line: RecordLine, state: State
) -> None:
    before = state()
    line = record_line()
    r = client.post(
        "/v1/records:batch",
        json={"records": [line] * 10_001, "atomic": False},
        headers=auth("provider"),
    )
    assert r.status_code == 422 and "records" in r.json()["error"]["message"]
    assert state() == before


@pytest.mark.slow
def test_a_ten_thousand_line_batch_is_accepted_in_one_request(
    client: TestClient, auth: Auth, record_line: RecordLine, rid: Any, engine: Any
) -> None:
    lines = [record_line(rid=rid(n)) for n in range(10_000)]
    r = client.post(
        "/v1/records:batch", json={"records": lines, "atomic": True}, headers=auth("provider")
    )
    assert r.status_code == 200, r.text[:500]
    assert r.json()["accepted"] == 10_000
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(ledger)).scalar() == 10_001


def test_batch_bodies_read_and_write_as_their_models_do(
    client: TestClient, auth: Auth, record_line: RecordLine, rid: Any
) -> None:
    # The batch route reads its lines in one serialisation and writes its results as
    # plain dicts: both must be what the per-line models give.
    from chengxin.api.routers.records import _result
    from chengxin.api.schemas import RecordBatchCreate, RecordBatchRead, RecordResult
    from chengxin.service.checking import LineResult

    lines = [record_line(rid=rid(n)) for n in range(3)]
    lines[0]["attributes"] = {"a": None, "b": [None, {"c": None}]}
    lines[1]["subject"]["name"] = None
    lines[2] = {"provider": "p", "ref": "r", "retracts": "x", "reason": None}
    batch = RecordBatchCreate.model_validate({"records": lines, "atomic": False})
    assert batch.lines() == [r.line() for r in batch.records]
    for r in (
        LineResult(1, "accepted", "a", 7),
        LineResult(2, "duplicate", "b", 3),
        LineResult(3, "rejected", None, code="bad_json", message="m", field="ref"),
    ):
        fields = {f: getattr(r, f) for f in RecordResult.model_fields}
        assert _result(r) == RecordResult(**fields).model_dump()

    ok = [record_line(rid=rid(n)) for n in range(4)]
    ok[1]["subject"]["id"] = "110105"  # too short
    ok.append(ok[0])  # a duplicate
    r = client.post(
        "/v1/records:batch", json={"records": ok, "atomic": False}, headers=auth("provider")
    )
    assert r.status_code == 200, r.text
    assert RecordBatchRead.model_validate(r.json()).model_dump() == r.json()
    assert list(r.json()) == list(RecordBatchRead.model_fields)


def test_the_collector_is_off_for_a_whole_batch_request_and_back_on_after_it(
    client: TestClient,
    auth: Auth,
    record_line: RecordLine,
    rid: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from chengxin.api.routers import records as route

    seen: list[bool] = []
    check = route._check

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(gc.isenabled())
        return check(*args, **kwargs)

    monkeypatch.setattr(route, "_check", spy)
    assert gc.isenabled()
    good = {"records": [record_line(rid=rid(n)) for n in range(3)], "atomic": True}
    bad = {"records": [{**record_line(rid=rid(5)), "occurred_at": "2099-01-01"}], "atomic": True}
    assert client.post("/v1/records:batch", json=good, headers=auth("provider")).status_code == 200
    assert gc.isenabled()
    assert client.post("/v1/records:batch", json=bad, headers=auth("provider")).status_code == 422
    assert gc.isenabled()  # after a refusal too
    assert client.post("/v1/records", json=good["records"][0], headers=auth("provider")).is_success
    assert seen == [False, False, True]  # a single record is not a bulk request


def test_overlapping_bulk_requests_turn_the_collector_on_when_the_last_ends() -> None:
    first, second = gc_paused(), gc_paused()
    assert gc.isenabled()
    try:
        first.__enter__()
        second.__enter__()
        first.__exit__(None, None, None)  # the first to begin ends first
        assert not gc.isenabled()  # the other request still runs
        second.__exit__(None, None, None)
        assert gc.isenabled()
        gc.disable()  # off before: left off
        with gc_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
