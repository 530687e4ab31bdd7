"""Engine fixtures: one local Spark session for the whole test session.

Spark takes 10–30 s to start, so every Spark test shares this one
(``local[2]``: CI has two cores; two shuffle partitions, since the test data
is tiny). Spark keeps one session per process, so the fixture of the same
name in ``tests/batch`` gets this very session.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from chengxin.engine.spark_backend import local_session


@pytest.fixture(scope="session")
def spark() -> Iterator[Any]:
    """The test session's Spark session (local[2], UTC, ANSI mode as in production)."""
    session = local_session("local[2]", shuffle_partitions=2, driver_memory="1g")
    yield session
    session.stop()
