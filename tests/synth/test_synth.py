"""The synthetic city: valid subjects, records the national policy accepts, plausible rates,
reproducible files in three formats that read back to the same rows."""

from __future__ import annotations

import datetime
import json
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

import chengxin
from chengxin.domain.identifiers import expected_kind, parse_identifier, rid_birth_date
from chengxin.domain.policy import Policy
from chengxin.domain.policy_load import load_policy_text
from chengxin.synth import (
    FEED_SCHEMA,
    RECORD_KINDS,
    RECORDS_SCHEMA,
    SUBJECTS_SCHEMA,
    CityConfig,
    city_arrays,
    expected_records,
    generate_feed,
    generate_population,
    people_for_records,
    write_feed,
)

CFG = CityConfig(people=4_000, seed=11)
FORMATS = ("jsonl", "csv", "parquet")


@pytest.fixture(scope="module")
def policy() -> Policy:
    path = Path(chengxin.__file__).parent / "policies" / "national.yaml"
    return load_policy_text(path.read_text(), source="national.yaml")


@pytest.fixture(scope="module")
def population() -> pa.Table:
    return generate_population(CFG)


@pytest.fixture(scope="module")
def feed(population: pa.Table) -> pa.Table:
    return generate_feed(CFG, population)


@pytest.fixture(scope="module")
def rows(feed: pa.Table) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = feed.to_pylist()
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("feeds")
    paths = {fmt: out / f"feed.{fmt}" for fmt in FORMATS}
    for fmt, path in paths.items():
        write_feed(CFG, path, fmt)  # type: ignore[arg-type]
    return paths


# --- population --------------------------------------------------------------


def test_population_has_valid_unique_identifiers(population: pa.Table) -> None:
    assert population.schema == SUBJECTS_SCHEMA
    ids = population.column("id").to_pylist()
    assert len(set(ids)) == len(ids)
    assert population.column("subject_id").to_pylist() == list(range(1, len(ids) + 1))
    for row in population.to_pylist():
        assert parse_identifier(row["scheme"], row["id"]).value == row["id"]
        assert row["kind"] in expected_kind(row["scheme"])
        assert row["name"] and row["name"].isascii()
        if row["scheme"] == "cn-rid":
            assert 1940 <= rid_birth_date(row["id"]).year <= 2008
    kinds = Counter(population.column("kind").to_pylist())
    assert kinds == {"person": 4_000, "organisation": 500, "public_body": 8}


def test_public_bodies_are_government_organs(population: pa.Table) -> None:
    bodies = population.filter(pc.equal(population.column("kind"), "public_body"))
    assert all(i.startswith("11") for i in bodies.column("id").to_pylist())
    orgs = population.filter(pc.equal(population.column("kind"), "organisation"))
    assert all(i.startswith("9") for i in orgs.column("id").to_pylist())


def test_large_population_identifiers_pass_on_a_sample() -> None:
    big = generate_population(CityConfig(people=300_000, seed=3))
    ids = big.column("id")
    assert pc.count_distinct(ids).as_py() == big.num_rows
    sample = random.Random(0).sample(range(big.num_rows), 3_000)
    for row in big.take(sample).to_pylist():
        parse_identifier(row["scheme"], row["id"])


def test_config_refuses_a_window_before_the_last_birth_year() -> None:
    with pytest.raises(ValueError, match="after 2008"):
        CityConfig(end=datetime.date(2010, 1, 1))
    with pytest.raises(ValueError, match=">= 0"):
        CityConfig(people=-1)


def test_population_sizes_follow_the_config() -> None:
    cfg = CityConfig(people=100, organisations=7, public_bodies=2)
    kinds = Counter(generate_population(cfg).column("kind").to_pylist())
    assert kinds == {"person": 100, "organisation": 7, "public_body": 2}


# --- records obey the national policy ------------------------------------------


def test_record_kinds_are_the_policys(policy: Policy) -> None:
    for kind in RECORD_KINDS:
        declared = policy.types[kind.code].attributes
        assert set(kind.attributes) <= set(declared)
        assert {n for n, a in declared.items() if a.required} <= set(kind.attributes)


def test_records_respect_applies_to_and_attribute_schema(
    rows: list[dict[str, Any]], policy: Policy
) -> None:
    seen = set()
    for row in rows:
        spec = policy.types[row["type"]]
        assert row["subject.kind"] in spec.applies_to, row
        attrs = json.loads(row["attributes"])
        assert set(attrs) <= set(spec.attributes), row
        for name, attr in spec.attributes.items():
            if attr.required:
                assert name in attrs, row
            if name not in attrs:
                continue
            value = attrs[name]
            if attr.type == "int":
                assert type(value) is int and value > 0, row
            elif attr.type == "bool":
                assert type(value) is bool, row
            elif attr.type == "str":
                assert isinstance(value, str)
                assert attr.values is None or value in attr.values, row
        seen.add(row["type"])
    assert len(seen) >= 15  # nearly every type turns up in a city of 4,000


def test_dates_are_in_the_window_and_after_birth(rows: list[dict[str, Any]]) -> None:
    for row in rows:
        assert CFG.start < row["occurred_at"] <= CFG.end, row
        if row["subject.scheme"] == "cn-rid":
            assert row["occurred_at"] > rid_birth_date(row["subject.id"])
        assert row["evidence"].startswith("sha256:") and len(row["evidence"]) == 71


def test_adult_only_records_come_after_the_18th_birthday(rows: list[dict[str, Any]]) -> None:
    adult_types = {"societal.fail_to_yield_pedestrian", "judicial.judgment_unperformed"}
    for row in rows:
        if row["type"] in adult_types and row["subject.kind"] == "person":
            birth = rid_birth_date(row["subject.id"])
            assert (row["occurred_at"] - birth).days >= 18 * 365


# --- references, retractions, amendments -------------------------------------------


def test_refs_are_unique_per_provider(rows: list[dict[str, Any]]) -> None:
    keys = [(r["provider"], r["ref"]) for r in rows]
    assert len(set(keys)) == len(keys)
    court = next(r["ref"] for r in rows if r["provider"].startswith("court-"))
    assert court.startswith("(20") and "-" in court
    traffic = next(r["ref"] for r in rows if r["provider"] == "traffic-police-110000")
    assert traffic.startswith("TP-20")


def test_corrections_refer_to_earlier_lines_of_the_same_provider(
    rows: list[dict[str, Any]],
) -> None:
    line_of = {(r["provider"], r["ref"]): i for i, r in enumerate(rows)}
    corrected = set()
    counts: Counter[str] = Counter()
    for i, row in enumerate(rows):
        for field in ("retracts", "amends"):
            if row[field] is None:
                continue
            counts[field] += 1
            target = line_of[(row["provider"], row[field])]
            assert target < i
            original = rows[target]
            assert original["retracts"] is None and original["amends"] is None
            assert original["subject.id"] == row["subject.id"]
            assert original["type"] == row["type"]
            assert target not in corrected  # each record is corrected at most once
            corrected.add(target)
        assert row["retracts"] is None or row["amends"] is None
    assert 0.002 < counts["retracts"] / len(rows) < 0.01
    assert 0.001 < counts["amends"] / len(rows) < 0.006


def test_lines_are_ordered_by_recording_day(rows: list[dict[str, Any]]) -> None:
    # A line is recorded on or after its occurrence and within the capped delay,
    # so occurrence dates can run backwards in the file only by that delay.
    latest = datetime.date.min
    for row in rows:
        if row["retracts"] or row["amends"]:
            continue
        latest = max(latest, row["occurred_at"])
        assert (latest - row["occurred_at"]).days <= 91


def test_performance_follows_its_default(rows: list[dict[str, Any]]) -> None:
    defaulted: dict[str, int] = {}
    for i, row in enumerate(rows):
        if row["type"] == "judicial.judgment_unperformed":
            defaulted.setdefault(row["subject.id"], i)
        if row["type"] == "judicial.judgment_performed":
            assert defaulted[row["subject.id"]] < i


def test_only_a_first_fare_evasion_is_not_a_repeat(rows: list[dict[str, Any]]) -> None:
    firsts: Counter[str] = Counter()
    for row in rows:
        if row["type"] == "societal.fare_evasion" and not (row["retracts"] or row["amends"]):
            firsts[row["subject.id"]] += not json.loads(row["attributes"])["repeat"]
    assert firsts and set(firsts.values()) == {1}


def test_an_empty_city_has_an_empty_feed(tmp_path: Path) -> None:
    cfg = CityConfig(people=0)
    assert generate_feed(cfg).num_rows == 0
    assert city_arrays(cfg)[1].num_rows == 0
    assert write_feed(cfg, tmp_path / "empty.jsonl", "jsonl").lines == 0
    assert (tmp_path / "empty.jsonl").read_bytes() == b""


# --- rates ------------------------------------------------------------------------------


def test_rates_are_plausible(rows: list[dict[str, Any]]) -> None:
    people = CFG.people
    records = [r for r in rows if r["retracts"] is None]
    on_people = [r for r in records if r["subject.kind"] == "person"]
    assert 0.5 < len(on_people) / people < 5
    by_type = Counter(r["type"] for r in records)
    assert by_type.most_common(1)[0][0] == "societal.fail_to_yield_pedestrian"

    def defaulters(kind: str) -> set[str]:
        return {
            r["subject.id"]
            for r in records
            if r["type"] == "judicial.judgment_unperformed" and r["subject.kind"] == kind
        }

    assert 0.005 < len(defaulters("person")) / people < 0.02
    assert 0.015 < len(defaulters("organisation")) / CFG.n_organisations < 0.05
    performed = by_type["judicial.judgment_performed"] / by_type["judicial.judgment_unperformed"]
    assert 0.25 < performed < 0.55
    public = sum(r["subject.kind"] == "public_body" for r in records)
    assert public / len(records) < 0.005

    amounts = sorted(
        json.loads(r["attributes"])["amount_cny"]
        for r in records
        if r["type"] == "judicial.judgment_unperformed"
    )
    assert amounts[-1] > 10 * amounts[len(amounts) // 2]  # heavy-tailed
    hours = [json.loads(r["attributes"])["hours"] for r in records if "hours" in r["attributes"]]
    assert min(hours) >= 1 and any(h >= 50 for h in hours)


def test_expected_records_sizes_a_run() -> None:
    cfg = CityConfig(people=30_000, seed=5)
    actual = len(generate_feed(cfg))
    assert abs(expected_records(30_000) - actual) / actual < 0.05
    assert abs(people_for_records(actual) - 30_000) / 30_000 < 0.05


# --- reproducibility and formats ---------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_same_config_same_bytes(fmt: str, files: dict[str, Path], tmp_path: Path) -> None:
    again = tmp_path / f"again.{fmt}"
    write_feed(CFG, again, fmt)  # type: ignore[arg-type]
    assert again.read_bytes() == files[fmt].read_bytes()


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_text_files_do_not_depend_on_chunking(
    fmt: str, files: dict[str, Path], tmp_path: Path
) -> None:
    again = tmp_path / f"chunked.{fmt}"
    write_feed(CFG, again, fmt, chunk_lines=999)  # type: ignore[arg-type]
    assert again.read_bytes() == files[fmt].read_bytes()


def test_another_seed_another_city() -> None:
    a = generate_population(CityConfig(people=500, seed=1))
    b = generate_population(CityConfig(people=500, seed=2))
    assert a.column("id") != b.column("id")


def _jsonl_rows(path: Path) -> list[dict[str, Any]]:
    out = []
    for line in path.read_text().splitlines():
        obj = json.loads(line)
        assert list(obj)[:7] == [
            "provider",
            "ref",
            "subject",
            "type",
            "occurred_at",
            "attributes",
            "evidence",
        ]
        assert set(obj) - set(list(obj)[:7]) <= {"retracts", "amends"}
        assert None not in obj.values() and None not in obj["attributes"].values()
        subject = obj.pop("subject")
        assert list(subject) == ["scheme", "id", "kind", "name"]
        obj.update({f"subject.{k}": v for k, v in subject.items()})
        obj["occurred_at"] = datetime.date.fromisoformat(obj["occurred_at"])
        obj["attributes"] = json.dumps(obj["attributes"], separators=(",", ":"))
        obj.setdefault("retracts", None)
        obj.setdefault("amends", None)
        out.append({name: obj[name] for name in FEED_SCHEMA.names})
    return out


def test_jsonl_reads_back_to_the_feed(files: dict[str, Path], rows: list[dict[str, Any]]) -> None:
    assert _jsonl_rows(files["jsonl"]) == rows


def test_csv_reads_back_to_the_feed(files: dict[str, Path], feed: pa.Table) -> None:
    options = pacsv.ConvertOptions(
        column_types=FEED_SCHEMA, strings_can_be_null=True, quoted_strings_can_be_null=False
    )
    table = pacsv.read_csv(files["csv"], convert_options=options)
    assert table.equals(feed)
    header = files["csv"].read_text().splitlines()[0]
    assert header.replace('"', "").split(",") == FEED_SCHEMA.names


def test_parquet_reads_back_to_the_feed(files: dict[str, Path], feed: pa.Table) -> None:
    assert pq.read_table(files["parquet"]).equals(feed)


def test_write_feed_reports_what_it_wrote(tmp_path: Path, feed: pa.Table) -> None:
    calls: list[tuple[int, int]] = []
    path = tmp_path / "feed.jsonl"
    summary = write_feed(
        CFG, path, "jsonl", lambda done, total: calls.append((done, total)), chunk_lines=2_000
    )
    assert summary.lines == len(feed) == calls[-1][0] == calls[-1][1]
    assert [d for d, _ in calls] == sorted(d for d, _ in calls) and len(calls) > 1
    assert summary.retractions == pc.sum(pc.is_valid(feed.column("retracts"))).as_py()
    assert summary.amendments == pc.sum(pc.is_valid(feed.column("amends"))).as_py()
    assert sum(summary.by_type.values()) == sum(summary.by_provider.values()) == summary.lines
    assert summary.bytes == path.stat().st_size
    with pytest.raises(ValueError, match="format"):
        write_feed(CFG, tmp_path / "x", "xml")  # type: ignore[arg-type]


# --- the columnar form ----------------------------------------------------------------------


def test_city_arrays_match_the_feed(rows: list[dict[str, Any]], population: pa.Table) -> None:
    subjects, records = city_arrays(CFG)
    assert subjects.equals(population)
    assert records.schema == RECORDS_SCHEMA
    lines = [r for r in rows if r["retracts"] is None]
    assert records.num_rows == len(lines)
    retracted = {(r["provider"], r["retracts"]) for r in rows if r["retracts"]}
    amended = {(r["provider"], r["amends"]) for r in rows if r["amends"]}
    subject_of = dict(
        zip(population["id"].to_pylist(), population["subject_id"].to_pylist(), strict=True)
    )
    for line, rec in zip(lines, records.to_pylist(), strict=True):
        key = (line["provider"], line["ref"])
        status = "retracted" if key in retracted else "superseded" if key in amended else "active"
        assert rec["status"] == status
        assert rec["subject_id"] == subject_of[line["subject.id"]]
        assert (rec["type"], rec["occurred_at"]) == (line["type"], line["occurred_at"])
        columns = {k[2:]: v for k, v in rec.items() if k.startswith("a_") and v is not None}
        assert columns == json.loads(line["attributes"])
