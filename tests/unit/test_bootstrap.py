"""`./edge` installs the locked dependencies only when a lock file changed.

Runs the real script on a copy of the project whose `.venv/bin/python` is a stub that records
what it was asked to do, so no package is installed.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

STUB = """#!/bin/sh
echo "$*" >> "$(dirname "$0")/../../calls.log"
"""


def _project(tmp_path: Path) -> Path:
    for name in ("edge", "requirements.lock", "requirements-dev.lock", "pyproject.toml"):
        shutil.copy2(ROOT / name, tmp_path / name)
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    for name in ("python", "edge-agent"):
        (bin_dir / name).write_text(STUB)
        (bin_dir / name).chmod(0o755)
    return tmp_path


def _installs(project: Path, command: str) -> list[str]:
    """The lock files `./edge <command>` installed."""
    log = project / "calls.log"
    log.write_text("")
    subprocess.run([str(project / "edge"), command], check=True, capture_output=True, timeout=60)
    return [line.split(" -r ")[1] for line in log.read_text().splitlines() if " -r " in line]


def test_alternating_test_and_up_installs_only_when_a_lock_changes(tmp_path: Path) -> None:
    project = _project(tmp_path)
    assert _installs(project, "up") == ["requirements.lock"]
    assert _installs(project, "up") == []
    assert _installs(project, "test") == ["requirements-dev.lock"]  # never installed before
    assert _installs(project, "up") == []  # the dev lock holds the runtime one
    assert _installs(project, "test") == []
    with open(project / "requirements-dev.lock", "a") as f:
        f.write("# changed\n")
    assert _installs(project, "up") == ["requirements.lock"]  # the dev stamp no longer holds
    assert _installs(project, "test") == ["requirements-dev.lock"]
    assert _installs(project, "test") == []
    with open(project / "pyproject.toml", "a") as f:
        f.write("# changed\n")
    assert _installs(project, "up") == ["requirements.lock"]


def _pins(lock: str) -> set[str]:
    lines = (ROOT / lock).read_text().splitlines()
    return {line.split()[0] for line in lines if line and not line.startswith(("#", " "))}


def test_the_dev_lock_pins_everything_the_runtime_lock_does() -> None:
    # What lets `up` trust the dev lock's stamp.
    assert _pins("requirements.lock") <= _pins("requirements-dev.lock")
