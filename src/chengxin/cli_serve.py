"""The ``serve`` command: the HTTP API under uvicorn, on loopback unless told otherwise.

Each worker builds its own app from ``chengxin.api.app:serve_app``, which
reads its settings from ``CHENGXIN_*`` environment variables (``--db`` is
passed on as ``CHENGXIN_DB``). With more than one worker, Prometheus samples
go to a directory shared by the workers (``PROMETHEUS_MULTIPROC_DIR``: a
fresh temporary one, removed at exit, unless the variable is set already).
With more than one worker, each listens on a socket of its own
(:mod:`chengxin.api.workers`), so the kernel spreads connections evenly.
Logs are JSON lines on stderr (:mod:`chengxin.api.logging`); uvicorn's own
access log is off, because it prints raw paths.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

DbOpt = Annotated[
    str, typer.Option("--db", envvar="CHENGXIN_DB", help="SQLite file or postgresql:// URL.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print errors as JSON.")]
APP = "chengxin.api.app:serve_app"
"""The app factory each worker calls."""
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


@contextmanager
def metrics_dir(workers: int) -> Iterator[str | None]:
    """The multiprocess metrics directory for ``workers`` (None for one worker)."""
    from chengxin.api.metrics import MULTIPROC_ENV

    given = os.environ.get(MULTIPROC_ENV)
    if given:
        # prometheus_client: the directory must be emptied between runs.
        for stale in Path(given).glob("*.db"):
            stale.unlink()
        yield given
        return
    if workers == 1:
        yield None
        return
    made = tempfile.mkdtemp(prefix="chengxin-metrics-")
    os.environ[MULTIPROC_ENV] = made
    try:
        yield made
    finally:
        os.environ.pop(MULTIPROC_ENV, None)
        shutil.rmtree(made, ignore_errors=True)


def serve(
    db: DbOpt = "chengxin.sqlite",
    host: Annotated[
        str, typer.Option("--host", help="Address to listen on (loopback by default).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="TCP port.")] = 8000,
    workers: Annotated[
        int, typer.Option("--workers", min=1, help="Worker processes (about one per core).")
    ] = 1,
    log_level: Annotated[
        str, typer.Option("--log-level", help="critical, error, warning, info or debug.")
    ] = "info",
    forwarded_allow_ips: Annotated[
        str | None,
        typer.Option(
            "--forwarded-allow-ips",
            help="Proxies (comma-separated addresses, or *) whose X-Forwarded-For is trusted "
            "as the client address; none by default.",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Serve the HTTP API (uvicorn); exit 2 if the database is missing or not initialised."""
    import uvicorn

    from chengxin.api.logging import log_config
    from chengxin.cli import fail, guarded, open_db

    if log_level not in LOG_LEVELS:
        fail(
            f"--log-level must be one of {', '.join(LOG_LEVELS)}, not {log_level!r}",
            2,
            as_json=as_json,
        )
    with guarded(as_json):
        open_db(db)  # refuses a database that is missing or not initialised (exit 2)
    target = db if "://" in db else str(Path(db).resolve())
    os.environ["CHENGXIN_DB"] = target
    options: dict[str, Any] = dict(
        factory=True,
        host=host,
        port=port,
        workers=workers,
        loop="uvloop",
        http="httptools",
        log_config=log_config(log_level),
        log_level=log_level,
        access_log=False,
        # Forwarded headers only from proxies named: uvicorn's default trusts
        # 127.0.0.1 and parses the peer's address on every request to find out.
        proxy_headers=forwarded_allow_ips is not None,
        forwarded_allow_ips=forwarded_allow_ips,
        server_header=False,
        timeout_graceful_shutdown=10,
        # A worker answers the supervisor's ping only once it has imported
        # chengxin (seconds on a busy machine); uvicorn's 5 s would kill it first.
        timeout_worker_healthcheck=30,
    )
    with metrics_dir(workers):
        if workers == 1:
            uvicorn.run(APP, **options)
            return
        from chengxin.api.workers import ReusePortWorkers

        config = uvicorn.Config(APP, **options)
        try:
            supervisor = ReusePortWorkers(config, target=uvicorn.Server(config).run)
        except OSError as exc:
            fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}", 1, as_json=as_json)
        supervisor.run()


def register(app: typer.Typer) -> None:
    """Add the ``serve`` command to the CLI."""
    app.command("serve")(serve)
