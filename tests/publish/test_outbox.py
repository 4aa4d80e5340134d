"""The outbox: on disk before sending, ordered, bounded, sequence numbers never reused."""

from __future__ import annotations

from pathlib import Path

import pytest
from structlog.testing import capture_logs

from gateway.publish.outbox import Outbox, OutboxFull

TOPIC = "callveil/v1/rome/box-a/aggregates"


def payload(seq: int) -> bytes:
    return f'{{"seq":{seq}}}'.encode()


def test_entries_come_out_in_order_and_leave_on_acknowledgement(tmp_path: Path) -> None:
    with Outbox(tmp_path / "out.db", max_entries=10, max_bytes=10_000) as outbox:
        seqs = [outbox.put(TOPIC, payload) for _ in range(5)]
        assert seqs == [1, 2, 3, 4, 5]
        assert [e.seq for e in outbox.pending()] == seqs
        assert outbox.pending(after=3)[0].payload == payload(4)
        outbox.remove(2)
        assert [e.seq for e in outbox.pending()] == [1, 3, 4, 5]
        assert outbox.usage() == (4, sum(len(payload(s)) for s in (1, 3, 4, 5)))


def test_sequence_numbers_keep_growing_across_restarts(tmp_path: Path) -> None:
    with Outbox(tmp_path / "out.db", max_entries=10, max_bytes=10_000) as outbox:
        for _ in range(3):
            outbox.remove(outbox.put(TOPIC, payload))  # all delivered: the table is empty
        sessions = [outbox.next_session(), outbox.next_session()]
    with Outbox(tmp_path / "out.db", max_entries=10, max_bytes=10_000) as outbox:
        assert outbox.put(TOPIC, payload) == 4
        assert outbox.next_session() == sessions[-1] + 1


def test_a_full_outbox_refuses_new_payloads_and_keeps_the_old(tmp_path: Path) -> None:
    with Outbox(tmp_path / "out.db", max_entries=3, max_bytes=10_000) as outbox:
        for _ in range(3):
            outbox.put(TOPIC, payload)
        with capture_logs() as logs, pytest.raises(OutboxFull, match="refused") as refused:
            outbox.put(TOPIC, payload)
        assert refused.value.nbytes == len(payload(4))
        assert [e["event"] for e in logs] == ["outbox_full"]
        assert logs[0]["log_level"] == "error"
        assert [e.seq for e in outbox.pending()] == [1, 2, 3]
        assert not outbox.fits(1)
        outbox.remove(1)
        assert outbox.fits(len(payload(4)))
        assert outbox.put(TOPIC, payload) == 4  # the refused one used up no number


def test_the_byte_limit_counts_too(tmp_path: Path) -> None:
    with Outbox(tmp_path / "out.db", max_entries=100, max_bytes=25) as outbox:
        outbox.put(TOPIC, payload)
        outbox.put(TOPIC, payload)
        with pytest.raises(OutboxFull):
            outbox.put(TOPIC, lambda seq: b"x" * 20)


def test_a_payload_that_cannot_be_made_leaves_no_trace(tmp_path: Path) -> None:
    def broken(seq: int) -> bytes:
        raise RuntimeError("signing failed")

    with Outbox(tmp_path / "out.db", max_entries=10, max_bytes=10_000) as outbox:
        with pytest.raises(RuntimeError):
            outbox.put(TOPIC, broken)
        assert outbox.usage() == (0, 0)
        assert outbox.put(TOPIC, payload) == 1
