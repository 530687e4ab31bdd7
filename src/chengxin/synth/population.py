"""A synthetic city's subjects: people, organisations and public bodies.

Everything is drawn from ``numpy.random.Generator(PCG64(...))`` seeded from
:class:`CityConfig`, so one configuration always gives the same city. The
identifiers are built column-wise with numpy (millions per second) and are
valid under the same rules as :func:`chengxin.domain.identifiers.parse_identifier`:

* people get a ``cn-rid`` (GB 11643-1999): a region code that python-stdnum
  knows *in the birth year* (``known_regions(year)``), a birth date in
  1940-2008, a 3-digit sequence whose parity is the sex (odd: male), and the
  ISO 7064 MOD 11-2 check character;
* organisations and public bodies get a ``cn-uscc`` (GB 32100-2015):
  registration department (``9`` market regulator, ``1`` government organ),
  organisation type, a Beijing district code, a GB 11714 organisation code with
  its own check character, and the mod-31 check character.

The population is a pyarrow table ``subjects(subject_id, scheme, id, kind,
name)``, ordered people, organisations, public bodies, ``subject_id`` from 1.
:func:`subject_traits` reads back what the feeds need (kind, birth date, sex,
region) from that table alone, so a population can be saved and reloaded.
"""

from __future__ import annotations

import datetime
import functools
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from chengxin.domain.identifiers import USCC_ALPHABET, known_regions

I64 = npt.NDArray[np.int64]
I32 = npt.NDArray[np.int32]
I8 = npt.NDArray[np.int8]
Bools = npt.NDArray[np.bool_]

EPOCH: Final = datetime.date(1970, 1, 1)
BIRTH_YEARS: Final = (1940, 2008)
"""First and last birth year of a synthetic person (inclusive)."""

KINDS: Final = ("person", "organisation", "public_body")
"""Subject kinds, in the order of their codes in :class:`SubjectTraits`."""

# Stream numbers under the config's seed: each part of the city draws from its
# own generator, so changing how feeds are drawn never changes the population.
STREAM_PEOPLE, STREAM_ORGS, STREAM_FEEDS = 1, 2, 3


@dataclass(frozen=True)
class CityConfig:
    """Size, seed and time span of a synthetic city (defaults: 10,000 people, 3 years)."""

    people: int = 10_000
    seed: int = 7
    end: datetime.date = datetime.date(2026, 11, 1)
    years: int = 3
    organisations: int | None = None
    public_bodies: int | None = None

    def __post_init__(self) -> None:
        counts = (self.people, self.organisations or 0, self.public_bodies or 0)
        if min(counts) < 0 or self.years < 1:
            raise ValueError(f"need counts >= 0 and years >= 1, got {counts}, {self.years}")
        if self.end.year - self.years <= BIRTH_YEARS[1]:
            # Everyone is then born before the window opens: no record precedes a birth.
            raise ValueError(
                f"the feed window must start after {BIRTH_YEARS[1]}, the last birth year; "
                f"end {self.end} with {self.years} years starts in {self.end.year - self.years}"
            )

    @property
    def n_organisations(self) -> int:
        """Organisations: as configured, else one per 8 people."""
        return self.people // 8 if self.organisations is None else self.organisations

    @property
    def n_public_bodies(self) -> int:
        """Public bodies: as configured, else 0.2% of people (at least 1 if there are people)."""
        if self.public_bodies is not None:
            return self.public_bodies
        return max(1, self.people // 500) if self.people else 0

    @property
    def start(self) -> datetime.date:
        """First day of the feed window: ``end`` minus ``years`` (29 Feb falls back to 28)."""
        try:
            return self.end.replace(year=self.end.year - self.years)
        except ValueError:
            return self.end.replace(year=self.end.year - self.years, day=28)

    def rng(self, stream: int) -> np.random.Generator:
        """The generator for one part of the city (see the ``STREAM_*`` numbers)."""
        return np.random.Generator(np.random.PCG64([self.seed, stream]))


def day_number(d: datetime.date) -> int:
    """Days since 1970-01-01 (the unit of Arrow's ``date32``)."""
    return (d - EPOCH).days


# -- vocabularies (ASCII without quotes or backslashes: the JSON writer relies on it)

SURNAMES: Final = (
    ("Wang", 72), ("Li", 70), ("Zhang", 66), ("Liu", 53), ("Chen", 45), ("Yang", 31),
    ("Huang", 23), ("Zhao", 22), ("Wu", 21), ("Zhou", 20), ("Xu", 17), ("Sun", 15),
    ("Ma", 15), ("Zhu", 14), ("Hu", 13), ("Guo", 12), ("He", 12), ("Lin", 11), ("Gao", 11),
    ("Luo", 10), ("Zheng", 10), ("Liang", 9), ("Xie", 8), ("Song", 7), ("Tang", 7),
)  # fmt: skip
"""Common surnames in pinyin with rough relative frequencies (per thousand)."""
GIVEN_MALE: Final = (
    "Wei", "Qiang", "Lei", "Jun", "Yong", "Jie", "Tao", "Ming", "Chao", "Gang", "Ping", "Hui",
    "Hao", "Yu", "Bo", "Peng", "Hua", "Jian", "Xin", "Haoran", "Zihao", "Yuxuan", "Jianguo",
    "Zhiqiang", "Guangming", "Dawei", "Xiaodong", "Wenbin",
)  # fmt: skip
GIVEN_FEMALE: Final = (
    "Fang", "Na", "Min", "Jing", "Li", "Yan", "Juan", "Xia", "Ting", "Ying", "Hong", "Lan",
    "Yue", "Qian", "Xin", "Xiuying", "Guiying", "Xiulan", "Yuying", "Lina", "Xiaoyan",
    "Shuang", "Yutong", "Zihan", "Meiling", "Huimin", "Jiayi", "Wenjing",
)  # fmt: skip
TRADE_SYLLABLES: Final = (
    "Heng", "Tai", "Xin", "Da", "Hua", "Sheng", "Kang", "Rui", "Jin", "Long", "Feng", "Yuan",
    "Tong", "Cheng", "Hong", "Fu", "An", "Bao", "De", "Ming", "Zhong", "Jia", "Mei", "Yi",
)  # fmt: skip
INDUSTRIES: Final = (
    "Technology", "Trading", "Construction", "Catering Management", "Logistics",
    "Property Management", "Pharmaceutical", "Textile", "Consulting", "Food", "Auto Parts",
    "Education Technology", "Environmental Engineering", "Media", "Electronics", "Hotel",
)  # fmt: skip
SHOPS: Final = ("Noodle House", "Grocery", "Hair Salon", "Hardware Store", "Tea Shop", "Bakery")
BUREAUS: Final = (
    "Housing and Urban-Rural Development Commission", "Education Commission",
    "Transport Commission", "Finance Bureau", "Health Commission",
    "Ecology and Environment Bureau", "Water Authority", "Urban Management Committee",
    "Civil Affairs Bureau", "Human Resources and Social Security Bureau",
)  # fmt: skip

#: Beijing's current districts (GB/T 2260) and rough population weights.
DISTRICTS: Final = {
    "110101": ("Dongcheng", 7), "110102": ("Xicheng", 11), "110105": ("Chaoyang", 35),
    "110106": ("Fengtai", 20), "110107": ("Shijingshan", 6), "110108": ("Haidian", 31),
    "110109": ("Mentougou", 4), "110111": ("Fangshan", 13), "110112": ("Tongzhou", 18),
    "110113": ("Shunyi", 13), "110114": ("Changping", 22), "110115": ("Daxing", 20),
    "110116": ("Huairou", 4), "110117": ("Pinggu", 4), "110118": ("Miyun", 5),
    "110119": ("Yanqing", 3),
}  # fmt: skip
#: Where people are born: Beijing, and the provinces most migrants come from.
BIRTH_PROVINCES: Final = {
    "11": 62, "13": 9, "37": 5, "41": 5, "23": 3, "34": 3, "14": 3, "21": 2, "12": 2,
    "42": 2, "51": 2, "32": 2,
}  # fmt: skip
_BIRTH_YEAR_WEIGHTS: Final = {1940: 0.5, 1950: 0.9, 1960: 1.2, 1970: 1.1, 1980: 1.3, 1990: 1.1}
_LATE_WEIGHT: Final = 0.8  # 2000-2008

# GB 11643-1999 / ISO 7064 MOD 11-2: weights 2^(17-i) mod 11, check from sum mod 11.
_RID_WEIGHTS: Final = np.array([7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2], np.int64)
_RID_CHECK: Final = np.frombuffer(b"10X98765432", np.uint8)
# GB 32100-2015: weights 3^(i-1) mod 31; GB 11714-1997: weights 3 7 9 10 5 8 4 2.
_USCC_WEIGHTS: Final = np.array([pow(3, i, 31) for i in range(17)], np.int64)
_ORG_WEIGHTS: Final = np.array([3, 7, 9, 10, 5, 8, 4, 2], np.int64)
_USCC_ASCII: Final = np.frombuffer(USCC_ALPHABET.encode(), np.uint8)
_BASE36: Final = np.array([int(c, 36) for c in USCC_ALPHABET], np.int64)  # GB 11714 values
_X_INDEX: Final = USCC_ALPHABET.index("X")
_DIGIT0: Final = ord("0")


def _strings(chars: npt.NDArray[np.uint8]) -> pa.StringArray:
    """A pyarrow string array from an (n, width) matrix of ASCII codes, without a copy per row."""
    n, width = chars.shape
    offsets = np.arange(0, (n + 1) * width, width, dtype=np.int32)
    data = np.ascontiguousarray(chars)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data))


def _digits(values: npt.NDArray[Any], width: int) -> npt.NDArray[np.uint8]:
    """Decimal digits of non-negative integers, most significant first: shape (n, width)."""
    v = np.asarray(values, np.int64)
    v = v.astype(np.int32) if width < 10 else v
    out = np.empty((len(v), width), np.uint8)
    for k in range(width - 1, -1, -1):
        out[:, k] = v % 10
        v = v // 10
    return out


def _date_digits(days: I64) -> npt.NDArray[np.uint8]:
    """``YYYYMMDD`` digits of days since 1970: shape (n, 8)."""
    d = days.astype("datetime64[D]")
    year = d.astype("datetime64[Y]").astype(np.int64) + 1970
    month_start = d.astype("datetime64[M]")
    month = month_start.astype(np.int64) % 12 + 1
    day = (d - month_start.astype("datetime64[D]")).astype(np.int64) + 1
    return _digits(year * 10_000 + month * 100 + day, 8)


def rid_strings(region: I64, birth: I32, sequence: I64) -> pa.StringArray:
    """cn-rid values for region codes, birth days (since 1970) and sequences, check included."""
    # Birth dates span a few thousand days and sequences 1000 values: build
    # their digits once per value and index, rather than divide per person.
    first = int(birth.min()) if len(birth) else 0
    days = np.arange(first, (int(birth.max()) + 1) if len(birth) else 1, dtype=np.int64)
    parts = (
        (_digits(region, 6), None, 0),
        (_date_digits(days), (birth - first).astype(np.int64), 6),
        (_digits(np.arange(1000), 3), np.asarray(sequence, np.int64), 14),
    )
    chars = np.empty((len(region), 18), np.uint8)
    total = np.zeros(len(region), np.int64)
    for digits, at, col in parts:
        width = digits.shape[1]
        codes = digits + np.uint8(_DIGIT0)
        sums = digits.astype(np.int64) @ _RID_WEIGHTS[col : col + width]
        chars[:, col : col + width] = codes if at is None else codes[at]
        total += sums if at is None else sums[at]
    chars[:, 17] = _RID_CHECK[total % 11]
    return _strings(chars)


def uscc_strings(dept: I64, org_type: I64, region: I64, body: I64) -> pa.StringArray:
    """cn-uscc values from digit columns, region codes and (n, 8) organisation-code indices.

    ``body`` holds indices into the GB 32100 alphabet; the GB 11714 check
    character (10 written ``X``, 11 written ``0``) and the mod-31 check follow.
    """
    org_sum = _BASE36[body] @ _ORG_WEIGHTS
    org_check = 11 - org_sum % 11
    org_check = np.where(org_check == 10, _X_INDEX, org_check % 11)
    values = np.concatenate(
        [dept[:, None], org_type[:, None], _digits(region, 6), body, org_check[:, None]], axis=1
    )
    check = (31 - (values @ _USCC_WEIGHTS) % 31) % 31
    chars = np.empty((len(dept), 18), np.uint8)
    chars[:, :17] = _USCC_ASCII[values]
    chars[:, 17] = _USCC_ASCII[check]
    return _strings(chars)


# -- people --------------------------------------------------------------


def _birth_years(rng: np.random.Generator, n: int) -> I64:
    span = range(BIRTH_YEARS[0], BIRTH_YEARS[1] + 1)
    years = np.array(span, np.int64)
    weights = np.array([_BIRTH_YEAR_WEIGHTS.get(y - y % 10, _LATE_WEIGHT) for y in span])
    return np.asarray(rng.choice(years, size=n, p=weights / weights.sum()), np.int64)


@functools.lru_cache(maxsize=1024)
def _region_choices(year: int, province: str) -> tuple[I64, npt.NDArray[np.float64]]:
    """County-level codes of ``province`` in use in ``year``, with weights."""
    codes = [c for c in _counties(year) if c.startswith(province)]
    if province == "11":
        weights = [DISTRICTS[c][1] if c in DISTRICTS else 2 for c in codes]
    else:
        weights = [1] * len(codes)
    w = np.array(weights, np.float64)
    return np.array([int(c) for c in codes], np.int64), w / w.sum()


@functools.lru_cache(maxsize=128)
def _counties(year: int) -> tuple[str, ...]:
    """County-level codes (not ending ``00``) of the birth provinces in use in ``year``."""
    return tuple(
        c for c in known_regions(year) if c[:2] in BIRTH_PROVINCES and not c.endswith("00")
    )


def _birth_regions(rng: np.random.Generator, years: I64) -> I64:
    """A region code for each birth year, one python-stdnum knows in that year."""
    provinces = list(BIRTH_PROVINCES)
    pw = np.array(list(BIRTH_PROVINCES.values()), np.float64)
    province = rng.choice(len(provinces), size=len(years), p=pw / pw.sum())
    group = ((years - BIRTH_YEARS[0]) * len(provinces) + province).astype(np.int16)
    order = np.argsort(group, kind="stable")  # a radix sort for 16-bit keys
    keys, starts = np.unique(group[order], return_index=True)
    bounds = [*starts.tolist(), len(order)]
    out = np.empty(len(years), np.int64)
    for i, key in enumerate(keys.tolist()):
        year = BIRTH_YEARS[0] + key // len(provinces)
        codes, weights = _region_choices(year, provinces[key % len(provinces)])
        members = order[bounds[i] : bounds[i + 1]]
        out[members] = codes[rng.choice(len(codes), size=len(members), p=weights)]
    return out


def _unique_sequences(rng: np.random.Generator, region: I64, birth: I32) -> I64:
    """Sequences 0-999 such that no two people share region, birth date and sequence."""
    seq = rng.integers(0, 1000, size=len(region), dtype=np.int64)
    base = (region * 100_000 + birth.astype(np.int64)) * 1000
    key = base + seq
    order = np.argsort(key, kind="stable")
    ordered = key[order]
    repeat = np.zeros(len(key), np.bool_)
    repeat[1:] = ordered[1:] == ordered[:-1]
    taken = ordered[~repeat]  # sorted, distinct
    redo = np.sort(order[repeat])  # the later holders of a key draw again
    while len(redo):
        fresh = base[redo] + rng.integers(0, 1000, size=len(redo), dtype=np.int64)
        at = np.searchsorted(taken, fresh)
        clash = taken[np.minimum(at, len(taken) - 1)] == fresh
        _, first = np.unique(fresh, return_index=True)
        ok = ~clash & np.isin(np.arange(len(fresh)), first)
        seq[redo[ok]] = fresh[ok] - base[redo[ok]]
        taken = np.sort(np.concatenate([taken, fresh[ok]]))
        redo = redo[~ok]
    return seq


def _people(cfg: CityConfig) -> dict[str, pa.Array]:
    rng = cfg.rng(STREAM_PEOPLE)
    n = cfg.people
    years = _birth_years(rng, n)
    jan1 = (years - 1970).astype("datetime64[Y]").astype("datetime64[D]").astype(np.int64)
    leap = (years % 4 == 0) & ((years % 100 != 0) | (years % 400 == 0))
    birth = (jan1 + (rng.random(n) * (365 + leap)).astype(np.int64)).astype(np.int32)
    region = _birth_regions(rng, years)
    seq = _unique_sequences(rng, region, birth)
    male = seq % 2 == 1
    sw = np.array([w for _, w in SURNAMES], np.float64)
    surname = pc.take(
        pa.array([s for s, _ in SURNAMES]), rng.choice(len(SURNAMES), size=n, p=sw / sw.sum())
    )
    given_m = rng.integers(0, len(GIVEN_MALE), size=n)
    given_f = rng.integers(0, len(GIVEN_FEMALE), size=n)
    given = pc.if_else(
        pa.array(male),
        pc.take(pa.array(GIVEN_MALE), given_m),
        pc.take(pa.array(GIVEN_FEMALE), given_f),
    )
    return {
        "scheme": pa.repeat(pa.scalar("cn-rid"), n),
        "id": rid_strings(region, birth, seq),
        "kind": pa.repeat(pa.scalar("person"), n),
        "name": pc.binary_join_element_wise(surname, given, " "),
    }


# -- organisations and public bodies ---------------------------------------


def _org_bodies(rng: np.random.Generator, n: int) -> I64:
    """(n, 8) distinct GB 11714 code bodies: newer ``MA`` codes, older all-digit ones."""
    body = rng.integers(0, 31, size=(n, 8), dtype=np.int64)
    legacy = rng.random(n) < 0.3
    body[legacy] = body[legacy] % 10
    body[~legacy, 0] = USCC_ALPHABET.index("M")
    body[~legacy, 1] = USCC_ALPHABET.index("A")
    powers = 31 ** np.arange(8, dtype=np.int64)
    while True:
        _, first = np.unique(body @ powers, return_index=True)
        if len(first) == n:
            return body
        dup = np.ones(n, np.bool_)
        dup[first] = False
        body[dup, 2:] = rng.integers(0, 10, size=(int(dup.sum()), 6), dtype=np.int64)


def _bodies(cfg: CityConfig) -> dict[str, pa.Array]:
    rng = cfg.rng(STREAM_ORGS)
    n_org, n_pub = cfg.n_organisations, cfg.n_public_bodies
    n = n_org + n_pub
    codes = list(DISTRICTS)
    dw = np.array([w for _, w in DISTRICTS.values()], np.float64)
    district = rng.choice(len(codes), size=n, p=dw / dw.sum())
    region = np.array([int(c) for c in codes], np.int64)[district]
    # GB 32100 Annex: department 9 (market regulation) types 1 enterprise,
    # 2 individual business, 3 farmers' co-operative; department 1 type 1 organ.
    org_type = np.concatenate(
        [rng.choice(3, size=n_org, p=[0.85, 0.12, 0.03]) + 1, np.ones(n_pub, np.int64)]
    )
    dept = np.concatenate([np.full(n_org, 9, np.int64), np.ones(n_pub, np.int64)])
    municipal = np.concatenate([np.zeros(n_org, np.bool_), rng.random(n_pub) < 0.25])
    region = np.where(municipal, 110000, region)
    ids = uscc_strings(dept, org_type, region, _org_bodies(rng, n))

    syl = pa.array(TRADE_SYLLABLES)
    trade = pc.binary_join_element_wise(
        pc.take(syl, rng.integers(0, len(syl), n)),
        pc.utf8_lower(pc.take(syl, rng.integers(0, len(syl), n))),
        "",
    )
    dname = pc.take(pa.array([d for d, _ in DISTRICTS.values()]), pa.array(district))
    industry = pc.take(pa.array(INDUSTRIES), rng.integers(0, len(INDUSTRIES), n))
    shop = pc.take(pa.array(SHOPS), rng.integers(0, len(SHOPS), n))
    bureau = pc.take(pa.array(BUREAUS), rng.integers(0, len(BUREAUS), n))
    kind_code = np.where(dept == 1, 4, org_type) + np.where(municipal, 1, 0)
    name = pc.choose(
        pa.array(kind_code - 1),
        pc.binary_join_element_wise("Beijing", trade, industry, "Co., Ltd.", " "),
        pc.binary_join_element_wise(dname, trade, shop, " "),
        pc.binary_join_element_wise(dname, trade, "Farmers' Co-operative", " "),
        pc.binary_join_element_wise(dname, "District", bureau, " "),
        pc.binary_join_element_wise("Beijing Municipal", bureau, " "),
    )
    return {
        "scheme": pa.repeat(pa.scalar("cn-uscc"), n),
        "id": ids,
        "kind": pc.if_else(pa.array(dept == 1), "public_body", "organisation"),
        "name": name,
    }


SUBJECTS_SCHEMA: Final = pa.schema(
    [
        ("subject_id", pa.int64()),
        ("scheme", pa.string()),
        ("id", pa.string()),
        ("kind", pa.string()),
        ("name", pa.string()),
    ]
)
"""Columns of a population table."""


def generate_population(cfg: CityConfig) -> pa.Table:
    """The city's subjects: ``subjects(subject_id, scheme, id, kind, name)``, ids unique."""
    people, bodies = _people(cfg), _bodies(cfg)
    n = cfg.people + cfg.n_organisations + cfg.n_public_bodies
    columns: list[pa.Array | pa.ChunkedArray] = [pa.array(np.arange(1, n + 1, dtype=np.int64))]
    for name in SUBJECTS_SCHEMA.names[1:]:
        columns.append(pa.chunked_array([people[name], bodies[name]], pa.string()))
    return pa.Table.from_arrays(columns, schema=SUBJECTS_SCHEMA).combine_chunks()


@dataclass(frozen=True)
class SubjectTraits:
    """What the feeds need to know of each subject, as numpy columns in table order."""

    kind: I8  # index into KINDS
    birth: I32  # days since 1970 (people); INT32_MIN otherwise
    male: Bools
    region: I64  # cn-rid birth region or cn-uscc division code
    org_type: I8  # cn-uscc character 2 (0 for people)

    @property
    def size(self) -> int:
        """Number of subjects."""
        return len(self.kind)


def subject_traits(population: pa.Table) -> SubjectTraits:
    """Kind, birth date, sex and region of every subject, read from its identifier."""
    ids = population.column("id").combine_chunks()
    kinds = population.column("kind").combine_chunks()
    kind = np.full(len(ids), -1, np.int8)
    for code, name in enumerate(KINDS):
        kind[pc.equal(kinds, name).to_numpy(zero_copy_only=False)] = code
    if (kind < 0).any():
        raise ValueError("population has a subject kind outside " + ", ".join(KINDS))
    # Every cn-rid and cn-uscc has 18 ASCII characters: read them as a byte matrix.
    offsets = np.frombuffer(ids.buffers()[1], np.int32)[ids.offset : ids.offset + len(ids) + 1]
    if ids.null_count or np.any(np.diff(offsets) != 18):
        raise ValueError("population identifiers must all have 18 characters")
    raw = np.frombuffer(ids.buffers()[2], np.uint8)[offsets[0] : offsets[-1]]
    chars = raw.reshape(len(ids), 18)

    def number(first: int, last: int) -> I64:
        out = np.zeros(len(ids), np.int64)
        for c in range(first, last):
            out = out * 10 + (chars[:, c] - np.uint8(_DIGIT0))
        return out

    person = kind == 0
    # cn-rid: region 1-6, birth date 7-14, sex the parity of 17 (GB 11643);
    # cn-uscc: organisation type 2, division code 3-8 (GB 32100).
    ymd = np.where(person, number(6, 14), 19700101)
    months = (ymd // 10_000 - 1970) * 12 + ymd // 100 % 100 - 1
    first_of_month = months.astype("datetime64[M]").astype("datetime64[D]").astype(np.int64)
    birth = np.where(person, first_of_month + ymd % 100 - 1, np.iinfo(np.int32).min)
    return SubjectTraits(
        kind=kind,
        birth=birth.astype(np.int32),
        male=person & (chars[:, 16] % 2 == 1),
        region=np.where(person, number(0, 6), number(2, 8)),
        org_type=np.where(person, 0, chars[:, 1] - np.uint8(_DIGIT0)).astype(np.int8),
    )
