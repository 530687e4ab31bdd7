"""``POST /v1/checks`` through the ASGI app in process: CPU a request, by thread, vs ``/healthz``.

No sockets and no HTTP parsing: the app is called directly, ``--concurrency``
requests at a time on one uvloop, so what is measured is the route itself --
FastAPI, authentication, the decision, the audit writer -- and how its
threads share one interpreter. The baseline is the bare health route,
driven the same way in the same run. Figures are CPU seconds (``/proc``),
not wall time, and are noisy to about ±15 % between runs on a shared host:
compare runs interleaved.

    .venv/bin/python bench/bench_check_route.py [--requests 20000] [--repeats 3]

With ``--callgrind`` it counts instructions instead, which do not depend on
what else the host is doing (run it under valgrind; it switches the count
on around each measured phase only, so start-up is not counted):

    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=/tmp/cg.%p \
        .venv/bin/python bench/bench_check_route.py --callgrind --requests 1000 --repeats 1

It needs the database of ``bench/bench_api.py`` (built there, or here with
``--rebuild``); it registers fresh service keys and appends audit events to it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_api

from chengxin.api.app import create_app
from chengxin.api.settings import Settings

Request = tuple[str, str, list[tuple[bytes, bytes]], bytes]


def process_cpu() -> float:
    """CPU seconds of this process so far."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def thread_cpu() -> dict[str, float]:
    """CPU seconds of each live thread, by name."""
    tick = os.sysconf("SC_CLK_TCK")
    names = {t.native_id: t.name for t in threading.enumerate()}
    out: dict[str, float] = {}
    for tid in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{tid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        out[names.get(int(tid), tid)] = (int(fields[11]) + int(fields[12])) / tick
    return out


def parse(raw: bytes) -> Request:
    """An HTTP/1.1 request as bench_api writes it, as ASGI parts."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    method, path, _ = lines[0].split(b" ")
    headers = []
    for line in lines[1:]:
        key, value = line.split(b": ", 1)
        headers.append((key.lower(), value))
    return method.decode(), path.decode(), headers, body


async def drive(
    app: Any, make: Callable[[int], Request], n: int, concurrency: int, warm_up: int = 200
) -> dict[str, Any]:
    """``n`` requests, ``concurrency`` at a time; CPU per request, in all and by thread."""

    async def call(method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes) -> int:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": headers,
            "client": ("127.0.0.1", 5000),
            "server": ("127.0.0.1", 80),
            "state": {},
        }
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:  # the app asks again only to learn of a disconnect
                await asyncio.sleep(3600)
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        status: list[int] = []

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])

        await app(scope, receive, send)
        return status[0]

    for i in range(min(warm_up, n)):  # warm up
        await call(*make(i))
    statuses: dict[int, int] = {}
    queue = list(range(n))

    async def worker() -> None:
        while queue:
            status = await call(*make(queue.pop()))
            statuses[status] = statuses.get(status, 0) + 1

    threads0, cpu0, t0 = thread_cpu(), process_cpu(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    cpu1, t1, threads1 = process_cpu(), time.perf_counter(), thread_cpu()
    by_thread = {
        name: round(1e6 * (spent - threads0.get(name, 0.0)) / n)
        for name, spent in threads1.items()
        if spent - threads0.get(name, 0.0) > 0
    }
    return {
        "per_s": round(n / (t1 - t0)),
        "cpu_us": round(1e6 * (cpu1 - cpu0) / n),
        "by_thread_us": by_thread,
        "statuses": statuses,
    }


class Callgrind:
    """Instructions of a phase, from callgrind (this process runs under ``valgrind``)."""

    def __init__(self) -> None:
        self.phases = 0

    def _control(self, *args: str) -> None:
        subprocess.run(
            ["callgrind_control", *args, str(os.getpid())], check=True, capture_output=True
        )

    def start(self) -> None:
        """Count from now (the counters zeroed)."""
        self._control("-z")
        self._control("-i", "on")

    def stop(self) -> int:
        """Stop counting; the instructions since :meth:`start`, from the dump callgrind writes."""
        self._control("-i", "off")
        self._control("-d")
        self.phases += 1  # dumps are numbered from 1, after the file the docstring names
        for line in Path(f"/tmp/cg.{os.getpid()}.{self.phases}").read_text().splitlines():
            if line.startswith("totals:"):
                return int(line.split()[1])
        raise SystemExit("no totals in the callgrind dump: see the module's docstring")


async def measure(
    app: Any, make: Callable[[int], Request], args: argparse.Namespace, counter: Callgrind | None
) -> dict[str, Any]:
    """:func:`drive`, with the instructions a request when ``counter`` is given."""
    if counter is None:
        return await drive(app, make, args.requests, args.concurrency)
    await drive(app, make, min(200, args.requests), args.concurrency)  # warm up, not counted
    counter.start()
    got = await drive(app, make, args.requests, args.concurrency, warm_up=0)
    got["instructions"] = round(counter.stop() / args.requests)
    return got


async def main(args: argparse.Namespace) -> None:
    """Health, then checks, ``--repeats`` times, on one app."""
    db = str(args.db)
    if args.rebuild or not Path(db).exists():
        bench_api.build(db, args.people)
    run = time.strftime("%Y%m%dT%H%M%S")
    keys = bench_api.register(db, "route " + run, set())
    known = bench_api.known_subjects(db, 50_000, seed=3)
    checks = [parse(r) for r in bench_api.check_requests(known, keys, 5_000)]
    health: Request = ("GET", "/healthz", [], b"")
    app = create_app(Settings.from_env(db=db))
    print(f"{args.requests:,} requests a phase, {args.concurrency} at a time, on {db}")
    counter = Callgrind() if args.callgrind else None
    cost = "instructions a request" if counter else "CPU µs a request"
    key = "instructions" if counter else "cpu_us"
    print(f"| phase | req/s | {cost} | by thread (CPU µs) | ÷ health |")
    print("|---|---:|---:|---|---:|")
    async with app.router.lifespan_context(app):
        for _ in range(args.repeats):
            base = await measure(app, lambda i: health, args, counter)
            got = await measure(app, lambda i: checks[i % len(checks)], args, counter)
            assert set(got["statuses"]) == {200}, got["statuses"]
            for name, r in (("`GET /healthz`", base), ("`POST /v1/checks`", got)):
                ratio = r[key] / base[key]
                print(
                    f"| {name} | {r['per_s']:,} | {r[key]:,} | {r['by_thread_us']} | {ratio:.2f} |"
                )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", type=Path, default=bench_api.RESULTS / "api-200000.sqlite")
    parser.add_argument("--people", type=int, default=200_000)
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--callgrind", action="store_true", help="count instructions (run under valgrind)"
    )
    uvloop.run(main(parser.parse_args()))
