"""``export --format parquet``: the ledger's records, partitioned, with a manifest that binds them.

The export must hold exactly the store's records in the plan's input
contract (the DuckDB plan on it gives the pure scorer's answer), name the
ledger head it was read under, and be refused by :func:`verify_export` when
any file differs from the manifest. A failed export leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from collections import Counter
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import ibis
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import Engine, func, select

sys.path.insert(0, str(Path(__file__).resolve().parent))

from batch_world import City, pure_answer, table_answer

from chengxin.domain.policy import Policy
from chengxin.engine.duckdb_backend import rescore_duckdb
from chengxin.engine.export import ExportError, export_parquet, verify_export
from chengxin.engine.plan import attribute_columns
from chengxin.service.clock import FixedClock
from chengxin.service.ingest import ingest_batch
from chengxin.service.policies import activate, add_policy, read_policy_source
from chengxin.store import ledger
from chengxin.store.db import transaction
from chengxin.store.schema import records

AS_OF = date(2026, 11, 1)


def export(city: City, out: Path, policy: Policy | None = None, *, force: bool = False) -> None:
    export_parquet(
        city.engine,
        out,
        policy=policy or city.policy,
        as_of=AS_OF,
        now=city.clock.now(),
        force=force,
    )


def test_the_manifest_names_the_ledger_head_and_every_file(city: City, tmp_path: Path) -> None:
    out = tmp_path / "export"
    export(city, out)
    manifest = json.loads((out / "manifest.json").read_text())
    with transaction(city.engine) as session:
        head = ledger.head(session)
        stored = session.execute(select(func.count()).select_from(records)).scalar_one()
        by_partition = Counter(
            (domain, day.isoformat()[:7] if isinstance(day, date) else str(day)[:7])
            for domain, day in session.execute(select(records.c.domain, records.c.occurred_at))
        )
    assert manifest["format"] == "chengxin-export/1"
    assert manifest["ledger_head"] == {"seq": head.seq, "entry_hash": head.entry_hash}
    assert manifest["policy"]["label"] == "national@2026.1"
    assert manifest["policy"]["content_hash"] == city.policy.content_hash
    assert manifest["as_of"] == "2026-11-01"
    assert manifest["records"]["rows"] == stored
    assert manifest["records"]["partitioned_by"] == ["domain", "month"]
    assert {(p["domain"], p["month"]): p["rows"] for p in manifest["records"]["partitions"]} == (
        dict(by_partition)
    )
    files = [f for p in manifest["records"]["partitions"] for f in p["files"]]
    files += manifest["subjects"]["files"] + [manifest["policy"]["file"]]
    for f in files:
        data = (out / f["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == f["sha256"]
        assert len(data) == f["bytes"]
    part = files[0]
    assert part["path"].startswith("records/domain=")
    assert pq.ParquetFile(out / part["path"]).metadata.num_rows == part["rows"]
    assert verify_export(out).manifest.records_rows == stored


def test_the_export_holds_no_identifiers_and_the_plan_s_columns(city: City, tmp_path: Path) -> None:
    out = tmp_path / "export"
    export(city, out)
    checked = verify_export(out)
    names = checked.records().schema.names
    assert names[:5] == ["record_id", "subject_id", "type", "occurred_at", "status"]
    assert names[-2:] == ["domain", "month"]
    assert checked.subjects().schema.names == ["subject_id", "kind", "region"]
    everything = json.dumps(checked.subjects().to_table().to_pylist(), default=str)
    everything += json.dumps(checked.records().to_table().to_pylist(), default=str)
    assert "cn-rid" not in everything and "Zhang" not in everything
    regions = checked.subjects().to_table().column("region").to_pylist()
    assert all(r is None or (len(r) == 6 and r.isdigit()) for r in regions)


def test_the_plan_on_the_export_gives_the_pure_scorer_s_answer(city: City, tmp_path: Path) -> None:
    out = tmp_path / "export"
    export(city, out)
    checked = verify_export(out)
    for as_of in (date(2024, 2, 29), date(2025, 6, 30), AS_OF):
        result = rescore_duckdb(
            checked.policy(),
            ibis.memtable(checked.records()),
            ibis.memtable(checked.subjects()),
            as_of,
        )
        got = table_answer(result.scores, result.memberships)
        assert got == pure_answer(city.policy, city.facts(), as_of), f"as of {as_of}"


Tamper = Callable[[Path], None]


def _first_part(out: Path) -> Path:
    return sorted((out / "records").rglob("*.parquet"))[0]


def _flip_a_byte(out: Path) -> None:
    path = _first_part(out)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _drop_a_row(out: Path) -> None:
    path = _first_part(out)
    table = pq.read_table(path)
    pq.write_table(table.slice(1), path)


def _add_a_file(out: Path) -> None:
    path = _first_part(out)
    pq.write_table(pq.read_table(path), path.with_name("part-99.parquet"))


def _add_a_stray_file(out: Path) -> None:
    (_first_part(out).parent / "notes.txt").write_text("Spark would read this as Parquet")


def _remove_a_file(out: Path) -> None:
    _first_part(out).unlink()


def _move_a_file(out: Path) -> None:
    path = _first_part(out)
    other = out / "records" / "domain=judicial" / "month=1999-01"
    other.mkdir(parents=True)
    path.rename(other / path.name)


def _edit_the_policy(out: Path) -> None:
    data = json.loads((out / "policy.json").read_text())
    data["scale"]["base"] += 1
    (out / "policy.json").write_text(json.dumps(data))


def _miscount(out: Path) -> None:
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["records"]["rows"] += 1
    (out / "manifest.json").write_text(json.dumps(manifest))


TAMPERING: dict[str, tuple[Tamper, str]] = {
    "byte": (_flip_a_byte, r"has sha256 \w+, the manifest says"),
    "row": (_drop_a_row, r"has \d+ bytes, the manifest says"),
    "extra file": (_add_a_file, r"part-99\.parquet is not in the manifest"),
    "stray file": (_add_a_stray_file, r"notes\.txt is not in the manifest"),
    "missing file": (_remove_a_file, r"is in the manifest but missing"),
    "moved file": (_move_a_file, r"is in the manifest but missing"),
    "policy": (_edit_the_policy, r"policy\.json has (\d+ bytes|sha256)"),
    "count": (_miscount, r"the manifest says \d+ records but its partitions hold \d+"),
}


def test_an_export_that_does_not_match_its_manifest_is_refused(city: City, tmp_path: Path) -> None:
    original = tmp_path / "export"
    export(city, original)
    for name, (tamper, message) in TAMPERING.items():
        copy = tmp_path / name.replace(" ", "-")
        shutil.copytree(original, copy)
        tamper(copy)
        with pytest.raises(ExportError, match=message):
            verify_export(copy)


def test_a_missing_manifest_is_an_unfinished_export(tmp_path: Path) -> None:
    (tmp_path / "records").mkdir()
    with pytest.raises(ExportError, match=r"has no manifest\.json"):
        verify_export(tmp_path)


def test_a_non_empty_directory_needs_force(city: City, tmp_path: Path) -> None:
    out = tmp_path / "export"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="not empty: give --force"):
        export(city, out)
    assert (out / "notes.txt").read_text() == "mine"
    export(city, out, force=True)
    assert not (out / "notes.txt").exists()
    verify_export(out)
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_failed_export_leaves_nothing_behind(city: City, tmp_path: Path) -> None:
    data = city.policy.canonical()
    data["version"] = "2026.9"
    for rtype in data["record_types"]:
        if "amount_cny" in rtype.get("attributes", {}):
            rtype["attributes"]["amount_cny"] = {"type": "str"}  # stored as numbers
    retyped = Policy.model_validate(data)
    out = tmp_path / "exports" / "2026-11-01"
    with pytest.raises(ExportError, match="does not have the type the policy declares"):
        export(city, out, policy=retyped)
    assert list((tmp_path / "exports").iterdir()) == []  # no partial export either


def test_date_attributes_are_exported_as_dates(
    engine: Engine, clock: FixedClock, tmp_path: Path, record_line: Callable[..., dict[str, Any]]
) -> None:
    text, _ = read_policy_source("national")
    block = (
        "    title: Able to perform a court judgment and did not\n"
        "    attributes:\n"
        "      amount_cny: {type: int, required: true}\n"
    )
    assert block in text
    text = text.replace(block, block + "      decided_on: {type: date}\n")
    text = text.replace('version: "2026.1"', 'version: "2026.1-dated"')
    with transaction(engine) as session:
        stored = add_policy(session, text=text, source="dated.yaml", now=clock.now())
        activate(
            session,
            policy_id=stored.id,
            actor="tests",
            reason="a date attribute",
            now=clock.now(),
            effective_from=date(1970, 1, 1),
        )
        line = record_line(attributes={"amount_cny": 5, "decided_on": "2024-02-29"})
        report = ingest_batch(session, policy=stored.policy, lines=[(1, line)], now=clock.now())
    assert not report.rejected, report.rejected
    assert attribute_columns(stored.policy)["a_decided_on"] == "date"
    out = tmp_path / "export"
    export_parquet(engine, out, policy=stored.policy, as_of=AS_OF, now=clock.now())
    table = verify_export(out).records().to_table()
    assert table.schema.field("a_decided_on").type == pa.date32()
    assert table.column("a_decided_on").to_pylist() == [date(2024, 2, 29)]


def test_an_empty_store_gives_an_empty_export(
    engine: Engine, policy: Policy, clock: FixedClock, tmp_path: Path
) -> None:
    out = tmp_path / "export"
    manifest = export_parquet(engine, out, policy=policy, as_of=AS_OF, now=clock.now())
    assert (manifest.records_rows, manifest.subjects_rows, manifest.partitions) == (0, 0, ())
    checked = verify_export(out)
    assert checked.records().to_table().num_rows == 0
    assert checked.subjects().to_table().num_rows == 0
