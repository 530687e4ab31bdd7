"""The ``synth`` and ``demo`` commands: a synthetic city to try chengxin on."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the synthetic-city commands to the CLI."""
