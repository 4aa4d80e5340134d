"""A call's queue: the configured header of its INVITE, kept only when it is a listed label."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.capture.pcapfile import Frame
from gateway.capture.queues import queue_of
from gateway.capture.session import CaptureReport, CaptureSession
from gateway.capture.summary import format_report
from gateway.config import QueuesConfig, parse_config
from gateway.events import CallEnded, CallStarted, CaptureEvent, EndReason
from gateway.seal.sampling_key import SamplingKey
from tests.capture.packet_helpers import ethernet, ipv4, sip_call, udp

CUSTOMER = bytes([198, 51, 100, 20])
PBX = bytes([192, 0, 2, 10])


def queues(
    header: str = "X-Queue", labels: tuple[str, ...] = ("billing", "support")
) -> QueuesConfig:
    return parse_config({"queues": {"header": header, "labels": list(labels)}}).queues


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"x-queue": ["billing"]}, "billing"),
        ({"x-queue": ["  Billing "]}, "billing"),  # the configured spelling, not the wire's
        ({"x-queue": ["SUPPORT"]}, "support"),
        ({"x-queue": ["vip-mario-rossi"]}, None),  # off the list: never passed on
        ({"x-queue": ["bill"]}, None),
        ({"x-queue": ["billing-eu"]}, None),
        ({"x-queue": [""]}, None),
        ({}, None),
        ({"x-contract": ["billing"]}, None),  # another header
        ({"x-queue": ["billing", "billing"]}, "billing"),
        ({"x-queue": ["billing", "vip-mario-rossi"]}, "billing"),
        ({"x-queue": ["vip, Billing"]}, "billing"),
        ({"x-queue": ["billing", "support"]}, None),  # two queues: the call is in neither
        ({"x-queue": ["billing, support"]}, None),
    ],
)
def test_header_value_to_queue(headers: dict[str, list[str]], expected: str | None) -> None:
    assert queue_of(headers, queues()) == expected


def test_the_header_name_is_matched_whatever_its_case() -> None:
    config = queues(header="X-Asterisk-Queue")
    assert queue_of({"x-asterisk-queue": ["support"]}, config) == "support"
    assert queue_of({"x-queue": ["support"]}, config) is None


def test_no_labels_configured_means_no_queue() -> None:
    # the default configuration reads X-Queue (for contract rules) but counts no queue apart
    assert queue_of({"x-queue": ["billing"]}, QueuesConfig()) is None
    assert queue_of({"x-queue": ["billing"]}, QueuesConfig(header="", labels=[])) is None


def run(
    tmp_path: Path, calls: list[list[tuple[str, str]]], **sections
) -> tuple[list[CaptureEvent], CaptureReport]:
    """Each call's INVITE carries the headers given for it; SIP over UDP, through the session."""
    config = parse_config({"privacy": {"sample_rate": 1.0}, **sections})
    session = CaptureSession(config, SamplingKey.load_or_create(tmp_path / "k"))
    events: list[CaptureEvent] = []
    ts = 1_700_000_000.0
    for n, headers in enumerate(calls):
        for from_caller, message in sip_call(
            f"call-{n}@queues.test", "198.51.100.20", "192.0.2.10", headers
        ):
            src, dst = (CUSTOMER, PBX) if from_caller else (PBX, CUSTOMER)
            ts += 0.5
            events += session.feed(
                Frame(ts, 1, ethernet(ipv4(src, dst, 17, udp(5060, 5060, message))))
            )
    return events + session.finish(), session.report


def test_capture_sets_the_queue_from_the_invite(tmp_path: Path) -> None:
    events, report = run(
        tmp_path,
        [
            [("X-Asterisk-QUEUE", "Support ")],
            [("X-Asterisk-Queue", "vip-mario-rossi")],
            [],
            [("X-Queue", "billing")],  # not the configured header
        ],
        queues={"header": "x-asterisk-queue", "labels": ["billing", "support"]},
    )
    started = [e for e in events if isinstance(e, CallStarted)]
    assert [e.queue for e in started] == ["support", None, None, None]
    assert [e.reason for e in events if isinstance(e, CallEnded)] == [EndReason.BYE] * 4
    assert "vip-mario-rossi" not in repr(events)
    # the installer's summary says whether the header is read, in labels and counts only
    assert report.queues == {"support": 1, "none": 3}
    summary = format_report(report, sample_rate=1.0)
    assert "  queue                 none 3, support 1\n" in summary
    assert "vip" not in summary


def test_capture_without_queues_configured_gives_none(tmp_path: Path) -> None:
    events, _ = run(tmp_path, [[("X-Queue", "billing")]])
    assert [e.queue for e in events if isinstance(e, CallStarted)] == [None]
