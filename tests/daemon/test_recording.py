"""Recordings in parts: order, channels, late audio, bounded memory, nothing lost."""

from __future__ import annotations

import io
import wave

import numpy as np

from gateway.daemon.recording import Tape
from gateway.events import Role

RATE = 8000


def parts_of(tape_args: tuple[float], feed: list[tuple[Role, int, np.ndarray]]) -> list[bytes]:
    parts: list[bytes] = []
    tape = Tape(RATE, tape_args[0], parts.append)
    for role, start, pcm in feed:
        tape.add(role, start, pcm)
    tape.close()
    return parts


def decode(part: bytes) -> tuple[str, np.ndarray]:
    with wave.open(io.BytesIO(part)) as w:
        frames = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        frames = frames.reshape(-1, w.getnchannels())
    start = part.index(b"ICMT") + 8
    return part[start : part.index(b"\0", start)].decode(), frames


def ramp(start: int, count: int) -> np.ndarray:
    return (np.arange(start, start + count) % 30000).astype(np.int16)


def test_two_directions_in_step_become_stereo_parts_that_join_up_exactly() -> None:
    feed = []
    for start in range(0, 5 * RATE, 160):  # 5 s of 20 ms chunks, both directions
        feed.append((Role.CUSTOMER, start, ramp(start, 160)))
        feed.append((Role.OPERATOR, start, -ramp(start, 160)))
    parts = parts_of((2.0,), feed)
    assert len(parts) == 3  # 2 s + 2 s + 1 s
    decoded = [decode(p) for p in parts]
    assert [c.split(" part ")[1].split(" channels")[0] for c, _ in decoded] == [
        "0 starts 0.00 s",
        "1 starts 2.00 s",
        "2 starts 4.00 s",
    ]
    assert all(c.endswith("channels operator,customer") for c, _ in decoded)
    joined = np.concatenate([f for _, f in decoded])
    np.testing.assert_array_equal(joined[:, 1], ramp(0, 5 * RATE))
    np.testing.assert_array_equal(joined[:, 0], -ramp(0, 5 * RATE))
    recording = {c.split()[2] for c, _ in decoded}
    assert len(recording) == 1 and len(recording.pop()) == 16  # one random id, no call data


def test_a_silent_direction_does_not_hold_audio_in_memory() -> None:
    held: list[bytes] = []
    tape = Tape(RATE, 1.0, held.append)
    tape.add(Role.CUSTOMER, 0, ramp(0, 160))  # the customer says one word, then nothing
    for start in range(0, 10 * RATE, 160):
        tape.add(Role.OPERATOR, start, ramp(start, 160))
    # the operator runs ahead by at most two parts before parts are cut anyway
    assert len(held) >= 8
    tape.close()
    total = sum(decode(p)[1].shape[0] for p in held)
    assert total == 10 * RATE


def test_audio_arriving_for_a_part_already_sealed_becomes_a_part_of_its_own() -> None:
    parts: list[bytes] = []
    tape = Tape(RATE, 1.0, parts.append)
    for start in range(0, 3 * RATE, 160):
        tape.add(Role.OPERATOR, start, ramp(start, 160))
    late = ramp(100, 400)
    tape.add(Role.CUSTOMER, 100, late)  # long after its place was cut
    tape.close()
    decoded = [decode(p) for p in parts]
    (late_part,) = [(c, f) for c, f in decoded if "channels customer" in c]
    assert "starts 0.01 s" in late_part[0]
    np.testing.assert_array_equal(late_part[1][:, 0], late)
    operator = np.concatenate([f[:, 0] for c, f in decoded if c.endswith("channels operator")])
    np.testing.assert_array_equal(operator, ramp(0, 3 * RATE))
