"""Real parts the daemon tests share: a TLS Mosquitto with the box's ACL, and swtpm."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon.boxes import ACL
from tests.publish.broker import Broker
from tests.seal.tpm_helpers import running_swtpm


@pytest.fixture
def broker() -> Iterator[Broker]:
    broker = Broker(ACL)
    broker.start()
    yield broker
    broker.close()


@pytest.fixture
def tcti(tmp_path: Path) -> Iterator[str]:
    with running_swtpm(tmp_path / "swtpm") as tcti:
        yield tcti
