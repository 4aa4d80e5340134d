"""Shared fixtures: where the shared corpora live, and skips that say why."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import structlog

REPO = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    """``../shared`` beside the repository, or ``$CALLVEIL_SHARED``."""
    return Path(os.environ.get("CALLVEIL_SHARED", REPO.parent / "shared"))


@pytest.fixture(autouse=True)
def _fresh_logging() -> object:
    """Commands configure structlog for their stream (often pytest's, closed after the
    test); later tests must not log into a closed stream."""
    yield
    structlog.reset_defaults()


@pytest.fixture(scope="session")
def pcaps_dir() -> Path:
    path = shared_dir() / "pcaps"
    if not (path / "MANIFEST.md").is_file():
        pytest.skip(f"shared captures not found at {path} (set CALLVEIL_SHARED)")
    return path


@pytest.fixture(scope="session")
def tshark() -> str:
    exe = shutil.which("tshark")
    if exe is None:
        pytest.skip("tshark is not installed (scripts/setup installs it)")
    return exe
