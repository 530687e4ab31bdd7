"""Backtests: the whole population scored under a proposed policy and the one in force.

This is how a policy author sees a change's effect before activating it.
Both policies score every subject on the same records, read in one
transaction (the ledger head is reported), with the batch plan on DuckDB.
Nothing is written. The report gives:

* **grades**: the transition matrix (grade before × grade after) and how
  many subjects move, and how many scores go up or down;
* **lists**: for every list of either policy, its size before and after, how
  many subjects enter and leave it, and the first few of them, masked as the
  public lists mask them (hard line 6);
* **measures**: for every measure of either policy, how many subjects it
  applies to before and after (``deny`` for a sanction, ``grant`` for a
  reward, which needs the subject's recorded consent where the measure says
  so), and how many start and stop;
* **breakdowns** of the subjects that change (grade, list or measure) by
  province (the first two digits of the region code, GB/T 2260), region,
  subject kind and domain. A subject counts under every domain of its
  records whose type the two policies treat differently (its rules, list
  entries or lifts differ); one with none counts under ``(policy-wide)``,
  for changes of scale, grade bands or measure triggers.

:func:`write_chart` draws the score distributions before and after, with the
grade bands, and the transition matrix (PNG or SVG).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import Engine, select

from chengxin.domain.identifiers import SubjectId, mask
from chengxin.domain.policy import Measure, Policy
from chengxin.engine.duckdb_backend import BatchResult, connect, rescore_duckdb
from chengxin.engine.export import store_snapshot
from chengxin.engine.plan import PlanError, attribute_columns
from chengxin.service.errors import Invalid
from chengxin.store.db import transaction
from chengxin.store.schema import consents, subjects

__all__ = [
    "PROVINCES",
    "Backtest",
    "Breakdown",
    "ListChange",
    "MeasureChange",
    "backtest",
    "write_chart",
]

PROVINCES: dict[str, str] = {
    "11": "Beijing", "12": "Tianjin", "13": "Hebei", "14": "Shanxi", "15": "Inner Mongolia",
    "21": "Liaoning", "22": "Jilin", "23": "Heilongjiang", "31": "Shanghai", "32": "Jiangsu",
    "33": "Zhejiang", "34": "Anhui", "35": "Fujian", "36": "Jiangxi", "37": "Shandong",
    "41": "Henan", "42": "Hubei", "43": "Hunan", "44": "Guangdong", "45": "Guangxi",
    "46": "Hainan", "50": "Chongqing", "51": "Sichuan", "52": "Guizhou", "53": "Yunnan",
    "54": "Tibet", "61": "Shaanxi", "62": "Gansu", "63": "Qinghai", "64": "Ningxia",
    "65": "Xinjiang", "71": "Taiwan", "81": "Hong Kong", "82": "Macao",
}  # fmt: skip
"""Province-level codes of GB/T 2260 (the first two digits of a region code)."""

POLICY_WIDE = "(policy-wide)"
UNKNOWN = "(unknown)"


@dataclass(frozen=True)
class ListChange:
    """One list under both policies."""

    code: str
    kind: str
    before: int
    after: int
    entered: int
    left: int
    entered_subjects: tuple[str, ...]
    left_subjects: tuple[str, ...]


@dataclass(frozen=True)
class MeasureChange:
    """One measure under both policies: how many subjects it applies to."""

    code: str
    kind: str
    outcome: str
    before: int
    after: int
    started: int
    stopped: int


@dataclass(frozen=True)
class Breakdown:
    """The subjects of one province, region, kind or domain, and how many of them change."""

    key: str
    label: str
    subjects: int
    changed: int
    grade_moved: int
    entered: int
    left: int
    measure_changed: int


@dataclass
class Backtest:
    """What a policy change would do to the population on one date."""

    as_of: date
    ledger_seq: int
    before: Policy
    after: Policy
    subjects: int
    grades_before: list[str]
    grades_after: list[str]
    transitions: dict[tuple[str, str], int]
    moved: int
    score_up: int
    score_down: int
    lists: list[ListChange]
    measures: list[MeasureChange]
    breakdowns: dict[str, list[Breakdown]]
    seconds: float = 0.0
    scores_before: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False)
    scores_after: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False)

    @property
    def changed(self) -> int:
        """Subjects whose grade, lists or measures change."""
        return sum(b.changed for b in self.breakdowns.get("kind", []))

    def matrix(self) -> list[list[int]]:
        """The transition matrix: one row per grade before, one column per grade after."""
        return [
            [self.transitions.get((b, a), 0) for a in self.grades_after] for b in self.grades_before
        ]

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form."""

        def stats(values: np.ndarray) -> dict[str, Any]:
            if not values.size:
                return {"min": None, "median": None, "max": None, "mean": None}
            return {
                "min": int(values.min()),
                "p10": int(np.percentile(values, 10, method="lower")),
                "median": int(np.percentile(values, 50, method="lower")),
                "p90": int(np.percentile(values, 90, method="lower")),
                "max": int(values.max()),
                "mean": round(float(values.mean()), 2),
            }

        return {
            "as_of": self.as_of.isoformat(),
            "ledger_seq": self.ledger_seq,
            "before": {"policy": self.before.label, "content_hash": self.before.content_hash},
            "after": {"policy": self.after.label, "content_hash": self.after.content_hash},
            "subjects": self.subjects,
            "changed": self.changed,
            "grades": {
                "before": self.grades_before,
                "after": self.grades_after,
                "matrix": self.matrix(),
                "moved": self.moved,
                "score_up": self.score_up,
                "score_down": self.score_down,
            },
            "scores": {"before": stats(self.scores_before), "after": stats(self.scores_after)},
            "lists": [
                vars(lst)
                | {
                    "entered_subjects": list(lst.entered_subjects),
                    "left_subjects": list(lst.left_subjects),
                }
                for lst in self.lists
            ],
            "measures": [vars(m) for m in self.measures],
            "breakdowns": {k: [vars(b) for b in rows] for k, rows in self.breakdowns.items()},
            "seconds": round(self.seconds, 3),
        }


# -- scoring both --------------------------------------------------------------------------


def _columns(before: Policy, after: Policy) -> dict[str, str]:
    """The attribute columns both policies read (one type per name)."""
    out = attribute_columns(before)
    for name, type_ in attribute_columns(after).items():
        if out.setdefault(name, type_) != type_:
            raise Invalid(
                f"attribute '{name[2:]}' is {out[name]} under {before.label} and {type_} under "
                f"{after.label}: a changed type needs a new attribute name"
            )
    return out


def _consented(engine: Engine) -> dict[str, np.ndarray]:
    with transaction(engine) as session:
        rows = session.execute(
            select(consents.c.measure, consents.c.subject_id).where(consents.c.revoked_at.is_(None))
        ).all()
    out: dict[str, list[int]] = {}
    for measure, sid in rows:
        out.setdefault(str(measure), []).append(int(sid))
    return {k: np.unique(np.array(v, np.int64)) for k, v in out.items()}


@dataclass(frozen=True)
class _Scored:
    """One policy's answer, aligned to the subjects' order."""

    policy: Policy
    score: np.ndarray
    grade: np.ndarray
    lists: dict[str, np.ndarray]


def _align(policy: Policy, result: BatchResult, ids: np.ndarray) -> _Scored:
    scores = result.scores.sort_by("subject_id")
    if not np.array_equal(scores.column("subject_id").to_numpy(), ids):  # pragma: no cover
        raise RuntimeError("the batch engine did not score every subject exactly once")
    members = result.memberships
    lists: dict[str, np.ndarray] = {}
    for lst in policy.lists:
        held = members.filter(pc.equal(members.column("list_code"), lst.code))
        lists[lst.code] = np.isin(ids, held.column("subject_id").to_numpy())
    return _Scored(
        policy,
        scores.column("score").to_numpy(),
        np.asarray(scores.column("grade").to_pylist(), dtype=object),
        lists,
    )


def _applies(
    scored: _Scored, measure: Measure | None, ids: np.ndarray, consent: dict[str, np.ndarray]
) -> np.ndarray:
    """Whether the measure's outcome is deny (sanction) or grant (reward), per subject."""
    if measure is None:
        return np.zeros(ids.size, bool)
    trig = measure.triggered_by
    if trig.list is not None:
        hit = scored.lists.get(trig.list, np.zeros(ids.size, bool))
    else:
        hit = np.isin(scored.grade, list(scored.policy.grades_matching(trig)))
    if measure.kind == "reward" and measure.consent_required:
        hit = hit & np.isin(ids, consent.get(measure.code, np.zeros(0, np.int64)))
    return np.asarray(hit, bool)


def _changed_types(before: Policy, after: Policy) -> set[str]:
    """Record types the two policies treat differently: rules, list entries or lifts."""

    def roles(policy: Policy, code: str) -> Any:
        return (
            [r.model_dump(mode="json") for r in policy.rules_by_type.get(code, ())],
            sorted(
                (lst.code, lst.model_dump_json())
                for lst in policy.lists
                if lst.enter.record == code or code in lst.lifted_by
            ),
            policy.types[code].model_dump(mode="json") if code in policy.types else None,
        )

    codes = set(before.types) | set(after.types)
    return {code for code in codes if roles(before, code) != roles(after, code)}


def _masked(engine: Engine, ids: Sequence[int]) -> dict[int, str]:
    if not ids:
        return {}
    with transaction(engine) as session:
        rows = session.execute(
            select(subjects.c.id, subjects.c.scheme, subjects.c.value).where(
                subjects.c.id.in_(list(ids))
            )
        ).all()
    return {int(r.id): f"{r.scheme}:{mask(SubjectId(r.scheme, r.value))}" for r in rows}


def backtest(
    engine: Engine,
    *,
    policy: Policy,
    against: Policy,
    as_of: date,
    show: int = 10,
    threads: int | None = None,
) -> Backtest:
    """Score everyone under ``against`` (before) and ``policy`` (after) as of ``as_of``.

    ``show`` subjects are named per list for entries and for exits (masked).
    """
    started = time.perf_counter()
    try:
        columns = _columns(against, policy)
    except PlanError as exc:
        raise Invalid(str(exc)) from None
    with store_snapshot(engine) as snap:
        records = snap.records_table(columns)
        people = snap.subjects()
        seq = snap.head.seq
    consent = _consented(engine)
    ids = people.column("subject_id").to_numpy()
    inputs = people.select(["subject_id", "kind"])
    con = connect(threads=threads)
    try:
        old = _align(against, rescore_duckdb(against, records, inputs, as_of, con=con), ids)
        new = _align(policy, rescore_duckdb(policy, records, inputs, as_of, con=con), ids)
    finally:
        con.disconnect()

    moved = old.grade != new.grade
    transitions: dict[tuple[str, str], int] = {}
    for b, a in zip(old.grade.tolist(), new.grade.tolist(), strict=True):
        transitions[(b, a)] = transitions.get((b, a), 0) + 1

    entered_any = np.zeros(ids.size, bool)
    left_any = np.zeros(ids.size, bool)
    list_rows: list[ListChange] = []
    codes = list(dict.fromkeys([*new.lists, *old.lists]))
    wanted: dict[int, str] = {}
    per_list: list[tuple[str, str, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    for code in codes:
        colour = (policy.lists_by_code.get(code) or against.lists_by_code[code]).kind
        was = old.lists.get(code, np.zeros(ids.size, bool))
        now = new.lists.get(code, np.zeros(ids.size, bool))
        entered, left = now & ~was, was & ~now
        entered_any |= entered
        left_any |= left
        per_list.append((code, colour, was, now, entered, left))
        for sid in [*ids[entered][:show].tolist(), *ids[left][:show].tolist()]:
            wanted[int(sid)] = ""
    names = _masked(engine, list(wanted))
    for code, kind, was, now, entered, left in per_list:
        list_rows.append(
            ListChange(
                code=code,
                kind=kind,
                before=int(was.sum()),
                after=int(now.sum()),
                entered=int(entered.sum()),
                left=int(left.sum()),
                entered_subjects=tuple(names[int(s)] for s in ids[entered][:show]),
                left_subjects=tuple(names[int(s)] for s in ids[left][:show]),
            )
        )

    measure_changed = np.zeros(ids.size, bool)
    measure_rows: list[MeasureChange] = []
    for code in dict.fromkeys([*policy.measures_by_code, *against.measures_by_code]):
        m_new, m_old = policy.measures_by_code.get(code), against.measures_by_code.get(code)
        either = m_new or m_old
        assert either is not None  # the code came from one of them
        was = _applies(old, m_old, ids, consent)
        now = _applies(new, m_new, ids, consent)
        measure_changed |= was != now
        measure_rows.append(
            MeasureChange(
                code=code,
                kind=either.kind,
                outcome="deny" if either.kind == "sanction" else "grant",
                before=int(was.sum()),
                after=int(now.sum()),
                started=int((now & ~was).sum()),
                stopped=int((was & ~now).sum()),
            )
        )

    changed = moved | entered_any | left_any | measure_changed
    flags = {
        "changed": changed,
        "grade_moved": moved,
        "entered": entered_any,
        "left": left_any,
        "measure_changed": measure_changed,
    }
    regions = [r or "" for r in people.column("region").to_pylist()]
    provinces = [r[:2] for r in regions]
    kinds = people.column("kind").to_pylist()
    breakdowns = {
        "province": _group(provinces, flags, lambda k: PROVINCES.get(k, UNKNOWN)),
        "region": [b for b in _group(regions, flags, _region_label) if b.changed],
        "kind": _group(kinds, flags, lambda k: k),
        "domain": _domains(records, ids, changed, flags, _changed_types(against, policy)),
    }
    return Backtest(
        as_of=as_of,
        ledger_seq=seq,
        before=against,
        after=policy,
        subjects=int(ids.size),
        grades_before=[g.grade for g in against.grades_best_first],
        grades_after=[g.grade for g in policy.grades_best_first],
        transitions=transitions,
        moved=int(moved.sum()),
        score_up=int((new.score > old.score).sum()),
        score_down=int((new.score < old.score).sum()),
        lists=list_rows,
        measures=measure_rows,
        breakdowns=breakdowns,
        seconds=time.perf_counter() - started,
        scores_before=old.score,
        scores_after=new.score,
    )


def _region_label(code: str) -> str:
    return f"{PROVINCES.get(code[:2], UNKNOWN)} {code}" if code else UNKNOWN


def _group(keys: Sequence[str], flags: dict[str, np.ndarray], label: Any) -> list[Breakdown]:
    """Subjects and changes per key, most changed first."""
    if not keys:
        return []
    names, inverse = np.unique(np.asarray(keys, dtype=object), return_inverse=True)
    size = np.bincount(inverse, minlength=names.size)
    sums = {k: np.bincount(inverse, weights=v, minlength=names.size) for k, v in flags.items()}
    rows = [
        Breakdown(
            key=str(names[i]) or UNKNOWN,
            label=label(str(names[i])),
            subjects=int(size[i]),
            **{k: int(s[i]) for k, s in sums.items()},
        )
        for i in range(names.size)
    ]
    return sorted(rows, key=lambda b: (-b.changed, b.key))


def _domains(
    records: pa.Table,
    ids: np.ndarray,
    changed: np.ndarray,
    flags: dict[str, np.ndarray],
    types: set[str],
) -> list[Breakdown]:
    """Changed subjects per domain of their records of a type the policies treat differently."""
    counted = pc.is_in(records.column("status"), pa.array(["active", "disputed"]))
    involved = records.filter(
        pc.and_(counted, pc.is_in(records.column("type"), pa.array(sorted(types), pa.string())))
    )
    pairs = involved.group_by(["subject_id", "domain"]).aggregate([]).to_pydict()
    where = {int(s): i for i, s in enumerate(ids.tolist())}
    by_domain: dict[str, set[int]] = {}
    for sid, dom in zip(pairs["subject_id"], pairs["domain"], strict=True):
        i = where.get(int(sid))
        if i is not None and changed[i]:
            by_domain.setdefault(str(dom), set()).add(i)
    explained = set().union(*by_domain.values()) if by_domain else set()
    rest = {int(i) for i in np.flatnonzero(changed)} - explained
    if rest:
        by_domain[POLICY_WIDE] = rest
    rows = []
    for dom, members in by_domain.items():
        index = np.fromiter(members, np.int64)
        rows.append(
            Breakdown(
                key=dom,
                label=dom,
                subjects=len(members),
                **{k: int(v[index].sum()) for k, v in flags.items()},
            )
        )
    return sorted(rows, key=lambda b: (-b.changed, b.key))


# -- the chart -------------------------------------------------------------------------------


def write_chart(report: Backtest, path: Path) -> Path:
    """Draw score distributions before and after, and the transition matrix (PNG or SVG)."""
    suffix = path.suffix.lower()
    if suffix not in (".png", ".svg"):
        raise Invalid(f"--chart must end in .png or .svg, got {path.name!r}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (hist, heat) = plt.subplots(
        1, 2, figsize=(13, 5.2), gridspec_kw={"width_ratios": [1.5, 1]}
    )
    before, after = report.scores_before, report.scores_after
    values = np.concatenate([before, after]) if before.size else np.zeros(1, np.int64)
    low, high = int(values.min()), int(values.max())
    bins = np.linspace(low, high + 1, min(60, max(2, high - low + 2)))
    hist.hist(
        before,
        bins=bins,
        histtype="stepfilled",
        alpha=0.35,
        color="#4c72b0",
        label=f"before: {report.before.label}",
    )
    hist.hist(
        after,
        bins=bins,
        histtype="step",
        linewidth=1.8,
        color="#dd8452",
        label=f"after: {report.after.label}",
    )
    hist.set_yscale("log")
    for grade in report.after.grades_desc:
        if low <= grade.min <= high:
            hist.axvline(grade.min, color="#555555", linestyle=":", linewidth=0.8)
            hist.annotate(
                grade.grade,
                (grade.min, 1),
                xycoords=("data", "axes fraction"),
                xytext=(2, -12),
                textcoords="offset points",
                fontsize=8,
            )
    hist.set_xlabel("score")
    hist.set_ylabel("subjects (log scale)")
    hist.set_title(f"Score distribution as of {report.as_of} ({report.subjects:,} subjects)")
    hist.legend(loc="upper left", fontsize=8)

    matrix = np.asarray(report.matrix(), dtype=float)
    heat.imshow(np.log1p(matrix), cmap="Blues", aspect="auto")
    heat.set_xticks(range(len(report.grades_after)), report.grades_after)
    heat.set_yticks(range(len(report.grades_before)), report.grades_before)
    heat.set_xlabel(f"grade after ({report.after.label})")
    heat.set_ylabel(f"grade before ({report.before.label})")
    heat.set_title(f"Grade transitions: {report.moved:,} subjects move")
    top = matrix.max() if matrix.size else 0
    for (i, j), n in np.ndenumerate(matrix):
        if n:
            colour = "white" if np.log1p(n) > 0.6 * np.log1p(top) else "black"
            heat.text(j, i, f"{int(n):,}", ha="center", va="center", fontsize=8, color=colour)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120 if suffix == ".png" else None)
    plt.close(fig)
    return path
