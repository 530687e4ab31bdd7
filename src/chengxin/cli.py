"""Command line interface."""


def main() -> None:
    """Entry point."""
