"""The shipped unit files, and copies of them that run on this host."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

SYSTEMD_DIR = Path(__file__).resolve().parents[2] / "systemd"
INSTALLED_CLI = "/opt/callveil/venv/bin/callveil"
_EXEC_START = re.compile(rf"^ExecStart={re.escape(INSTALLED_CLI)}(?P<args>.*)$", re.MULTILINE)
# Plain output: no colours, no emoji-dependent parsing, warnings and above only.
ANALYZE_ENV = {**os.environ, "SYSTEMD_COLORS": "0", "SYSTEMD_LOG_LEVEL": "notice"}


def with_exec_start(name: str, command: str) -> str:
    """The shipped unit ``name`` with its ExecStart running ``command`` instead of the
    installed console script (which does not exist on a development machine); every other
    line stays as shipped."""
    text = (SYSTEMD_DIR / name).read_text()
    replaced, count = _EXEC_START.subn(lambda m: f"ExecStart={command}", text)
    assert count == 1, f"{name} should have exactly one ExecStart={INSTALLED_CLI} ..."
    return replaced


def exec_args(name: str) -> str:
    """The arguments the shipped unit gives the installed console script."""
    match = _EXEC_START.search((SYSTEMD_DIR / name).read_text())
    assert match is not None, f"{name} does not start {INSTALLED_CLI}"
    return match["args"].strip()


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", *args], capture_output=True, text=True, env=ANALYZE_ENV, timeout=60
    )
