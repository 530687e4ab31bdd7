"""Docs are tested: every CLI command and option appears in docs/cli.md."""

from __future__ import annotations

import ast
from pathlib import Path

import click
import typer.main

from chengxin.cli import register_all

ROOT = Path(__file__).resolve().parents[1]


def _commands() -> list[tuple[str, click.Command]]:
    root = typer.main.get_command(register_all())
    assert isinstance(root, click.Group)
    out: list[tuple[str, click.Command]] = []
    for name, cmd in root.commands.items():
        if isinstance(cmd, click.Group):
            out += [(f"{name} {sub}", subcmd) for sub, subcmd in cmd.commands.items()]
        else:
            out.append((name, cmd))
    return out


def test_every_command_and_option_is_documented() -> None:
    doc = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    commands = _commands()
    assert len(commands) >= 20
    for name, cmd in commands:
        assert f"`chengxin {name}" in doc, f"docs/cli.md does not document `chengxin {name}`"
        for param in cmd.params:
            if isinstance(param, click.Option):
                for opt in param.opts:
                    if opt.startswith("--"):
                        assert opt in doc, f"option {opt} of `chengxin {name}` is undocumented"


def _public_defs(
    body: list[ast.stmt],
) -> list[ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef]:
    """Module-level functions and classes, and the methods of public classes."""
    out: list[ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef] = []
    for node in body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            if node.name.startswith("_"):
                continue
            out.append(node)
            if isinstance(node, ast.ClassDef):
                out += [m for m in _public_defs(node.body) if not isinstance(m, ast.ClassDef)]
    return out


def test_every_public_name_in_src_has_a_docstring() -> None:
    missing = []
    for path in sorted((ROOT / "src" / "chengxin").rglob("*.py")):
        if "migrations" in path.parts:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        if ast.get_docstring(tree) is None:
            missing.append(f"{path.relative_to(ROOT)} (module)")
        for node in _public_defs(tree.body):
            if ast.get_docstring(node) is None:
                missing.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    assert not missing, "public names without a docstring:\n" + "\n".join(missing)
