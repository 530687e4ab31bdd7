"""Prometheus metrics of the HTTP service, one registry per app (never the global default).

What is measured, and the labels (bounded sets, never identifiers):

* ``chengxin_http_request_duration_seconds{method, route, status}``: every
  request, labelled by its route *template* (``/v1/subjects/{scheme}/{id}/explain``),
  never the path, which holds identifiers; ``unmatched`` when no route matched;
* ``chengxin_checks_total{measure, decision}``: decisions given to services;
* ``chengxin_records_ingested_total{status}``: lines submitted over the API,
  as ``accepted``, ``duplicate`` or ``rejected``;
* ``chengxin_audit_batch_events``: how many audit events each group commit
  of a worker's audit writer held (:mod:`chengxin.service.audit_writer`):
  batches of one under load mean each check pays a commit of its own;
* ``chengxin_outbox_lag_seconds{stage}``: computed when scraped, the age of
  the oldest outbox event not yet fanned out (``stage="fanout"``) and of the
  oldest event with a webhook delivery still pending (``stage="delivery"``);
  0 when nothing waits.

Routers count with the hooks :func:`observe_check` and :func:`observe_ingest`
(or ``metrics(request).checks.labels(measure=..., decision=...).inc()``).

With several worker processes (``chengxin serve --workers N``), ``serve``
sets ``PROMETHEUS_MULTIPROC_DIR`` and every worker writes its samples there
(prometheus_client's multiprocess mode); a scrape of any worker adds them up.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from fastapi import FastAPI, Request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import SQLAlchemyError

from chengxin.service.clock import Clock
from chengxin.store.schema import deliveries, outbox

log = logging.getLogger("chengxin.metrics")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
"""The environment variable that turns on prometheus_client's multiprocess mode."""

# Seconds. The check target is p99 < 20 ms, so the buckets are fine around it.
LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.03,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
AUDIT_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
"""Events per audit group commit (the writer takes 256 at most by default)."""
INGEST_STATUSES = ("accepted", "duplicate", "rejected")
"""The statuses ``chengxin_records_ingested_total`` counts."""


class OutboxLagCollector(Collector):
    """``chengxin_outbox_lag_seconds``, read from the database at each scrape."""

    NAME = "chengxin_outbox_lag_seconds"
    HELP = (
        "Age of the oldest outbox event not yet fanned out (stage=fanout) or with a webhook "
        "delivery still pending (stage=delivery); 0 when nothing waits."
    )

    def __init__(self, engine: Engine, clock: Clock) -> None:
        self._engine = engine
        self._clock = clock

    def describe(self) -> Iterable[Metric]:
        """The metric's name and help, without touching the database."""
        return [GaugeMetricFamily(self.NAME, self.HELP, labels=["stage"])]

    def collect(self) -> Iterable[Metric]:
        """The lag of each stage now; nothing if the database cannot be read."""
        fanout = select(func.min(outbox.c.created_at)).where(outbox.c.delivered_at.is_(None))
        delivery = (
            select(func.min(outbox.c.created_at))
            .select_from(deliveries.join(outbox, outbox.c.id == deliveries.c.outbox_id))
            .where(deliveries.c.status == "pending")
        )
        try:
            with self._engine.connect() as conn:
                oldest = {
                    "fanout": conn.execute(fanout).scalar(),
                    "delivery": conn.execute(delivery).scalar(),
                }
        except SQLAlchemyError as exc:  # a scrape must not fail because the database does
            log.warning("outbox lag not measured: %s", type(exc).__name__)
            return []
        family = GaugeMetricFamily(self.NAME, self.HELP, labels=["stage"])
        now = self._clock.now()
        for stage, at in oldest.items():
            family.add_metric([stage], _age(now, at))
        return [family]


def _age(now: datetime, at: datetime | None) -> float:
    if at is None:
        return 0.0
    if at.tzinfo is None:  # SQLite hands back naive UTC
        at = at.replace(tzinfo=UTC)
    return max(0.0, (now - at).total_seconds())


@dataclass
class Metrics:
    """The app's metrics and how to expose them."""

    registry: CollectorRegistry
    """The app's own registry (in multiprocess mode, the samples live in files instead)."""
    requests: Histogram
    """``chengxin_http_request_duration_seconds{method, route, status}``."""
    checks: Counter
    """``chengxin_checks_total{measure, decision}``."""
    records: Counter
    """``chengxin_records_ingested_total{status}``."""
    audit_batch: Histogram
    """``chengxin_audit_batch_events``: events per audit group commit."""
    outbox_lag: OutboxLagCollector
    """``chengxin_outbox_lag_seconds{stage}``, computed at scrape time."""
    multiprocess_dir: str | None
    """Where the workers' samples are, in multiprocess mode."""

    def exposition(self) -> bytes:
        """Every metric in the Prometheus text format (summed over workers if several)."""
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
        registry.register(self.outbox_lag)
        return generate_latest(registry)

    content_type = CONTENT_TYPE_LATEST
    """The media type of :meth:`exposition`."""


def build(engine: Engine, clock: Clock, *, multiprocess_dir: str | None = None) -> Metrics:
    """Fresh metrics on a new registry (apps built side by side, as tests do, share nothing)."""
    registry = CollectorRegistry(auto_describe=True)
    if multiprocess_dir is None:
        # Per-process collectors mean nothing summed over workers; only one process here.
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
    lag = OutboxLagCollector(engine, clock)
    registry.register(lag)
    return Metrics(
        registry=registry,
        requests=Histogram(
            "chengxin_http_request_duration_seconds",
            "Time from request to the end of the response, by route template.",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        ),
        checks=Counter(
            "chengxin_checks",
            "Decisions given to services, by measure and decision.",
            ["measure", "decision"],
            registry=registry,
        ),
        records=Counter(
            "chengxin_records_ingested",
            "Record lines submitted over the API, by outcome (accepted, duplicate, rejected).",
            ["status"],
            registry=registry,
        ),
        audit_batch=Histogram(
            "chengxin_audit_batch_events",
            "Audit events committed together by a worker's audit writer, per transaction.",
            buckets=AUDIT_BATCH_BUCKETS,
            registry=registry,
        ),
        outbox_lag=lag,
        multiprocess_dir=multiprocess_dir,
    )


def install(app: FastAPI) -> Metrics:
    """Build the app's metrics (``app.state.metrics``) and mount ``GET /metrics``."""
    from chengxin.api.routers import metrics as metrics_router

    runtime = app.state.runtime
    directory = os.environ.get(MULTIPROC_ENV) or None
    built = build(runtime.engine, runtime.clock, multiprocess_dir=directory)
    app.state.metrics = built
    app.include_router(metrics_router.router)
    return built


def metrics(request: Request) -> Metrics:
    """The metrics of the app serving ``request``."""
    found: Metrics = request.app.state.metrics
    return found


def observe_check(request: Request, *, measure: str, decision: str) -> None:
    """Count one decision given to a service (call once the decision is made)."""
    metrics(request).checks.labels(measure=measure, decision=decision).inc()


def observe_ingest(request: Request, counts: Mapping[str, int]) -> None:
    """Count submitted lines by status (``accepted``, ``duplicate``, ``rejected``)."""
    counter = metrics(request).records
    for status, n in counts.items():
        if n:
            counter.labels(status=status).inc(n)


def sample_sum(text: str, name: str, **labels: str) -> float:
    """The sum of the samples called ``name`` with these labels in exposition ``text``."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += float(s.value)
    return total
