"""Synthetic cities: a seeded population and three years of provider feeds.

``generate_population`` draws the subjects, ``generate_feed`` and
``write_feed`` the interchange lines (JSON Lines, CSV, Parquet), and
``city_arrays`` the same records as columns for the batch engine and the
benchmarks. One :class:`CityConfig` always gives the same city, byte for byte.
"""

from chengxin.synth.feeds import (
    FEED_SCHEMA,
    PROVIDERS,
    RECORD_KINDS,
    RECORDS_SCHEMA,
    FeedSummary,
    RecordKind,
    city_arrays,
    expected_records,
    generate_feed,
    people_for_records,
    write_feed,
)
from chengxin.synth.population import SUBJECTS_SCHEMA, CityConfig, generate_population

__all__ = [
    "FEED_SCHEMA",
    "PROVIDERS",
    "RECORDS_SCHEMA",
    "RECORD_KINDS",
    "SUBJECTS_SCHEMA",
    "CityConfig",
    "FeedSummary",
    "RecordKind",
    "city_arrays",
    "expected_records",
    "generate_feed",
    "generate_population",
    "people_for_records",
    "write_feed",
]
