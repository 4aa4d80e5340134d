"""Identity stops in capture/: proven on the event types and on events made from real SIP."""

from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path

import numpy as np
import pytest

from gateway import events
from gateway.capture.pcapfile import CaptureReader
from gateway.capture.session import CaptureSession
from gateway.config import parse_config
from gateway.seal.sampling_key import SamplingKey
from tests.capture.tshark_reference import tshark_fields

# the only field types an event may have: none of them can carry free text
_ALLOWED = {
    events.CallRef,
    events.Policy,
    events.Role,
    events.EndReason,
    events.Undecodable,
    events.Undecodable | None,
    int,
    np.ndarray,
    frozenset[events.Role],
    tuple[events.DirectionStats, ...],
}
# the one text field: a label capture takes from the configured allow-list, never from the
# wire (tests/capture/test_queues.py); its shape is checked on construction
_LABELS = {(events.CallStarted, "queue")}


@pytest.mark.parametrize(
    "cls",
    [events.CallStarted, events.AudioChunk, events.CallEnded, events.DirectionStats],
)
def test_event_fields_cannot_hold_identity(cls: type) -> None:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        allowed = {str | None} if (cls, f.name) in _LABELS else _ALLOWED
        assert hints[f.name] in allowed, f"{cls.__name__}.{f.name}: {hints[f.name]}"


def test_a_queue_is_a_label_or_nothing() -> None:
    ref = events.CallRef.new()
    assert events.CallStarted(ref, events.Policy.DROP, frozenset()).queue is None
    assert events.CallStarted(ref, events.Policy.DROP, frozenset(), "billing").queue == "billing"
    for bad in ("sip:alice@example.com", "+390612345678", "Billing", "billing queue", "", "a/b"):
        with pytest.raises(ValueError, match="queue"):
            events.CallStarted(ref, events.Policy.DROP, frozenset(), bad)


def test_call_reference_is_random_and_validated() -> None:
    refs = {events.CallRef.new().token for _ in range(1000)}
    assert len(refs) == 1000
    for bad in ("sip:alice@example.com", "+390612345678", "a84b4c76e66710@pc33", "192.0.2.1"):
        with pytest.raises(ValueError):
            events.CallRef(bad)
    assert [f.name for f in dataclasses.fields(events.CallRef)] == ["token"]


def test_audio_chunk_refuses_anything_but_pcm() -> None:
    ref = events.CallRef.new()
    with pytest.raises(ValueError):
        events.AudioChunk(ref, events.Role.CUSTOMER, np.zeros(4, np.float32), 8000, 0)


_SIP_FIELDS = ["sip.Call-ID", "sip.from.addr", "sip.to.addr", "sip.r-uri", "sip.contact.uri",
               "sip.from.user", "sip.to.user", "sip.from.tag", "sip.to.tag", "ip.src", "ip.dst",
               "sip.display.info", "sdp.connection_info.address"]  # fmt: skip

CAPTURES = [
    "SIP-RTP-Normal_Call_two_parties.pcap",
    "SIP_CALL_RTP_G711",
    "SIP_DTMF2.cap",
    "sip-rtp-g711.pcap",
    "b2bua-asterisk.pcapng",
    "rtp-protocol.pcap",
    "sip_ipv4_tcp.pcap",
    "generated/sipp-loopback-pcma-call.pcapng",
]


def _identities(tshark: str, path: Path) -> set[str]:
    return {
        v.strip()
        for row in tshark_fields(tshark, path, "sip", *_SIP_FIELDS)
        for cell in row
        for v in cell.split(",")
        # shorter values (extension "100", tag "1") cannot be told apart from counts in a repr;
        # the field-type test above is what rules them out
        if len(v.strip()) >= 6
    }


@pytest.mark.parametrize("name", CAPTURES)
def test_events_from_real_calls_carry_no_identity(name, pcaps_dir, tshark, tmp_path) -> None:
    path = pcaps_dir / name
    identities = _identities(tshark, path)
    assert identities, "tshark found SIP identities to look for"
    config = parse_config({"privacy": {"sample_rate": 1.0, "trim_seconds": 0.0}})
    session = CaptureSession(config, SamplingKey.load_or_create(tmp_path / "k"))
    produced: list[events.CaptureEvent] = []
    for frame in CaptureReader(path):
        produced += session.feed(frame)
    produced += session.finish()
    assert any(isinstance(e, events.CallStarted) for e in produced)
    for event in produced:
        text = repr(event)
        for f in dataclasses.fields(event):
            value = getattr(event, f.name)
            if isinstance(value, np.ndarray):
                assert value.dtype == np.int16
            else:
                text += " " + str(value)
        for identity in identities:
            assert identity not in text, f"{type(event).__name__} carries a SIP identity"


@pytest.mark.parametrize("name", CAPTURES)
def test_replay_output_and_logs_carry_no_identity(name, pcaps_dir, tshark, tmp_path, capfd) -> None:
    from gateway.cli import main

    config = tmp_path / "callveil.toml"
    config.write_text(
        '[privacy]\nsample_rate = 1.0\ntrim_seconds = 0.0\nsampling_key_file = "k"\n'
        '[logging]\nlevel = "debug"\nformat = "json"\n'
    )
    assert main(["replay", "-q", str(pcaps_dir / name), "-c", str(config)]) == 0
    out, err = capfd.readouterr()
    assert "calls" in out
    for identity in _identities(tshark, pcaps_dir / name):
        assert identity not in out + err, "the replay summary or a log line names a SIP identity"
    # no clock time or date of any call: the summary holds counts and durations only
    assert not re.search(r"\d{1,2}:\d{2}(:\d{2})?|\d{4}-\d{2}-\d{2}", out)
