"""Repository queries: the same answers on both backends, across IN-list chunk boundaries."""

from __future__ import annotations

from datetime import UTC, date, datetime

from sqlalchemy import Engine

from chengxin.domain.identifiers import SubjectId
from chengxin.store import repo
from chengxin.store.db import transaction

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
