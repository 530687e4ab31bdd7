"""The README's two commands: CI runs the second verbatim, and the first one's steps work."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    """The shell commands in the README's 'Two commands' section, in order."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Two commands", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```sh\n(.*?)```", section, re.S)]


def test_readme_has_two_commands() -> None:
    commands = readme_commands()
    assert len(commands) == 2
    demo, tests = commands
    assert demo.endswith("chengxin demo")
    assert "pytest" in tests


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert readme_commands()[1] in ci.splitlines()


def test_lock_file_matches_pyproject() -> None:
    lock = (ROOT / "uv.lock").read_text(encoding="utf-8")
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    pyproject = pyproject.split("[build-system]", 1)[0]  # the build backend is not locked
    pins = re.findall(r'"([A-Za-z0-9_.\[\]-]+)==([0-9][^"]*)"', pyproject)
    assert pins
    for name, version in pins:
        base = re.sub(r"\[.*\]", "", name).lower().replace("_", "-")
        assert f'name = "{base}"\nversion = "{version}"' in lock, f"{base}=={version} not locked"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_demo_command_builds_a_city_and_serves_it(tmp_path: Path) -> None:
    """The first command's last step, on a small city: it builds, serves pages and API, stops."""
    exe = Path(sys.executable).with_name("chengxin")
    port = _free_port()
    demo = subprocess.Popen(
        [
            str(exe),
            "demo",
            "--people",
            "1500",
            "--dir",
            str(tmp_path),
            "--port",
            str(port),
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert demo.stdout is not None
        lines = []
        for line in demo.stdout:  # the summary, then the server runs until stopped
            lines.append(line)
            if line.rstrip() == "}":
                break
        summary = json.loads("".join(lines))
        assert summary["url"] == f"http://127.0.0.1:{port}/"
        assert summary["subjects"] > 500 and summary["records"] > 0
        accounts = {a["name"]: a for a in summary["accounts"]}
        assert "demo-defaulter" in accounts
        with httpx.Client(base_url=summary["url"], timeout=10, follow_redirects=True) as client:
            for _ in range(300):  # the server starts after the summary is printed
                try:
                    ready = client.get("/readyz")
                    break
                except httpx.TransportError:
                    time.sleep(0.1)
            assert ready.status_code == 200
            assert "Judgment defaulters" in client.get("/").text
            login = client.post(
                "/login",
                data={
                    "username": "demo-defaulter",
                    "password": accounts["demo-defaulter"]["password"],
                },
                headers={"Origin": f"http://127.0.0.1:{port}"},
            )
            assert login.status_code == 200 and str(login.url).endswith("/me")
            assert "demo-airline" in login.text  # the demo airline's check is listed
    finally:
        demo.send_signal(signal.SIGINT)
        _, err = demo.communicate(timeout=60)
    assert demo.returncode == 0, err
    check = subprocess.run(
        [str(exe), "verify", "--db", str(tmp_path / "chengxin-demo.sqlite")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_demo_without_serving_says_how_to_serve(tmp_path: Path) -> None:
    """``--no-serve`` builds the city, prints where to look and the log-ins, and returns."""
    exe = Path(sys.executable).with_name("chengxin")
    done = subprocess.run(
        [str(exe), "demo", "--people", "300", "--dir", str(tmp_path), "--no-serve"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "chengxin explain" in done.stdout and "chengxin serve --db" in done.stdout
    assert "demo-best" in done.stdout
