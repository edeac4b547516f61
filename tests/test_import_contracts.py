"""The import boundaries docs/plugins.md promises, as `lint-imports` checks them.

CI runs `lint-imports` on the repository's own packages (pyproject.toml). The example plugin
is no installed package, so its contracts live in its own pyproject.toml and are checked
here, from its folder, as a plugin author would check theirs.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "telegramlike"


def test_example_plugin_imports_only_the_facade() -> None:
    lint_imports = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run(
        [str(lint_imports), "--no-cache"], cwd=EXAMPLE, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "BROKEN" not in result.stdout
    assert result.stdout.count("KEPT") == 2
