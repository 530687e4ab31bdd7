"""The wire between chengxin and a webhook receiver: the transport port, signing, checking.

Delivery (:mod:`chengxin.service.webhooks`) sees only :class:`Transport`.
:class:`HttpxTransport` posts with a real HTTP client; :class:`FakeTransport`
ships in the package so tests script answers and read what was sent without
monkeypatching (as httpx's own ``MockTransport`` does).

Messages are signed as the Standard Webhooks specification says
(``webhook-id``, ``webhook-timestamp``, ``webhook-signature``: HMAC-SHA256 of
``id.timestamp.body``), by the ``standardwebhooks`` package; :func:`verify_webhook`
is the receiver's side, for services and tests.
"""

from __future__ import annotations

import base64
import binascii
import heapq
import hmac
import json
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, ClassVar, Protocol

import httpx
from standardwebhooks import Webhook

from chengxin.service.errors import ServiceError

DEFAULT_TIMEOUT = 5.0  # seconds, for connect, write and read alike
USER_AGENT = "chengxin-webhooks/0.1"


@dataclass(frozen=True, slots=True)
class WebhookRequest:
    """One signed POST: the URL, the headers (Standard Webhooks' three among them), the body."""

    url: str
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class WebhookResponse:
    """What the receiver answered: the status and the start of the body (for the error log)."""

    status: int
    body: str = ""

    @property
    def ok(self) -> bool:
        """Whether the receiver accepted the message (any 2xx, as Standard Webhooks says)."""
        return 200 <= self.status < 300


class TransportError(Exception):
    """The request got no HTTP answer: refused, timed out, name not resolved, TLS failed."""


class Transport(Protocol):
    """Sends one webhook request and returns the answer, or raises :class:`TransportError`."""

    def send(self, request: WebhookRequest) -> WebhookResponse:
        """POST ``request`` and return the receiver's answer."""
        ...


class HttpxTransport:
    """A real HTTP client: 5 s timeouts, no redirects, no proxy taken from the environment.

    A redirect is an answer that is not 2xx, so it counts as a failed attempt:
    a subscription names the URL that receives, and following a redirect would
    send signed personal data somewhere nobody registered.
    """

    def __init__(self, *, timeout: float = DEFAULT_TIMEOUT, proxy: str | None = None) -> None:
        self._client = httpx.Client(
            timeout=timeout,
            follow_redirects=False,
            trust_env=False,
            proxy=proxy,
            headers={"user-agent": USER_AGENT},
        )

    def send(self, request: WebhookRequest) -> WebhookResponse:
        """POST the request; any transport failure becomes :class:`TransportError`."""
        try:
            resp = self._client.post(
                request.url, content=request.body, headers=dict(request.headers)
            )
        except httpx.HTTPError as exc:
            raise TransportError(f"{type(exc).__name__}: {exc}") from exc
        return WebhookResponse(resp.status_code, resp.text[:500])

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()

    def __enter__(self) -> HttpxTransport:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


Answer = int | TransportError
"""A scripted answer: an HTTP status, or a transport failure to raise."""


@dataclass
class FakeTransport:
    """Records every request and answers from a script, then with ``default`` (for tests).

    ``script`` answers requests in order; ``responder``, when given, answers
    instead (it sees the request, so it can answer per URL or per message).
    Thread-safe, so a delivery loop in another thread can use it.
    """

    script: Iterable[Answer] = ()
    default: int = 204
    responder: Callable[[WebhookRequest], Answer] | None = None
    requests: list[WebhookRequest] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._queue: deque[Answer] = deque(self.script)
        self._lock = threading.Lock()

    def send(self, request: WebhookRequest) -> WebhookResponse:
        """Record the request and give the next scripted answer."""
        with self._lock:
            self.requests.append(request)
            if self.responder is not None:
                answer = self.responder(request)
            else:
                answer = self._queue.popleft() if self._queue else self.default
        if isinstance(answer, TransportError):
            raise answer
        return WebhookResponse(answer, "")

    def then(self, *answers: Answer) -> FakeTransport:
        """Queue more answers; returns the transport for chaining."""
        with self._lock:
            self._queue.extend(answers)
        return self


# ---------------------------------------------------- Standard Webhooks


def sign(secret: str, *, message_id: str, at: datetime, body: str) -> dict[str, str]:
    """The Standard Webhooks headers for one attempt (signed by ``standardwebhooks``)."""
    signature = Webhook(secret).sign(message_id, at, body)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signature,
        "content-type": "application/json",
    }


class WebhookRejected(ServiceError):
    """A received webhook that must not be acted on; ``code`` says why, ``status`` what to answer.

    Codes: ``signature_invalid`` (401: missing or malformed headers, or no
    signature matches), ``timestamp_out_of_range`` (400: outside the tolerance),
    ``replayed`` (409: this very signed message was accepted before),
    ``payload_invalid`` (400: signed, but not JSON).
    """

    _STATUS: ClassVar[dict[str, int]] = {
        "signature_invalid": 401,
        "timestamp_out_of_range": 400,
        "payload_invalid": 400,
        "replayed": 409,
    }

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.status = self._STATUS.get(code, 400)


class ReplayGuard(Protocol):
    """Remembers accepted messages for as long as their timestamp is within tolerance."""

    def first_sighting(self, key: str, *, expires: datetime, now: datetime) -> bool:
        """Remember ``key`` until ``expires``; False if it was already remembered."""
        ...


class SeenMessages:
    """An in-memory :class:`ReplayGuard` for one receiver process (thread-safe)."""

    def __init__(self) -> None:
        self._keys: dict[str, datetime] = {}
        self._expiry: list[tuple[datetime, str]] = []
        self._lock = threading.Lock()

    def first_sighting(self, key: str, *, expires: datetime, now: datetime) -> bool:
        """Remember ``key`` until ``expires``; False if it was already remembered."""
        with self._lock:
            while self._expiry and self._expiry[0][0] < now:
                _, old = heapq.heappop(self._expiry)
                self._keys.pop(old, None)
            if key in self._keys:
                return False
            self._keys[key] = expires
            heapq.heappush(self._expiry, (expires, key))
            return True

    def __len__(self) -> int:
        return len(self._keys)


@dataclass(frozen=True, slots=True)
class VerifiedWebhook:
    """A webhook whose signature, timestamp and freshness were checked."""

    message_id: str
    timestamp: datetime
    payload: Any


def verify_webhook(
    secret: str,
    headers: Mapping[str, str],
    body: bytes | str,
    *,
    now: datetime,
    tolerance: timedelta = timedelta(seconds=300),
    seen_ids: ReplayGuard,
) -> VerifiedWebhook:
    """Check a received webhook as Standard Webhooks says, or raise :class:`WebhookRejected`.

    Order: headers, timestamp within ``tolerance`` of ``now``, signature, then
    replay (a message is remembered only once its signature holds, so forged
    traffic cannot fill the guard). ``standardwebhooks`` 1.0's ``Webhook.verify``
    reads the system clock with a fixed five-minute window; to honour ``now``
    and ``tolerance`` the timestamp is checked here and each ``v1`` signature is
    compared in constant time with the package's own ``Webhook.sign`` -- which
    is what ``verify`` does after its clock check.

    A replay is the same signed message again: same id and same timestamp. A
    sender's retry keeps the id but is signed afresh with a new timestamp, so it
    passes; receivers deduplicate retries on :attr:`VerifiedWebhook.message_id`.
    (Keying the guard on the id alone would turn every retry after a lost 2xx
    into a refusal, and an at-least-once sender into one that gives up.)
    """
    low = {k.lower(): v for k, v in headers.items()}
    msg_id = low.get("webhook-id", "")
    stamp = low.get("webhook-timestamp", "")
    signatures = low.get("webhook-signature", "")
    if not (msg_id and stamp and signatures):
        raise WebhookRejected(
            "signature_invalid", "webhook-id, webhook-timestamp and webhook-signature are required"
        )
    try:
        if not (stamp.isascii() and stamp.isdigit()):
            raise ValueError(stamp)
        at = datetime.fromtimestamp(int(stamp), UTC)
    except (ValueError, OverflowError, OSError):
        raise WebhookRejected("signature_invalid", "webhook-timestamp is not a Unix time") from None
    if abs(at - now) > tolerance:
        raise WebhookRejected(
            "timestamp_out_of_range",
            f"webhook-timestamp {stamp} is more than {int(tolerance.total_seconds())} s from now",
        )
    try:
        text = body.decode() if isinstance(body, bytes) else body
    except UnicodeDecodeError:
        raise WebhookRejected("signature_invalid", "the body is not UTF-8") from None
    expected = base64.b64decode(Webhook(secret).sign(msg_id, at, text).split(",", 1)[1])
    matched = False
    for candidate in signatures.split(" "):
        version, _, value = candidate.partition(",")
        if version != "v1":
            continue
        try:
            given = base64.b64decode(value, validate=True)
        except binascii.Error:
            continue
        matched = hmac.compare_digest(expected, given) or matched
    if not matched:
        raise WebhookRejected("signature_invalid", "no webhook-signature matches")
    try:
        payload = json.loads(text)
    except ValueError:
        raise WebhookRejected("payload_invalid", "the signed body is not JSON") from None
    if not seen_ids.first_sighting(f"{msg_id}.{stamp}", expires=at + tolerance, now=now):
        raise WebhookRejected("replayed", f"message {msg_id} at {stamp} was already received")
    return VerifiedWebhook(msg_id, at, payload)
