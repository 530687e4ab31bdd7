"""Repository queries: the same answers on both backends, across IN-list chunk boundaries."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from sqlalchemy import Engine, text

from chengxin.domain.identifiers import SubjectId
from chengxin.store import repo
from chengxin.store.db import transaction
from chengxin.store.ledger import LEDGER_COLUMNS

NOW = datetime(2026, 11, 1, 12, tzinfo=UTC)
N = 1_000  # more than every chunk size (400, 900)


def subject_rows(n: int) -> list[dict[str, object]]:
    return [
        {"scheme": "generic", "value": f"S-{i:05d}", "kind": "person", "created_at": NOW}
        for i in range(n)
    ]


def test_chunks_cover_everything_in_order() -> None:
    items = list(range(2_001))
    parts = list(repo.chunks(items))
    assert [len(p) for p in parts] == [900, 900, 201]
    assert [x for p in parts for x in p] == items
    assert list(repo.chunks([])) == []


def test_many_subjects_across_chunk_boundaries(engine: Engine) -> None:
    rows = subject_rows(N)
    with transaction(engine) as session:
        repo.insert_subjects(session, rows)
        repo.insert_subjects(session, rows[:10])  # already there: ignored, not an error
        keys = [("generic", str(r["value"])) for r in rows]
        found = repo.subject_ids(session, [*keys, ("generic", "absent")])
        assert len(found) == N and ("generic", "absent") not in found
        ids = sorted(i for i, _ in found.values())
        assert repo.record_facts(session, ids) == {i: [] for i in ids}
        repo.save_snapshots(
            session,
            [
                {
                    "subject_id": i,
                    "policy_hash": "h",
                    "score": 1000,
                    "grade": "A",
                    "as_of": date(2026, 11, 1),
                    "next_change": None,
                    "computed_at": NOW,
                    "stale": False,
                }
                for i in ids
            ],
        )
        repo.save_snapshots(  # an upsert: replaces
            session,
            [
                {
                    "subject_id": ids[0],
                    "policy_hash": "h2",
                    "score": 900,
                    "grade": "B",
                    "as_of": date(2026, 11, 2),
                    "next_change": date(2027, 1, 1),
                    "computed_at": NOW,
                    "stale": False,
                }
            ],
        )
        snaps = repo.snapshots_for(session, ids)
        assert len(snaps) == N
        assert (snaps[ids[0]].score, snaps[ids[0]].next_change) == (900, date(2027, 1, 1))
        assert snaps[ids[1]].score == 1000
        repo.insert_memberships(
            session,
            [
                {
                    "subject_id": i,
                    "list_code": "l",
                    "kind": "black",
                    "since": None,
                    "until": date(2028, 1, 1),
                    "policy_hash": "h",
                    "entered_at": NOW,
                }
                for i in ids
            ],
        )
        members = repo.open_memberships(session, ids)
        assert all(len(m) == 1 for m in members.values())
        first = members[ids[0]][0]
        repo.update_membership_until(session, [(first.id, date(2029, 1, 1))])
        repo.close_memberships(session, [m[0].id for m in list(members.values())[1:]], now=NOW)
        still = repo.open_memberships(session, ids)
        assert [i for i, m in still.items() if m] == [ids[0]]
        assert still[ids[0]][0].until == date(2029, 1, 1)
        sub = repo.find_subject(session, SubjectId("generic", "S-00007"))
        assert sub is not None and repo.get_subject(session, sub.id) == sub
        assert repo.find_subject(session, SubjectId("generic", "nobody")) is None


def _ledger_rows(first: int, provider: str, n: int) -> list[tuple[object, ...]]:
    # The lookup is under test, not the chain: the hashes are placeholders.
    return [
        (first + i, "record", provider, f"r-{i}", None, "{}", "h", "h", "h", NOW) for i in range(n)
    ]


def test_rows_by_ref_finds_exactly_the_stored_refs(engine: Engine) -> None:
    with transaction(engine) as session:
        bulk = repo.Bulk(session)
        bulk.insert("ledger", LEDGER_COLUMNS, _ledger_rows(1, "p-a", N))
        bulk.insert("ledger", LEDGER_COLUMNS, _ledger_rows(N + 1, "p-b", 10))
        asked = [f"r-{i}" for i in range(0, N + 50, 7)]  # some beyond what p-a holds
        found = bulk.rows_by_ref("ledger", ("seq",), "p-a", asked)
        assert sorted(found) == sorted((f"r-{i}", 1 + i) for i in range(0, N, 7))
        assert bulk.rows_by_ref("ledger", ("seq",), "p-b", ["r-3"]) == [("r-3", N + 4)]
        assert bulk.rows_by_ref("ledger", ("seq",), "p-c", ["r-3"]) == []
        assert bulk.rows_by_ref("ledger", ("seq",), "p-a", []) == []


@pytest.mark.parametrize("backend", [pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_rows_by_ref_probes_the_index_for_a_provider_the_statistics_miss(engine: Engine) -> None:
    """A provider ANALYZE has not seen yet costs one index probe a ref, not a scan of its rows.

    (``ref = ANY(?)`` read all 3,000 rows of ``p-new`` for one ref here.)
    """
    with transaction(engine) as session:
        repo.Bulk(session).insert("ledger", LEDGER_COLUMNS, _ledger_rows(1, "p-old", 3_000))
    with engine.connect() as conn:
        conn.exec_driver_sql("ANALYZE ledger")
        conn.commit()
    with transaction(engine) as session:
        repo.Bulk(session).insert("ledger", LEDGER_COLUMNS, _ledger_rows(3_001, "p-new", 3_000))
    with transaction(engine) as session:
        found = repo.Bulk(session).rows_by_ref("ledger", ("seq",), "p-new", ["r-7", "none"])
        assert found == [("r-7", 3_008)]
        read = session.execute(
            text("SELECT pg_stat_get_xact_tuples_returned('uq_ledger_provider_ref'::regclass)")
        ).scalar_one()
    assert read <= 2
