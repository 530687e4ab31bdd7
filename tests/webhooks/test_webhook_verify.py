"""The receiver's check: Standard Webhooks signatures, the timestamp window, replays."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks import Webhook

from chengxin.service.transport import (
    SeenMessages,
    WebhookRejected,
    sign,
    verify_webhook,
)

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()
NOW = datetime(2026, 11, 1, 12, tzinfo=UTC)
BODY = '{"type":"list.left","data":{}}'


def signed(msg_id: str = "msg_1", at: datetime = NOW, body: str = BODY) -> dict[str, str]:
    return sign(SECRET, message_id=msg_id, at=at, body=body)


def rejected(code: str, headers: dict[str, str], body: str | bytes = BODY, **kw: object) -> None:
    kw.setdefault("now", NOW)
    kw.setdefault("seen_ids", SeenMessages())
    with pytest.raises(WebhookRejected) as info:
        verify_webhook(SECRET, headers, body, **kw)  # type: ignore[arg-type]
    assert info.value.code == code


def test_a_good_message_verifies() -> None:
    got = verify_webhook(SECRET, signed(), BODY.encode(), now=NOW, seen_ids=SeenMessages())
    assert (got.message_id, got.timestamp, got.payload) == (
        "msg_1",
        NOW,
        {"type": "list.left", "data": {}},
    )


def test_it_agrees_with_the_reference_implementation() -> None:
    # Signed by standardwebhooks at the real time, checked by both.
    now = datetime.now(UTC).replace(microsecond=0)
    headers = {
        "webhook-id": "msg_ref",
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(SECRET).sign("msg_ref", now, BODY),
    }
    assert (
        Webhook(SECRET).verify(BODY, headers)
        == verify_webhook(SECRET, headers, BODY, now=now, seen_ids=SeenMessages()).payload
    )
    assert signed("msg_ref", now)["webhook-signature"] == headers["webhook-signature"]


def test_header_names_are_case_insensitive() -> None:
    headers = {k.title(): v for k, v in signed().items()}
    verify_webhook(SECRET, headers, BODY, now=NOW, seen_ids=SeenMessages())


def test_a_replayed_message_is_refused_but_a_fresh_retry_passes() -> None:
    seen = SeenMessages()
    verify_webhook(SECRET, signed(), BODY, now=NOW, seen_ids=seen)
    rejected("replayed", signed(), now=NOW + timedelta(seconds=10), seen_ids=seen)
    # The sender's retry: same id, signed afresh at a later time.
    later = NOW + timedelta(seconds=40)
    again = verify_webhook(SECRET, signed(at=later), BODY, now=later, seen_ids=seen)
    assert again.message_id == "msg_1"
    assert WebhookRejected("replayed", "x").status == 409


def test_the_replay_memory_forgets_what_the_window_would_refuse_anyway() -> None:
    seen = SeenMessages()
    for n in range(50):
        verify_webhook(SECRET, signed(f"msg_{n}"), BODY, now=NOW, seen_ids=seen)
    assert len(seen) == 50
    later = NOW + timedelta(minutes=11)
    verify_webhook(SECRET, signed("msg_x", later), BODY, now=later, seen_ids=seen)
    assert len(seen) == 1


@pytest.mark.parametrize("offset", [timedelta(seconds=-301), timedelta(seconds=301)])
def test_a_timestamp_outside_the_window_is_refused(offset: timedelta) -> None:
    rejected("timestamp_out_of_range", signed(at=NOW + offset))
    assert WebhookRejected("timestamp_out_of_range", "x").status == 400


def test_the_tolerance_can_be_narrowed() -> None:
    rejected(
        "timestamp_out_of_range",
        signed(at=NOW - timedelta(seconds=31)),
        tolerance=timedelta(seconds=30),
    )


def test_a_tampered_body_or_wrong_secret_is_refused() -> None:
    rejected("signature_invalid", signed(), BODY.replace("left", "entered"))
    other = sign(
        "whsec_" + base64.b64encode(b"x" * 32).decode(), message_id="msg_1", at=NOW, body=BODY
    )
    rejected("signature_invalid", other)
    assert WebhookRejected("signature_invalid", "x").status == 401


def test_a_changed_id_or_timestamp_breaks_the_signature() -> None:
    rejected("signature_invalid", signed() | {"webhook-id": "msg_2"})
    ts = str(int(NOW.timestamp()) + 1)
    rejected("signature_invalid", signed() | {"webhook-timestamp": ts})


@pytest.mark.parametrize(
    "change",
    [
        {"webhook-signature": ""},
        {"webhook-signature": "v1"},
        {"webhook-signature": "v1,not base64!"},
        {"webhook-signature": "v2," + base64.b64encode(b"z" * 32).decode()},
        {"webhook-timestamp": "soon"},
        {"webhook-timestamp": "١٧٠٠٠٠٠٠٠٠"},
        {"webhook-timestamp": "99999999999999999999"},
        {"webhook-id": ""},
    ],
)
def test_malformed_headers_are_refused_as_invalid_signatures(change: dict[str, str]) -> None:
    rejected("signature_invalid", signed() | change)


def test_one_of_several_signatures_may_match() -> None:
    headers = signed()
    fake = "v1," + base64.b64encode(b"z" * 32).decode()
    headers["webhook-signature"] = f"{fake} {headers['webhook-signature']}"
    verify_webhook(SECRET, headers, BODY, now=NOW, seen_ids=SeenMessages())


def test_a_signed_body_that_is_not_json_is_refused() -> None:
    rejected("payload_invalid", signed(body="not json"), "not json")
    rejected("signature_invalid", signed(), b"\xff\xfe")


def test_forged_messages_do_not_fill_the_replay_memory() -> None:
    seen = SeenMessages()
    for n in range(10):
        rejected("signature_invalid", signed(f"msg_{n}"), "tampered", seen_ids=seen)
    assert len(seen) == 0
