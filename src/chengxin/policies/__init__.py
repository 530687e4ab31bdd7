"""The policy packs chengxin ships: YAML files beside this module, loaded and linted."""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from chengxin.domain.policy import Policy
from chengxin.domain.policy_load import load_policy_text

SUFFIX = ".yaml"


def pack_names() -> list[str]:
    """The names of the shipped packs, e.g. ``['city-points', 'driving-points', 'national']``."""
    return sorted(
        entry.name.removesuffix(SUFFIX)
        for entry in files(__name__).iterdir()
        if entry.is_file() and entry.name.endswith(SUFFIX)
    )


def pack_text(name: str) -> str:
    """The YAML text of one shipped pack; :class:`KeyError` if there is none of that name."""
    if name not in pack_names():
        raise KeyError(f"no policy pack {name!r}; shipped: {', '.join(pack_names())}")
    return files(__name__).joinpath(name + SUFFIX).read_text(encoding="utf-8")


@cache
def load_pack(name: str) -> Policy:
    """Load, validate and lint one shipped pack (a :class:`PolicyError` if it is refused)."""
    return load_policy_text(pack_text(name), source=name + SUFFIX)
