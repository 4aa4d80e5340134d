"""SoundcardSource through the real stack: PyAudio, PortAudio and ALSA.

The sandbox has no sound card, so each test writes an ALSA configuration (``ALSA_CONFIG_PATH``)
whose capture devices are ALSA's own plugins: ``callveil_tap`` is the ``file`` plugin, which
records a known interleaved stereo file, over the ``null`` plugin; ``callveil_mono`` offers a
single channel. PortAudio enumerates and opens them like any card, so device choice, stream
set-up, the callback thread, the queue and the channel split all run for real. The ``null``
plugin delivers as fast as it is read, not at the sample rate, so the idle ticks and the error
for a device that stops delivering are not exercised here.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gateway.capture.soundcard import SoundcardError, SoundcardSource, split_channels

SECONDS = 2


def require_pyaudio() -> None:
    pytest.importorskip("pyaudio", reason="PyAudio is not installed (the soundcard extra)")


def known_stereo(rate: int) -> np.ndarray:
    """Two channels nobody could mix up: a ramp and a sine, interleaved frame by frame."""
    n = rate * SECONDS
    ramp = (np.arange(n) * 7 % 60001 - 30000).astype(np.int16)
    tone = np.round(9000 * np.sin(2 * np.pi * 425 * np.arange(n) / rate)).astype(np.int16)
    return np.stack([ramp, tone], axis=1)


def alsa_config(directory: Path, body: str) -> Path:
    path = directory / "asound.conf"
    path.write_text(body)
    return path


@pytest.fixture
def tap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[int, np.ndarray]:
    """ALSA devices for the tests; returns the stereo audio the tap plays at each rate."""
    require_pyaudio()
    audio = {rate: known_stereo(rate) for rate in (8000, 16000)}
    for rate, frames in audio.items():
        (tmp_path / f"in{rate}.raw").write_bytes(frames.astype("<i2").tobytes())
    rate_files = "\n".join(
        f"""pcm.callveil_tap{rate} {{
    type file
    slave.pcm "callveil_silence"
    file "/dev/null"
    infile "{tmp_path / f"in{rate}.raw"}"
    format "raw"
}}"""
        for rate in audio
    )
    config = alsa_config(
        tmp_path,
        f"""pcm.callveil_silence {{ type null }}
{rate_files}
pcm.callveil_mono {{
    type multi
    slaves.a.pcm "callveil_silence"
    slaves.a.channels 1
    bindings.0.slave a
    bindings.0.channel 0
}}
pcm.default "callveil_tap8000"
""",
    )
    monkeypatch.setenv("ALSA_CONFIG_PATH", str(config))
    return audio


def read_blocks(source: SoundcardSource, count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    blocks = []
    for block in source:
        if block is not None:
            blocks.append(block)
            if len(blocks) == count:
                break
    return blocks


@pytest.mark.parametrize("rate", [8000, 16000])
def test_known_audio_comes_back_split_by_channel(tap: dict[int, np.ndarray], rate: int) -> None:
    expected = tap[rate]
    count = SECONDS * 50
    with SoundcardSource(f"callveil_tap{rate}", sample_rate=rate, queue_blocks=count) as source:
        assert source.device.name == f"callveil_tap{rate}"
        assert source.block_frames == rate // 50
        blocks = read_blocks(source, count)
    for channel_0, channel_1 in blocks:
        for channel in (channel_0, channel_1):
            assert channel.dtype == np.int16 and channel.shape == (rate // 50,)
            assert channel.flags.c_contiguous
    assert np.array_equal(np.concatenate([b[0] for b in blocks]), expected[:, 0])
    assert np.array_equal(np.concatenate([b[1] for b in blocks]), expected[:, 1])


def test_default_input_when_no_name_is_given(tap: dict[int, np.ndarray]) -> None:
    with SoundcardSource(queue_blocks=5) as source:
        assert source.device.name == "default"
        blocks = read_blocks(source, 5)
    assert np.array_equal(np.concatenate([b[0] for b in blocks]), tap[8000][:800, 0])


def test_part_of_a_name_is_enough(tap: dict[int, np.ndarray]) -> None:
    with SoundcardSource("TAP16", sample_rate=16000, queue_blocks=2) as source:
        assert source.device.name == "callveil_tap16000"


def test_a_stalled_reader_loses_whole_blocks_and_counts_them(tap: dict[int, np.ndarray]) -> None:
    with SoundcardSource("callveil_tap8000", queue_blocks=10) as source:
        time.sleep(0.2)  # the device delivers far more than ten blocks meanwhile
        blocks = read_blocks(source, 10)
        lost = source.counters["soundcard.queue_full"]
    assert lost > 0
    # the queue kept the oldest blocks, whole and in order
    assert np.array_equal(np.concatenate([b[1] for b in blocks]), tap[8000][:1600, 1])


def test_stop_from_another_thread_ends_the_iteration(tap: dict[int, np.ndarray]) -> None:
    with SoundcardSource("callveil_tap8000") as source:
        timer = threading.Timer(0.2, source.stop)
        started = time.monotonic()
        timer.start()
        blocks = sum(1 for _ in source)
        elapsed = time.monotonic() - started
    assert blocks > 0 and elapsed < 1.0


def test_a_device_with_one_channel_is_refused_with_the_list(tap: dict[int, np.ndarray]) -> None:
    with pytest.raises(SoundcardError) as caught:
        SoundcardSource("callveil_mono")
    message = str(caught.value)
    assert "'callveil_mono' has 1 input channel" in message and "needs 2" in message
    assert "'callveil_tap8000' (" in message  # the devices that were found


def test_an_unknown_device_is_refused_with_the_list(tap: dict[int, np.ndarray]) -> None:
    with pytest.raises(SoundcardError) as caught:
        SoundcardSource("usb line-in")
    message = str(caught.value)
    assert "'usb line-in'" in message and "soundcard.device" in message
    assert "'callveil_mono' (1 input channels" in message


def test_no_input_device_at_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    require_pyaudio()
    # only a default that points at a card this machine does not have
    config = alsa_config(tmp_path, "pcm.default { type hw card 31 }\n")
    monkeypatch.setenv("ALSA_CONFIG_PATH", str(config))
    with pytest.raises(SoundcardError, match="no audio input device found"):
        SoundcardSource()


def test_audio_stack_chatter_stays_off_stderr(
    tap: dict[int, np.ndarray], capfd: pytest.CaptureFixture[str]
) -> None:
    bare = subprocess.run(
        [sys.executable, "-c", "import pyaudio; pyaudio.PyAudio().terminate()"],
        capture_output=True,
        text=True,
        env=os.environ,
    )
    if not bare.stderr.strip():
        pytest.skip("PortAudio prints nothing on this machine: no chatter to keep out")
    capfd.readouterr()
    with SoundcardSource("callveil_tap8000", queue_blocks=2) as source:
        read_blocks(source, 1)
    assert capfd.readouterr().err == ""


def test_missing_pyaudio_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyaudio", None)  # makes `import pyaudio` fail
    with pytest.raises(SoundcardError, match=r"callveil\[soundcard\]"):
        SoundcardSource()


@pytest.mark.parametrize("rate", [0, 8001, 44101])
def test_rates_that_do_not_split_into_20_ms_are_refused(rate: int) -> None:
    with pytest.raises(SoundcardError, match="20 ms"):
        SoundcardSource(sample_rate=rate)


@settings(max_examples=200, deadline=None)
@given(hnp.arrays(np.int16, st.tuples(st.integers(0, 400), st.just(2))))
def test_split_channels_returns_the_columns(frames: np.ndarray) -> None:
    channel_0, channel_1 = split_channels(frames.astype("=i2").tobytes())
    assert np.array_equal(channel_0, frames[:, 0]) and np.array_equal(channel_1, frames[:, 1])
    assert channel_0.flags.c_contiguous and channel_1.flags.c_contiguous
