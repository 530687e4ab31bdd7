"""Batch fixtures: a small synthetic city in the store, and the test session's Spark.

``city`` ingests a seeded synthetic feed (people in many regions,
organisations, public bodies; retractions and amendments) into the test's
database, SQLite or PostgreSQL, under the national pack. ``spark`` is the
test session's one local Spark session: Spark keeps one per process, so it
is the very session ``tests/engine`` uses.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

sys.path.insert(0, str(Path(__file__).resolve().parent))

from batch_world import City

from chengxin.domain.policy import Policy
from chengxin.service.clock import FixedClock
from chengxin.service.ingest import ingest_batch
from chengxin.store.db import transaction
from chengxin.synth import CityConfig, write_feed

PEOPLE = 400
"""People in the test city (with its bodies, some 200 subjects and 800 records)."""


@pytest.fixture(scope="session")
def city_feed(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """The seeded city's feed lines, as a provider sends them."""
    path = tmp_path_factory.mktemp("city") / "feed.jsonl"
    write_feed(CityConfig(people=PEOPLE, seed=11, end=date(2026, 11, 1), years=3), path, "jsonl")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def city(
    engine: Engine, policy: Policy, clock: FixedClock, city_feed: list[dict[str, Any]]
) -> City:
    """The city ingested into the test's database, snapshots scored as of the clock's day."""
    with transaction(engine) as session:
        report = ingest_batch(
            session,
            policy=policy,
            lines=list(enumerate(city_feed, start=1)),
            now=clock.now(),
            today=clock.today(),
        )
    assert not report.rejected, report.rejected[:3]
    return City(engine, clock, policy)


@pytest.fixture(scope="session")
def spark() -> Iterator[Any]:
    """The test session's Spark session (local[2]; the one ``tests/engine`` uses)."""
    from chengxin.engine.spark_backend import local_session

    session = local_session("local[2]", shuffle_partitions=2, driver_memory="1g")
    yield session
    session.stop()
