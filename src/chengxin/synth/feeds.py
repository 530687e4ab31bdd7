"""Three years of provider feeds for a synthetic city, in the interchange format.

Records are drawn column-wise with numpy from the rates below (per subject
and year; people's negative and positive rates are scaled by their own
gamma-distributed propensities, so counts are over-dispersed like real ones):

================================  ============================================
traffic, metro, city (people)     failing to yield 0.6 for drivers, smoking
                                  0.06 men / 0.012 women, fare evasion 0.05
volunteers, donors, heroes        6% volunteer 2.4 times a year (hours
                                  lognormal), 5% aged 18-60 give blood 1.5
                                  times a year, heroic acts 0.0002
courts (judgment defaulters)      1% of people, 3% of organisations, amounts
                                  lognormal; half perform 1-18 months later
tax, labour, regulators           organisations: tax arrears 0.03, wage
                                  arrears 0.012, product safety 0.02,
                                  environment 0.012, contract fraud 0.002;
                                  35% of enterprises rated A for tax each April
public bodies                     court rulings 0.01, contracts 0.02,
                                  judgments 0.01
================================  ============================================

Each record respects its type's ``applies_to`` and attribute schema in
``policies/national.yaml``; it occurs within ``(end - years, end]``, after
the subject's birth (adult-only types after the 18th birthday). About 0.5%
are later retracted and 0.3% amended by their provider. Lines are ordered by
the day the provider recorded them (occurrence plus a short delay, never
after ``end``); a correction comes after what it corrects.

References are unique per provider: courts number cases per court, year and
kind, ``(2025)0105-exec-00123``; the others per year, ``TP-2025-000123``.
``evidence`` is the sha256 of the provider's signed daily submission
(``"<provider>/<recorded day>"``), which lists the record.

The JSON Lines writer assembles each line from fixed fragments with pyarrow;
that is valid JSON because every string in the feed is ASCII without quotes
or backslashes (names come from fixed pinyin lists; the tests parse every
line back).
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import math
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from chengxin.synth.population import (
    DISTRICTS,
    EPOCH,
    STREAM_FEEDS,
    CityConfig,
    SubjectTraits,
    day_number,
    generate_population,
    subject_traits,
)

Arr = npt.NDArray[Any]
Format = Literal["jsonl", "csv", "parquet"]
Progress = Callable[[int, int], None]

# -- providers and record types --------------------------------------------------

COURTS: Final = tuple(f"court-{code}" for code in DISTRICTS)
"""One enforcement court per Beijing district."""
_PREFIX: Final = {
    "tax-110000": "TAX", "labour-110000": "LAB", "market-regulator-110000": "SAMR",
    "environment-110000": "EPB", "traffic-police-110000": "TP", "metro-110000": "MTR",
    "city-110000": "CITY", "volunteer-110000": "VOL", "red-cross-110000": "BD",
}  # fmt: skip
PROVIDERS: Final = (*COURTS, *_PREFIX)
"""Every provider a synthetic feed names."""
_P = {name: i for i, name in enumerate(PROVIDERS)}
_N_COURTS: Final = len(COURTS)

ATTRIBUTES: Final = {
    "amount_cny": "int", "days_overdue": "int", "workers": "int", "severity": "severity",
    "repeat": "bool", "hours": "int",
}  # fmt: skip
"""Every attribute the feeds send, with how its value is stored (an int or a code)."""
SEVERITIES: Final = ("minor", "general", "serious")
_TOKENS: Final = ("", "exec", "perf", "obst", "civ", "corr")  # court case-number words


@dataclass(frozen=True)
class RecordKind:
    """How the synthetic feeds produce one record type of the national policy."""

    code: str
    provider: str | None  # None: the subject's district court
    delay: int  # mean days from occurrence to recording
    token: str = ""
    attributes: tuple[str, ...] = ()  # at most two: the plan's slots ``a`` and ``b``


RECORD_KINDS: Final = (
    RecordKind("government.court_ruling_not_honoured", None, 3, "exec", ("amount_cny",)),
    RecordKind("government.contract_not_honoured", "city-110000", 20, "", ("amount_cny",)),
    RecordKind("commercial.tax_arrears", "tax-110000", 15, "", ("amount_cny", "days_overdue")),
    RecordKind("commercial.wage_arrears", "labour-110000", 20, "", ("amount_cny", "workers")),
    RecordKind("commercial.contract_fraud", None, 3, "civ"),
    RecordKind("commercial.product_safety_violation", "market-regulator-110000", 10, "",
               ("severity",)),
    RecordKind("commercial.environmental_violation", "environment-110000", 10, "",
               ("severity",)),
    RecordKind("commercial.tax_compliance_a", "tax-110000", 1),
    RecordKind("societal.fail_to_yield_pedestrian", "traffic-police-110000", 3),
    RecordKind("societal.smoking_in_non_smoking_zone", "city-110000", 5),
    RecordKind("societal.fare_evasion", "metro-110000", 1, "", ("repeat",)),
    RecordKind("societal.volunteering", "volunteer-110000", 10, "", ("hours",)),
    RecordKind("societal.blood_donation", "red-cross-110000", 2),
    RecordKind("societal.heroic_act", "city-110000", 30),
    RecordKind("judicial.judgment_unperformed", None, 2, "exec", ("amount_cny",)),
    RecordKind("judicial.obstruction_of_enforcement", None, 2, "obst"),
    RecordKind("judicial.judgment_performed", None, 2, "perf"),
)  # fmt: skip
"""Record types the feeds produce, with provider, recording delay and attributes."""
_T = {k.code: i for i, k in enumerate(RECORD_KINDS)}
_STYLES: Final = ("int", "severity", "bool")
# How slot a and slot b are stored, per record type (-1: the type has no such slot).
_SLOT_STYLE: Final = np.array(
    [[_STYLES.index(ATTRIBUTES[a]) for a in k.attributes] + [-1] * (2 - len(k.attributes))
     for k in RECORD_KINDS],
    np.int8,
)  # fmt: skip
_COURT_DELAY_CAP: Final = 7  # so a follow-up (10+ days later) is recorded after its case
_DELAY_CAP: Final = 90

RETRACT_SHARE: Final = 0.005
"""Share of records their provider later retracts."""
AMEND_SHARE: Final = 0.003
"""Share of records their provider later amends."""
_YEAR: Final = 365.2425
OP_RECORD, OP_RETRACT, OP_AMEND = 0, 1, 2


# -- drawing records ---------------------------------------------------------------


class _Draw:
    """Accumulates records drawn type by type, as numpy columns."""

    def __init__(self, rng: np.random.Generator, traits: SubjectTraits, start: int, end: int):
        self.rng, self.traits, self.start, self.end = rng, traits, start, end
        self.parts: list[dict[str, Arr]] = []
        # Old district codes and migrants' home regions go to a court by weight.
        weights = np.array([w for _, w in DISTRICTS.values()], np.float64)
        court = rng.choice(_N_COURTS, size=traits.size, p=weights / weights.sum())
        for i, code in enumerate(DISTRICTS):
            court[traits.region == int(code)] = i
        self.court = court.astype(np.int16)

    def add(self, kind: str, subj: Arr, day: Arr, locked: Arr | None = None, **attrs: Arr) -> None:
        """Records of ``kind`` for subjects ``subj`` on days ``day``, with attribute columns."""
        spec = RECORD_KINDS[_T[kind]]
        n = len(subj)
        if not set(attrs) <= set(spec.attributes):
            unknown = sorted(set(attrs) - set(spec.attributes))
            raise ValueError(f"{kind} has no attribute(s) {unknown}")
        if spec.provider is None:
            prov = self.court[subj]
            if kind == "commercial.contract_fraud":  # courts for people, the regulator for firms
                prov = np.where(self.traits.kind[subj] != 0, _P["market-regulator-110000"], prov)
        else:
            prov = np.full(n, _P[spec.provider], np.int8)
        slots = [attrs.get(name) for name in spec.attributes] + [None, None]
        self.parts.append(
            {
                "subj": subj.astype(np.int32),
                "typ": np.full(n, _T[kind], np.int8),
                "day": day.astype(np.int32),
                "prov": prov.astype(np.int8),
                "a": np.full(n, -1, np.int64) if slots[0] is None else slots[0].astype(np.int64),
                "b": np.full(n, -1, np.int64) if slots[1] is None else slots[1].astype(np.int64),
                "locked": np.zeros(n, np.bool_) if locked is None else locked,
            }
        )

    def poisson(self, subj: Arr, rate: Arr | float, lo: Arr, hi: Arr) -> tuple[Arr, Arr, Arr]:
        """Events at ``rate`` per year for each of ``subj`` over days [lo, hi]: (subj, day, i)."""
        span = np.maximum(np.asarray(hi) - lo + 1, 0)
        counts = self.rng.poisson(np.asarray(rate) * span / _YEAR)
        i = np.repeat(np.arange(len(subj)), counts)
        day = lo[i] + (self.rng.random(len(i)) * span[i]).astype(np.int64)
        return subj[i], day, i

    def lognormal(self, median: float, sigma: float, n: int, low: int = 1) -> Arr:
        """Heavy-tailed whole amounts (yuan, hours, workers)."""
        values = np.rint(self.rng.lognormal(math.log(median), sigma, n))
        return np.maximum(values, low).astype(np.int64)

    def severity(self, n: int) -> Arr:
        """Publication tiers: mostly minor, some general, few serious."""
        return self.rng.choice(3, size=n, p=[0.70, 0.25, 0.05]).astype(np.int8)

    def optional(self, values: Arr, share: float) -> Arr:
        """Drop an optional attribute (-1) from ``1 - share`` of records."""
        return np.where(self.rng.random(len(values)) < share, values, -1)

    def defaults(
        self,
        subj: Arr,
        lo: Arr,
        share: float,
        extra_cases: float,
        amount: tuple[float, float],
        perform: float,
        obstruct: float,
    ) -> None:
        """Judgment defaulters among ``subj``, their later performance and obstruction."""
        rng = self.rng
        chosen = np.flatnonzero((rng.random(len(subj)) < share) & (lo <= self.end))
        cases = 1 + rng.poisson(extra_cases, len(chosen))
        who = np.repeat(chosen, cases)
        span = self.end - lo[who] + 1
        day = lo[who] + (rng.random(len(who)) * span).astype(np.int64)
        performed_on = day + 30 + rng.integers(0, 510, len(who))
        performs = (rng.random(len(who)) < perform) & (performed_on <= self.end)
        self.add(
            "judicial.judgment_unperformed",
            subj[who],
            day,
            locked=performs,
            amount_cny=self.lognormal(*amount, len(who), low=1000),
        )
        self.add("judicial.judgment_performed", subj[who][performs], performed_on[performs])
        if obstruct:
            obstructed_on = day + 10 + rng.integers(0, 190, len(who))
            obstructs = (rng.random(len(who)) < obstruct) & (obstructed_on <= self.end)
            obstructor = subj[who][obstructs]
            self.add("judicial.obstruction_of_enforcement", obstructor, obstructed_on[obstructs])


def _year_of(day: int) -> int:
    return (EPOCH + datetime.timedelta(days=day)).year


def _draw_people(d: _Draw) -> None:
    t, rng, s, e = d.traits, d.rng, d.start, d.end
    people = np.flatnonzero(t.kind == 0)
    n = len(people)
    birth = t.birth[people].astype(np.int64)
    male = t.male[people]
    negative = rng.gamma(0.7, 1 / 0.7, n)
    positive = rng.gamma(1.0, 1.0, n)
    adult = np.maximum(s, birth + round(18 * _YEAR))
    always = np.full(n, s, np.int64)
    last = np.full(n, e, np.int64)

    drives = (rng.random(n) < np.where(male, 0.65, 0.40)) & (birth >= e - round(75 * _YEAR))
    subj, day, _ = d.poisson(people[drives], 0.6 * negative[drives], adult[drives], last[drives])
    d.add("societal.fail_to_yield_pedestrian", subj, day)

    subj, day, _ = d.poisson(people, np.where(male, 0.06, 0.012) * negative, adult, last)
    d.add("societal.smoking_in_non_smoking_zone", subj, day)

    subj, day, _ = d.poisson(people, 0.05 * negative, always, last)
    order = np.lexsort((day, subj))  # a repeat: the same person evaded before in the window
    repeat = np.zeros(len(subj), np.int8)
    repeat[order[1:]] = subj[order[1:]] == subj[order[:-1]]
    d.add("societal.fare_evasion", subj, day, repeat=repeat)

    subj, day, _ = d.poisson(people, 0.003 * negative, adult, last)
    d.add(
        "commercial.tax_arrears",
        subj,
        day,
        amount_cny=d.lognormal(5_000, 1.2, len(subj), low=100),
        days_overdue=d.optional(30 + rng.geometric(1 / 60, len(subj)), 0.9),
    )
    subj, day, _ = d.poisson(people, 0.0003 * negative, adult, last)
    d.add("commercial.contract_fraud", subj, day)

    volunteers = rng.random(n) < 0.06
    subj, day, _ = d.poisson(
        people[volunteers], 2.4 * positive[volunteers], always[volunteers], last[volunteers]
    )
    hours = np.minimum(d.lognormal(12, 0.8, len(subj)), 400)
    d.add("societal.volunteering", subj, day, hours=hours)

    donors = rng.random(n) < 0.05  # GB 18467: donors aged 18-60 (repeat donors)
    upto = np.minimum(e, birth + round(60 * _YEAR))
    subj, day, _ = d.poisson(people[donors], 1.5, adult[donors], upto[donors])
    d.add("societal.blood_donation", subj, day)

    subj, day, _ = d.poisson(people, 0.0002 * positive, always, last)
    d.add("societal.heroic_act", subj, day)

    d.defaults(people, adult, 0.01, 0.15, (60_000, 1.3), perform=0.5, obstruct=0.08)


def _draw_organisations(d: _Draw) -> None:
    t, rng, s, e = d.traits, d.rng, d.start, d.end
    orgs = np.flatnonzero(t.kind == 1)
    n = len(orgs)
    negative = rng.gamma(0.7, 1 / 0.7, n)
    first, last = np.full(n, s, np.int64), np.full(n, e, np.int64)
    org_type = t.org_type[orgs]

    subj, day, _ = d.poisson(orgs, 0.03 * negative, first, last)
    d.add(
        "commercial.tax_arrears",
        subj,
        day,
        amount_cny=d.lognormal(80_000, 1.5, len(subj), low=100),
        days_overdue=d.optional(30 + rng.geometric(1 / 90, len(subj)), 0.9),
    )
    e_ = org_type != 3  # co-operatives' members are not employees
    subj, day, _ = d.poisson(orgs[e_], 0.012 * negative[e_], first[e_], last[e_])
    d.add(
        "commercial.wage_arrears",
        subj,
        day,
        amount_cny=d.lognormal(200_000, 1.3, len(subj), low=1000),
        workers=d.optional(np.minimum(d.lognormal(12, 1.0, len(subj)), 5000), 0.8),
    )
    subj, day, _ = d.poisson(orgs, 0.02 * negative, first, last)
    d.add("commercial.product_safety_violation", subj, day, severity=d.severity(len(subj)))
    subj, day, _ = d.poisson(orgs, 0.012 * negative, first, last)
    d.add("commercial.environmental_violation", subj, day, severity=d.severity(len(subj)))
    subj, day, _ = d.poisson(orgs, 0.002 * negative, first, last)
    d.add("commercial.contract_fraud", subj, day)

    # The tax office publishes its A ratings each April (for the year before).
    rated = orgs[(org_type == 1) & (rng.random(n) < 0.35)]
    for year in range(_year_of(s), _year_of(e) + 1):
        on = day_number(datetime.date(year, 4, 1))
        if s <= on <= e:
            again = rated[rng.random(len(rated)) < 0.85]
            d.add("commercial.tax_compliance_a", again, np.full(len(again), on))

    d.defaults(orgs, first, 0.03, 0.4, (300_000, 1.6), perform=0.5, obstruct=0.05)


def _draw_public_bodies(d: _Draw) -> None:
    bodies = np.flatnonzero(d.traits.kind == 2)
    n = len(bodies)
    first, last = np.full(n, d.start, np.int64), np.full(n, d.end, np.int64)
    for kind, rate, median in (
        ("government.court_ruling_not_honoured", 0.01, 2_000_000),
        ("government.contract_not_honoured", 0.02, 500_000),
    ):
        subj, day, _ = d.poisson(bodies, rate, first, last)
        amount = d.optional(d.lognormal(median, 1.2, len(subj), low=1000), 0.8)
        d.add(kind, subj, day, amount_cny=amount)
    years = (d.end - d.start + 1) / _YEAR
    d.defaults(bodies, first, 0.01 * years, 0.0, (1_000_000, 1.3), perform=0.7, obstruct=0.0)


# -- the plan: every line of the feed, as numpy columns in line order ----------------


@dataclass
class FeedPlan:
    """Every line of a city's feed as numpy columns, in line (recording) order."""

    start: int  # first day of the window (days since 1970)
    end: int
    subj: Arr  # row of the subject in the population table
    typ: Arr  # index into RECORD_KINDS
    day: Arr  # occurred_at, days since 1970
    rec: Arr  # recorded day
    prov: Arr  # index into PROVIDERS
    op: Arr  # OP_RECORD, OP_RETRACT, OP_AMEND
    target: Arr  # line a correction refers to, else -1
    token: Arr  # index into _TOKENS
    year: Arr  # year of the reference number
    seq: Arr  # number within (provider, token, year)
    a: Arr  # first attribute of the type (-1: absent); codes for severity and repeat
    b: Arr  # second attribute of the type

    @property
    def lines(self) -> int:
        """Number of lines."""
        return len(self.subj)


def _delays(rng: np.random.Generator, typ: Arr) -> Arr:
    """Days from occurrence to recording: geometric with the type's mean, capped."""
    # floor(Exp(1) / lambda) is geometric with mean 1 / (e^lambda - 1).
    mean = np.array([k.delay for k in RECORD_KINDS], np.float64)
    lam = np.log1p(1 / mean)[typ]
    cap = np.array([_COURT_DELAY_CAP if k.provider is None else _DELAY_CAP for k in RECORD_KINDS])
    delay: Arr = np.minimum(rng.standard_exponential(len(typ)) / lam, cap[typ]).astype(np.int32)
    return delay


def plan_feed(cfg: CityConfig, population: pa.Table | None = None) -> FeedPlan:
    """Draw the city's records, corrections, ordering and references (no strings yet)."""
    population = generate_population(cfg) if population is None else population
    traits = subject_traits(population)
    rng = cfg.rng(STREAM_FEEDS)
    start, end = day_number(cfg.start) + 1, day_number(cfg.end)
    draw = _Draw(rng, traits, start, end)
    _draw_people(draw)
    _draw_organisations(draw)
    _draw_public_bodies(draw)
    cols = {k: np.concatenate([p[k] for p in draw.parts]) for k in draw.parts[0]}
    n = len(cols["subj"])
    cols["rec"] = np.minimum(cols["day"] + _delays(rng, cols["typ"]), end)
    cols["op"] = np.full(n, OP_RECORD, np.int8)

    # Corrections: a retraction repeats the record; an amendment corrects it.
    u = rng.random(n)
    fixable = ~cols.pop("locked")
    retract = np.flatnonzero(fixable & (u < RETRACT_SHARE))
    amend = np.flatnonzero(fixable & (u >= RETRACT_SHARE) & (u < RETRACT_SHARE + AMEND_SHARE))
    fixed = np.concatenate([retract, amend])
    fix = {k: v[fixed] for k, v in cols.items()}
    _amend(rng, fix, len(retract))
    fix["rec"] = np.minimum(fix["rec"] + 1 + rng.geometric(1 / 20, len(fixed)), end)
    fix["op"] = np.repeat(np.array([OP_RETRACT, OP_AMEND], np.int8), [len(retract), len(amend)])
    cols = {k: np.concatenate([v, fix[k].astype(v.dtype)]) for k, v in cols.items()}
    total = len(cols["op"])

    # Line order: recording day, originals before corrections; within that, a
    # shuffle. A stable sort of a shuffled index is deterministic.
    shuffled = rng.permutation(total)
    key = (cols["rec"][shuffled].astype(np.int64) - start) * 2 + (cols["op"][shuffled] > 0)
    narrow = np.uint16 if total == 0 or key.max() < 2**16 else np.int64
    order = shuffled[np.argsort(key.astype(narrow), kind="stable")]  # a radix sort for uint16
    del key, shuffled
    position = np.empty(total, np.int64)
    position[order] = np.arange(total)
    cols = {k: v[order] for k, v in cols.items()}
    cols["target"] = np.full(total, -1, np.int64)
    cols["target"][position[n:]] = position[fixed]  # correction line -> corrected line

    # Reference numbers count up per provider, court word and year, in line order.
    court = cols["prov"] < _N_COURTS
    token_of = np.array([_TOKENS.index(k.token) for k in RECORD_KINDS], np.int8)
    token = np.where(court, token_of[cols["typ"]], 0).astype(np.int8)
    token[court & (cols["op"] > 0)] = _TOKENS.index("corr")
    year = cols["rec"].astype("datetime64[D]").astype("datetime64[Y]").astype(np.int64) + 1970
    span = _year_of(end) - _year_of(start) + 1
    group = (cols["prov"].astype(np.int64) * len(_TOKENS) + token) * span + year - _year_of(start)
    small = np.int16 if len(PROVIDERS) * len(_TOKENS) * span < 2**15 else np.int64
    by_group = np.argsort(group.astype(small), kind="stable")  # a radix sort for int16
    sorted_group = group[by_group]
    first = np.flatnonzero(np.r_[True, sorted_group[1:] != sorted_group[:-1]])
    seq = np.empty(total, np.int32)
    seq[by_group] = np.arange(total) - np.repeat(first, np.diff(np.r_[first, total])) + 1
    return FeedPlan(
        start=start,
        end=end,
        token=token,
        year=year.astype(np.int16),
        seq=seq,
        **cols,
    )


def _amend(rng: np.random.Generator, fix: dict[str, Arr], retractions: int) -> None:
    """Turn the copies after the first ``retractions`` into corrected records.

    A correction moves the date forward by up to a week (never past the day the
    original was recorded, so it stays after birth and within the window),
    rescales amounts, hours and head counts, and changes a severity.
    """
    m = slice(retractions, None)
    n = len(fix["subj"]) - retractions
    fix["day"][m] = np.minimum(fix["day"][m] + rng.integers(0, 8, n), fix["rec"][m])
    style = _SLOT_STYLE[fix["typ"][m]]
    for slot in "ab":
        v = fix[slot][m]
        at = style[:, "ab".index(slot)]
        scaled = np.maximum(np.rint(v * rng.uniform(0.7, 1.3, n)), 1).astype(np.int64)
        other = (v + rng.integers(1, len(SEVERITIES), n)) % len(SEVERITIES)
        v = np.where((at == _STYLES.index("int")) & (v > 0), scaled, v)
        fix[slot][m] = np.where((at == _STYLES.index("severity")) & (v >= 0), other, v)


# -- strings ------------------------------------------------------------------


class _Text:
    """Turns plan lines into interchange columns and JSON lines (string fragments cached)."""

    def __init__(self, plan: FeedPlan, population: pa.Table) -> None:
        self.plan = plan
        self.population = population
        self.subject = {
            c: population.column(c).combine_chunks() for c in ("scheme", "id", "kind", "name")
        }
        self.providers = pa.array(PROVIDERS)
        self.types = pa.array([k.code for k in RECORD_KINDS])
        court_pre = ["(" for _ in COURTS]
        court_mid = [f"){c[-4:]}-" for c in DISTRICTS]
        self.pre = pa.array(court_pre + [f"{_PREFIX[p]}-" for p in PROVIDERS[_N_COURTS:]])
        self.mid = pa.array(court_mid + ["-" for _ in PROVIDERS[_N_COURTS:]])
        self.tokens = pa.array([f"{t}-" if t else "" for t in _TOKENS])
        kinds = RECORD_KINDS
        self.keys = [
            pa.array([f',"{k.attributes[s]}":' if len(k.attributes) > s else "" for k in kinds])
            for s in (0, 1)
        ]
        self.evidence = self._manifests()
        self._subject_json: pa.Array | None = None

    def _manifests(self) -> pa.Array:
        """sha256 of each provider's submission on each day of the window."""
        days = range(self.plan.start, self.plan.end + 1)
        out = []
        for name in PROVIDERS:
            for d in days:
                when = EPOCH + datetime.timedelta(days=d)
                out.append("sha256:" + hashlib.sha256(f"{name}/{when}".encode()).hexdigest())
        return pa.array(out)

    def refs(self, idx: Arr) -> pa.Array:
        """Provider references of lines ``idx``."""
        p = self.plan
        prov = p.prov[idx]
        seq = pa.array(p.seq[idx])
        court = pa.array(prov < _N_COURTS)
        number = pc.if_else(
            court,
            pc.utf8_lpad(pc.cast(seq, pa.string()), 5, "0"),
            pc.utf8_lpad(pc.cast(seq, pa.string()), 6, "0"),
        )
        return pc.binary_join_element_wise(
            pc.take(self.pre, prov),
            pc.cast(pa.array(p.year[idx]), pa.string()),
            pc.take(self.mid, prov),
            pc.take(self.tokens, p.token[idx]),
            number,
            "",
        )

    def attributes(self, idx: Arr) -> pa.Array:
        """The ``attributes`` JSON object of lines ``idx``, with only the keys each type has."""
        typ = self.plan.typ[idx]
        pieces: list[pa.Array] = []
        for slot, values in enumerate((self.plan.a[idx], self.plan.b[idx])):
            present = values >= 0
            if not present.any():
                continue
            text = pc.cast(pa.array(values), pa.string())
            style = _SLOT_STYLE[typ, slot]
            for code, words in ((1, [f'"{s}"' for s in SEVERITIES]), (2, ["false", "true"])):
                coded = present & (style == code)
                if coded.any():
                    word = pc.take(pa.array(words), np.where(coded, values, 0))
                    text = pc.if_else(pa.array(coded), word, text)
            keyed = pc.binary_join_element_wise(pc.take(self.keys[slot], typ), text, "")
            pieces.append(pc.if_else(pa.array(present), keyed, ""))
        if not pieces:
            return pa.repeat(pa.scalar("{}"), len(idx))
        # Each piece starts with a comma: drop the first one.
        body = pc.binary_join_element_wise(*pieces, "") if len(pieces) > 1 else pieces[0]
        return pc.binary_join_element_wise("{", pc.utf8_slice_codeunits(body, 1), "}", "")

    def corrections(self, idx: Arr) -> tuple[pa.Array, pa.Array]:
        """``retracts`` and ``amends`` of lines ``idx`` (null where the line corrects nothing)."""
        p = self.plan
        op = p.op[idx]
        fixes = np.flatnonzero(op > 0)
        target_refs = self.refs(p.target[idx][fixes])
        at = np.full(len(idx), -1, np.int64)
        at[fixes] = np.arange(len(fixes))
        out = []
        for code in (OP_RETRACT, OP_AMEND):
            where = pa.array(np.where(op == code, at, 0), mask=op != code)
            out.append(pc.take(target_refs, where))
        return out[0], out[1]

    def table(self, lo: int, hi: int) -> pa.Table:
        """Interchange rows ``lo:hi`` with flattened subject columns."""
        p, idx = self.plan, np.arange(lo, hi)
        subj = p.subj[idx]
        retracts, amends = self.corrections(idx)
        columns = [
            pc.take(self.providers, p.prov[idx]),
            self.refs(idx),
            *(pc.take(self.subject[c], subj) for c in ("scheme", "id", "kind", "name")),
            pc.take(self.types, p.typ[idx]),
            pa.array(p.day[idx], pa.int32()).cast(pa.date32()),
            self.attributes(idx),
            pc.take(self.evidence, self._evidence_at(idx)),
            retracts,
            amends,
        ]
        return pa.Table.from_arrays(
            [c.combine_chunks() if isinstance(c, pa.ChunkedArray) else c for c in columns],
            schema=FEED_SCHEMA,
        )

    def _evidence_at(self, idx: Arr) -> Arr:
        p = self.plan
        days = p.end - p.start + 1
        at: Arr = p.prov[idx].astype(np.int64) * days + (p.rec[idx] - p.start)
        return at

    def subject_json(self) -> pa.Array:
        """Each subject's ``"subject":{...}`` fragment (built once, before the threads start)."""
        if self._subject_json is not None:
            return self._subject_json
        s = self.subject
        out: pa.Array = pc.binary_join_element_wise(
            ',"subject":{"scheme":"',
            s["scheme"],
            '","id":"',
            s["id"],
            '","kind":"',
            s["kind"],
            '","name":"',
            s["name"],
            '"}',
            "",
        )
        self._subject_json = out
        return out

    def jsonl(self, lo: int, hi: int) -> pa.Array:
        """JSON lines ``lo:hi``, each ending in a newline."""
        p, idx = self.plan, np.arange(lo, hi)
        retracts, amends = self.corrections(idx)
        fix = pc.if_else(
            pc.is_null(retracts),
            pc.if_else(
                pc.is_null(amends),
                "",
                pc.binary_join_element_wise(',"amends":"', amends, '"', ""),
            ),
            pc.binary_join_element_wise(',"retracts":"', retracts, '"', ""),
        )
        head = pa.array([f'{{"provider":"{name}","ref":"' for name in PROVIDERS])
        kind = pa.array([f',"type":"{k.code}","occurred_at":"' for k in RECORD_KINDS])
        return pc.binary_join_element_wise(
            pc.take(head, p.prov[idx]),
            self.refs(idx),
            '"',
            pc.take(self.subject_json(), p.subj[idx]),
            pc.take(kind, p.typ[idx]),
            pc.cast(pa.array(p.day[idx], pa.int32()).cast(pa.date32()), pa.string()),
            '","attributes":',
            self.attributes(idx),
            ',"evidence":"',
            pc.take(self.evidence, self._evidence_at(idx)),
            '"',
            fix,
            "}\n",
            "",
        )


FEED_SCHEMA: Final = pa.schema(
    [(name, pa.string()) for name in ("provider", "ref", "subject.scheme", "subject.id",
                                      "subject.kind", "subject.name", "type")]
    + [("occurred_at", pa.date32())]
    + [(name, pa.string()) for name in ("attributes", "evidence", "retracts", "amends")]
)  # fmt: skip
"""Columns of an interchange table (CSV and Parquet files have the same)."""

CHUNK_LINES: Final = 100_000


def _chunks(total: int, size: int = CHUNK_LINES) -> list[tuple[int, int]]:
    return [(lo, min(lo + size, total)) for lo in range(0, total, size)] or [(0, 0)]


def _in_order(fn: Callable[[int, int], Any], chunks: list[tuple[int, int]]) -> Iterator[Any]:
    """Results of ``fn`` over ``chunks`` in order, two at a time (pyarrow releases the GIL)."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        pending: deque[Future[Any]] = deque()
        for lo, hi in chunks:
            pending.append(pool.submit(fn, lo, hi))
            if len(pending) > 2:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def generate_feed(
    cfg: CityConfig, population: pa.Table | None = None, *, chunk_lines: int = CHUNK_LINES
) -> pa.Table:
    """The city's feed as interchange rows (flattened ``subject.*`` columns), in line order."""
    population = generate_population(cfg) if population is None else population
    text = _Text(plan_feed(cfg, population), population)
    tables = list(_in_order(text.table, _chunks(text.plan.lines, chunk_lines)))
    return pa.concat_tables(tables).combine_chunks()


@dataclass(frozen=True)
class FeedSummary:
    """What :func:`write_feed` wrote: line counts by type and provider, corrections, size."""

    path: Path
    fmt: str
    lines: int
    retractions: int
    amendments: int
    by_type: dict[str, int]
    by_provider: dict[str, int]
    bytes: int


def _summary(plan: FeedPlan, path: Path, fmt: str) -> FeedSummary:
    def counts(values: Arr, names: tuple[str, ...]) -> dict[str, int]:
        c = np.bincount(values.astype(np.int64), minlength=len(names))
        return {name: int(k) for name, k in zip(names, c, strict=True) if k}

    return FeedSummary(
        path=path,
        fmt=fmt,
        lines=plan.lines,
        retractions=int((plan.op == OP_RETRACT).sum()),
        amendments=int((plan.op == OP_AMEND).sum()),
        by_type=counts(plan.typ, tuple(k.code for k in RECORD_KINDS)),
        by_provider=counts(plan.prov, PROVIDERS),
        bytes=path.stat().st_size,
    )


def write_feed(
    cfg: CityConfig,
    path: Path,
    fmt: Format,
    progress: Progress | None = None,
    *,
    population: pa.Table | None = None,
    chunk_lines: int = CHUNK_LINES,
) -> FeedSummary:
    """Write the city's feed to ``path`` as JSON Lines, CSV or Parquet; same config, same bytes."""
    if fmt not in ("jsonl", "csv", "parquet"):
        raise ValueError(f"format must be 'jsonl', 'csv' or 'parquet', got {fmt!r}")
    population = generate_population(cfg) if population is None else population
    plan = plan_feed(cfg, population)
    text = _Text(plan, population)
    if fmt == "jsonl":
        text.subject_json()
    chunks = _chunks(plan.lines, chunk_lines)
    done = 0
    with open(path, "wb") as out:
        if fmt == "jsonl":
            for lines in _in_order(text.jsonl, chunks):
                out.write(_string_bytes(lines))
                done += len(lines)
                if progress:
                    progress(done, plan.lines)
        elif fmt == "csv":
            options = pacsv.WriteOptions(quoting_style="needed")
            with pacsv.CSVWriter(out, FEED_SCHEMA, write_options=options) as writer:
                for table in _in_order(text.table, chunks):
                    writer.write_table(table)
                    done += table.num_rows
                    if progress:
                        progress(done, plan.lines)
        else:
            with pq.ParquetWriter(out, FEED_SCHEMA, compression="zstd") as pwriter:
                for table in _in_order(text.table, chunks):
                    pwriter.write_table(table, row_group_size=chunk_lines)
                    done += table.num_rows
                    if progress:
                        progress(done, plan.lines)
    return _summary(plan, path, fmt)


def _string_bytes(arr: pa.Array) -> memoryview:
    """The UTF-8 bytes of a string array, values back to back (no copies)."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if len(arr) == 0:
        return memoryview(b"")
    offsets = np.frombuffer(arr.buffers()[1], np.int32)[arr.offset : arr.offset + len(arr) + 1]
    return memoryview(arr.buffers()[2])[offsets[0] : offsets[-1]]


# -- the direct columnar form ------------------------------------------------------


RECORDS_SCHEMA: Final = pa.schema(
    [("record_id", pa.int64()), ("subject_id", pa.int64()), ("type", pa.string()),
     ("occurred_at", pa.date32()), ("status", pa.string())]
    + [(f"a_{name}", {"int": pa.int64(), "severity": pa.string(), "bool": pa.bool_()}[style])
       for name, style in ATTRIBUTES.items()]
)  # fmt: skip
"""Columns of the records table :func:`city_arrays` returns."""
STATUSES: Final = ("active", "retracted", "superseded")


def city_arrays(cfg: CityConfig, population: pa.Table | None = None) -> tuple[pa.Table, pa.Table]:
    """(subjects, records) as pyarrow tables; status already reflects retractions and amendments."""
    population = generate_population(cfg) if population is None else population
    plan = plan_feed(cfg, population)
    keep = np.flatnonzero(plan.op != OP_RETRACT)
    status = np.zeros(plan.lines, np.int8)
    status[plan.target[plan.op == OP_RETRACT]] = 1
    status[plan.target[plan.op == OP_AMEND]] = 2
    subject_ids = population.column("subject_id").to_numpy()
    typ = plan.typ[keep]
    columns: list[pa.Array] = [
        pa.array(np.arange(1, len(keep) + 1, dtype=np.int64)),
        pa.array(subject_ids[plan.subj[keep]]),
        pc.take(pa.array([k.code for k in RECORD_KINDS]), typ),
        pa.array(plan.day[keep], pa.int32()).cast(pa.date32()),
        pc.take(pa.array(STATUSES), status[keep]),
    ]
    for name, style in ATTRIBUTES.items():
        v = np.full(len(keep), -1, np.int64)
        for slot, values in enumerate((plan.a, plan.b)):
            codes = [i for i, k in enumerate(RECORD_KINDS) if k.attributes[slot:][:1] == (name,)]
            here = np.isin(typ, codes)
            v[here] = values[keep][here]
        missing = v < 0
        if style == "severity":
            columns.append(pc.take(pa.array(SEVERITIES), pa.array(np.maximum(v, 0), mask=missing)))
        elif style == "bool":
            columns.append(pa.array(v == 1, mask=missing))
        else:
            columns.append(pa.array(v, pa.int64(), mask=missing))
    return population, pa.Table.from_arrays(columns, schema=RECORDS_SCHEMA)


# -- sizing ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _lines_per_person() -> float:
    sample = CityConfig(people=20_000, seed=1)
    return plan_feed(sample).lines / sample.people


def expected_records(people: int) -> int:
    """Roughly how many feed lines a default city of ``people`` people has (from a sample)."""
    return round(people * _lines_per_person())


def people_for_records(records: int) -> int:
    """Roughly how many people a default city needs for ``records`` feed lines."""
    return math.ceil(records / _lines_per_person())
