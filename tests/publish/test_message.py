"""Payloads: canonical, signed, and described by the JSON Schemas in ``schemas/``."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.aggregates.release import release
from gateway.publish import topics
from gateway.publish.message import (
    AGGREGATES_SCHEMA,
    STATUS_SCHEMA,
    canonical,
    key_fingerprint,
    signed_bytes,
    signed_payload,
)
from tests.aggregates.summaries import bucket_of_calls, released_body, seeded_summaries
from tests.privacy_scan import scan
from tests.publish.schemas import jsonschema, validate


def aggregates(provider: object, body: dict, seq: int = 1) -> bytes:
    return signed_payload(
        AGGREGATES_SCHEMA, box="box-a", site="rome", seq=seq, body=body, sign=provider.sign
    )


def test_the_signature_covers_the_canonical_message(providers: dict) -> None:
    provider = providers["box-a"]
    raw = aggregates(provider, released_body("2026-03-02"))
    message = json.loads(raw)
    assert canonical(message) == raw  # what is sent is already canonical
    key = serialization.load_pem_public_key(provider.public_key_pem())
    assert isinstance(key, ec.EllipticCurvePublicKey)
    key.verify(
        base64.b64decode(message["signature"]), signed_bytes(message), ec.ECDSA(hashes.SHA256())
    )


def test_every_kind_of_body_matches_the_schema(providers: dict) -> None:
    provider = providers["box-a"]
    bucket = bucket_of_calls(seeded_summaries(50, seed=8), seen=500)
    bodies = [
        released_body("2026-03-02"),
        released_body("2026-W10", n=5),  # suppressed
        release(bucket, period="2026-03-02", queue="billing-desk", k=10, epsilon=None),
    ]
    for seq, body in enumerate(bodies, 1):
        raw = aggregates(provider, body, seq)
        validate(raw)
        assert scan(raw) == []
    status = signed_payload(
        STATUS_SCHEMA,
        box="box-a",
        site="rome",
        seq=3,
        body={
            "state": "online",
            "release": "0.1.0",
            "key_fingerprint": key_fingerprint(provider.public_key_pem()),
            "alarms": ["outbox_full"],
        },
        sign=provider.sign,
    )
    validate(status)


def test_a_noisy_body_matches_the_schema(providers: dict) -> None:
    pytest.importorskip("opendp", reason="OpenDP is not installed (pip install 'callveil[dp]')")
    bucket = bucket_of_calls(seeded_summaries(50, seed=8), seen=500)
    body = release(bucket, period="2026-W10", queue=None, k=10, epsilon=0.5)
    raw = aggregates(providers["box-a"], body)
    assert validate(raw)["body"]["privacy"]["noise"]["epsilon"] == 0.5
    assert scan(raw) == []


@pytest.mark.parametrize(
    "change",
    [
        lambda m: m["body"].update(started_at="2026-03-02T09:14:00Z"),
        lambda m: m["body"].update(period="2026-03-02T09"),
        lambda m: m.update(seq=0),
        lambda m: m.update(box="10.0.0.7"),
        lambda m: m["body"]["histograms"]["trend"]["counts"].__setitem__(0, 3.5),
        lambda m: m["body"].update(suppressed=True),
    ],
)
def test_the_schema_refuses_what_no_payload_may_carry(providers: dict, change: object) -> None:
    message = json.loads(aggregates(providers["box-a"], released_body("2026-03-02")))
    change(message)  # type: ignore[operator]
    with pytest.raises(jsonschema.ValidationError):
        validate(canonical(message))


def test_topics_are_versioned_and_segments_checked() -> None:
    assert topics.topic("rome", "box-a", "aggregates") == "callveil/v1/rome/box-a/aggregates"
    assert topics.parse("callveil/v1/rome/box-a/status") == ("rome", "box-a", "status")
    for bad in ("callveil/v2/rome/box-a/status", "callveil/v1/rome/box-a", "x/v1/a/b/status"):
        with pytest.raises(ValueError):
            topics.parse(bad)
    with pytest.raises(ValueError, match="box id"):
        topics.topic("rome", "box/#", "aggregates")
