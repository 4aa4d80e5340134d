"""The privacy scanner finds each kind of identity and passes real aggregate payloads."""

from __future__ import annotations

import base64
import copy
import json

import pytest

from gateway.publish.message import AGGREGATES_SCHEMA, signed_payload
from tests.aggregates.summaries import released_body
from tests.privacy_scan import scan


def payload(body: dict) -> bytes:
    return signed_payload(
        AGGREGATES_SCHEMA, box="box-a", site="rome", seq=7, body=body, sign=lambda _: bytes(71)
    )


def test_a_real_payload_is_clean() -> None:
    assert scan(payload(released_body("2026-03-02"))) == []
    assert scan(payload(released_body("2026-W10"))) == []


@pytest.mark.parametrize(
    ("planted", "kind"),
    [
        ("+39 06 1234 5678", "phone-number-like"),
        ("3331234567", "phone-number-like"),
        ("sip:alice@pbx.example.it", "SIP or tel URI"),
        ("tel:+390612345678", "SIP or tel URI"),
        ("10.20.1.15", "IPv4"),
        ("fd00::1", "IPv6"),
        ("a84b4c76e66710@pc33.atlanta.example.com", "user@host"),
        ("3848276298220188511", "Call-ID-like"),
        ("f81d4fae-7dec-11d0-a765-00a0c91e6bf6", "Call-ID-like"),
        ("14:32", "clock time"),
        ("2026-03-02T14:32:10Z", "date-time"),
        ("2026-03-03", "date"),
    ],
)
def test_each_kind_of_identity_is_found(planted: str, kind: str) -> None:
    body = copy.deepcopy(released_body("2026-03-02"))
    body["histograms"]["trend"]["labels"][0] = planted
    findings = scan(payload(body))
    assert any(kind in f for f in findings), findings


def test_a_day_inside_a_weekly_bucket_is_finer_than_the_bucket() -> None:
    body = released_body("2026-W10")
    body["queue"] = "2026-03-02"
    assert any("date" in f for f in scan(json.dumps({"body": body})))


def test_long_numbers_and_known_identities_are_found() -> None:
    body = released_body("2026-03-02")
    body["calls_seen"] = 1772460000  # an epoch time
    assert any("phone number or a time" in f for f in scan(payload(body)))
    body = released_body("2026-03-02")
    body["histograms"]["trend"]["labels"][1] = "ext-2017"
    assert any("identity from the input '2017'" in f for f in scan(payload(body), known=["2017"]))


def test_the_signature_is_exempt_only_in_its_own_shape() -> None:
    message = json.loads(payload(released_body("2026-03-02")))
    message["signature"] = base64.b64encode(b"sip:alice@example.com").decode()
    assert any("shape" in f for f in scan(message))
