"""`gateway new-plugin`: the skeleton it writes passes its own tests and lint as written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.scaffold import write_skeleton


def test_new_plugin_writes_a_distribution_that_passes_its_tests(tmp_path: Path) -> None:
    assert main(["new-plugin", "acme_chat", "--directory", str(tmp_path)]) == 0
    root = tmp_path / "acme_chat"
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) == [
        "README.md",
        "gateway_acme_chat/__init__.py",
        "gateway_acme_chat/provider.py",
        "pyproject.toml",
        "tests/fake_acme_chat.py",
        "tests/test_acme_chat.py",
    ]
    assert 'acme_chat = "gateway_acme_chat"' in (root / "pyproject.toml").read_text()
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert " passed" in run.stdout and "failed" not in run.stdout
    for check in (["check", "."], ["format", "--check", "."]):
        lint = subprocess.run(
            [sys.executable, "-m", "ruff", *check], cwd=root, capture_output=True, text=True
        )
        assert lint.returncode == 0, lint.stdout + lint.stderr
    contracts = subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports"), "--no-cache"],
        cwd=root,
        capture_output=True,
        text=True,
    )
    assert contracts.returncode == 0, contracts.stdout + contracts.stderr
    assert "1 kept, 0 broken" in contracts.stdout


@pytest.mark.parametrize("name", ["Telegram", "2fa", "my-plugin", ""])
def test_names_must_be_lower_case_identifiers(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="not a plugin name"):
        write_skeleton(name, tmp_path)


def test_an_existing_folder_is_never_overwritten(tmp_path: Path) -> None:
    (tmp_path / "acme").mkdir()
    assert main(["new-plugin", "acme", "--directory", str(tmp_path)]) == 2
