import os
import stat
import uuid
from pathlib import Path

import pytest

from gateway.capture.policy import PolicyDecider
from gateway.config import parse_config
from gateway.events import Policy
from gateway.seal.keyprovider import SealError
from gateway.seal.sampling_key import SamplingKey


def test_key_is_created_private_and_stable(tmp_path: Path) -> None:
    path = tmp_path / "state" / "sampling.key"
    first = SamplingKey.load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(path.read_bytes()) == 32
    again = SamplingKey.load_or_create(path)
    assert first.fraction(b"call-1") == again.fraction(b"call-1")
    assert [p.name for p in path.parent.iterdir()] == ["sampling.key"]


def test_rotation_changes_decisions(tmp_path: Path) -> None:
    path = tmp_path / "sampling.key"
    before = SamplingKey.load_or_create(path)
    after = SamplingKey.rotate(path)
    ids = [f"id-{i}".encode() for i in range(50)]
    assert [before.fraction(i) for i in ids] != [after.fraction(i) for i in ids]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "sampling.key"
    SamplingKey.load_or_create(path)
    os.chmod(path, 0o644)
    with pytest.raises(SealError, match="chmod 600"):
        SamplingKey.load_or_create(path)


def _decider(tmp_path: Path, **sections) -> PolicyDecider:
    config = parse_config(sections)
    key = SamplingKey.load_or_create(tmp_path / "k")
    return PolicyDecider(config.privacy, config.contract, config.queues, key)


def test_sampled_fraction_is_close_to_the_rate_and_stable(tmp_path: Path) -> None:
    decider = _decider(tmp_path, privacy={"sample_rate": 0.10})
    call_ids = [f"{uuid.uuid4()}@pbx" for _ in range(20000)]
    first = [decider.decide(c, [], {}) for c in call_ids]
    rate = first.count(Policy.ANALYTICS) / len(first)
    # binomial(20000, 0.1): standard deviation 0.0021; 5 sigma
    assert abs(rate - 0.10) < 0.0106
    assert set(first) == {Policy.ANALYTICS, Policy.DROP}
    # the same call (re-INVITE, restart) always gets the same decision
    assert [decider.decide(c, [], {}) for c in call_ids] == first


def test_decisions_differ_between_boxes(tmp_path: Path) -> None:
    a = _decider(tmp_path / "a", privacy={"sample_rate": 0.5})
    b = _decider(tmp_path / "b", privacy={"sample_rate": 0.5})
    ids = [f"c{i}" for i in range(200)]
    assert [a.decide(i, [], {}) for i in ids] != [b.decide(i, [], {}) for i in ids]


def test_contract_rules_override_sampling(tmp_path: Path) -> None:
    decider = _decider(
        tmp_path,
        privacy={"sample_rate": 0.0},
        queues={"header": "X-Queue"},
        contract={
            "rules": [
                {"kind": "header", "header": "X-Contract", "pattern": "^conclude$"},
                {"kind": "called_number", "pattern": r"^\+?39800"},
                {"kind": "queue", "pattern": "^contracts$"},
            ],
        },
    )
    assert decider.decide("a", [], {"x-contract": ["conclude"]}) is Policy.CONTRACT
    assert decider.decide("a", [], {"x-contract": ["inquire"]}) is Policy.DROP
    assert decider.decide("a", ["+39800123"], {}) is Policy.CONTRACT
    assert decider.decide("a", ["0612345"], {}) is Policy.DROP
    assert decider.decide("a", [], {"x-queue": ["contracts"]}) is Policy.CONTRACT
    assert decider.decide("a", [], {"x-queue": ["support"]}) is Policy.DROP


def test_rate_one_and_zero(tmp_path: Path) -> None:
    assert _decider(tmp_path, privacy={"sample_rate": 1.0}).decide("x", [], {}) is Policy.ANALYTICS
    assert _decider(tmp_path, privacy={"sample_rate": 0.0}).decide("x", [], {}) is Policy.DROP
