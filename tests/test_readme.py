"""The README's two commands: CI runs the second verbatim, and the first one's steps work."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

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


def test_demo_command_runs(tmp_path: Path) -> None:
    """The first command's last step, on a small city in a temporary folder."""
    exe = Path(sys.executable).with_name("chengxin")
    done = subprocess.run(
        [str(exe), "demo", "--people", "1500", "--dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "chengxin-demo.sqlite").exists()
    assert "chengxin explain" in done.stdout
    check = subprocess.run(
        [str(exe), "verify", "--db", str(tmp_path / "chengxin-demo.sqlite")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
