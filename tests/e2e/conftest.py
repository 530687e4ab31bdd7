"""Browser tests: Debian's Chromium driven by Playwright against a live server on loopback.

Each test gets a real uvicorn server in a thread on its own SQLite database
(the national policy active, the test clock) and a fresh browser context.
Chromium is Debian's (``/usr/bin/chromium``, or ``$CHENGXIN_CHROMIUM``);
``.ci/run`` installs it. Without it these tests skip, except under CI, where
they fail: a browser test that never runs proves nothing.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from argon2 import PasswordHasher
from sqlalchemy import Engine

from chengxin.api.app import create_app
from chengxin.api.settings import Settings
from chengxin.domain.policy import Policy
from chengxin.service import principals as principals_module
from chengxin.service.clock import FixedClock

CHROMIUM = os.environ.get("CHENGXIN_CHROMIUM", "/usr/bin/chromium")


@pytest.fixture
def backend() -> str:
    """Browser tests run on SQLite only: the pages' data path is tested on both in tests/api."""
    return "sqlite"


@pytest.fixture(autouse=True)
def cheap_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    """argon2 at its cheapest: hashes carry their parameters, so nothing else changes."""
    monkeypatch.setattr(
        principals_module, "HASHER", PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    )


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def live_server(engine: Engine, clock: FixedClock, policy: Policy, db_url: str) -> Iterator[str]:
    """The app served by uvicorn on 127.0.0.1 in a thread; its base URL."""
    app = create_app(Settings(db=db_url, session_secret="e2e-secret"), engine=engine, clock=clock)
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium, headless, for one test module.

    Playwright's sync API runs an event loop on the main thread while it is
    open; it must be closed before other modules' tests start their own.
    """
    if not (shutil.which(CHROMIUM) or os.path.exists(CHROMIUM)):
        if os.environ.get("CI"):
            pytest.fail(f"Chromium is not at {CHROMIUM}: .ci/run installs Debian's chromium")
        pytest.skip(f"Chromium is not at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
        )
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A page in a fresh browser context (no cookies), 1100 px wide."""
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    context.set_default_timeout(15_000)
    pg = context.new_page()
    yield pg
    context.close()
