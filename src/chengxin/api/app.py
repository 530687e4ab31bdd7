"""The FastAPI app factory: engines, settings and ports are built here, never at import time."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI
from sqlalchemy import Engine

from chengxin.api import errors, metrics, middleware
from chengxin.api.settings import Settings
from chengxin.service.clock import Clock, SystemClock
from chengxin.store.checkpoints import Checkpointer
from chengxin.store.db import make_engine, require_current, session_factory


@dataclass
class Runtime:
    """What request handlers reach through ``app.state.runtime``."""

    settings: Settings
    engine: Engine
    clock: Clock
    checkpointer: Checkpointer | None = None
    """Checkpoints the SQLite log when the app owns its engine (store/checkpoints.py)."""


def create_app(
    settings: Settings | None = None,
    *,
    engine: Engine | None = None,
    clock: Clock | None = None,
    freeze_gc: bool = False,
) -> FastAPI:
    """Build the HTTP service on ``settings.db`` (or a given engine and clock, for tests).

    With ``freeze_gc``, what exists once the app has started (modules, the
    app, its state: about 200,000 objects) is moved out of the garbage
    collector's sight (:func:`gc.freeze`), for the process's lifetime.
    """
    settings = settings or Settings.from_env()
    own_engine = engine is None
    engine = engine or make_engine(settings.db, background_checkpoints=True)
    # No commit of a request checkpoints SQLite's log: this thread does (store/checkpoints.py).
    file = engine.url.database if own_engine and engine.dialect.name == "sqlite" else None
    checkpointer = Checkpointer(file) if file and file != ":memory:" else None
    runtime = Runtime(settings, engine, clock or SystemClock(), checkpointer)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        require_current(runtime.engine)
        if checkpointer is not None:
            checkpointer.start()
        if freeze_gc:
            # A full collection otherwise walks every start-up object again: a
            # 140-240 ms pause of the worker each time, against 1-9 ms frozen.
            gc.collect()
            gc.freeze()
        yield
        if checkpointer is not None:
            checkpointer.stop()
        if own_engine:
            runtime.engine.dispose()

    app = FastAPI(
        title="chengxin",
        version="0.1.0",
        description=(
            "An accountable social credit system: every point explained, every entry "
            "contestable, nothing negative kept for ever. Services learn decisions, never "
            "scores or records."
        ),
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    app.state.sessions = session_factory(engine)
    errors.install(app)
    measured = metrics.install(app)  # before the routers' shared state, which reports to it
    from chengxin.api.routers import include_all

    include_all(app)
    from chengxin.web import console, pages

    app.include_router(pages.router)
    app.include_router(console.router)
    middleware.install(app, measured)
    return app


def serve_app() -> FastAPI:
    """The app each ``chengxin serve`` worker runs: settings from the environment, GC frozen."""
    return create_app(freeze_gc=True)
