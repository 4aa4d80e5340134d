"""A real TPM for the tests: the swtpm simulator on free loopback ports, with fresh state."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.seal.tpm_helpers import reset_pcr, running_swtpm

# Expected failures (policy checks, refused connections) make the TSS log errors to stderr.
os.environ.setdefault("TSS2_LOG", "all+none")


@pytest.fixture(scope="session")
def swtpm_tcti(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    pytest.importorskip("tpm2_pytss", reason="tpm2-pytss is not installed (pip install tpm2-pytss)")
    with running_swtpm(tmp_path_factory.mktemp("swtpm")) as tcti:
        yield tcti


@pytest.fixture
def tpm(swtpm_tcti: str) -> str:
    """The simulator's TCTI with the test PCR back at its boot value (zero), as after a reboot."""
    reset_pcr(swtpm_tcti)
    return swtpm_tcti
