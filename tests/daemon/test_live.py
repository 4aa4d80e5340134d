"""The daemon live on loopback: real SIP calls placed by SIPp, carrying real speech, and faults.

SIPp answers as the operator side on 127.0.0.2 and calls as customers from 127.0.0.3 (roles
come from those address ranges only). Each direction streams RAVDESS speech (three actors
one after the other, a different three each way) resampled to 8 kHz, A-law encoded and
packed in 20 ms RTP packets. ``callveil run`` captures on ``lo`` with an AF_PACKET socket and
speaks the systemd notification protocol to a socket the test reads, as systemd would.

Faults: the broker stopped during calls and while a closed bucket is released; the daemon
SIGKILLed in the middle of calls and started again; the TPM unreachable at start; a burst of
malformed datagrams on the SIP and RTP ports during a call; the state directory's filesystem
full while results are being written; SIGHUP with a changed and with a broken configuration.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gateway.aggregates.bucket import from_state
from gateway.capture.codecs.g711 import ALAW_TABLE
from gateway.capture.pcapwriter import PcapWriter, udp_frame
from gateway.capture.policy import PolicyDecider
from gateway.closing import Closing
from gateway.dsp.resample import Resampler
from gateway.events import Policy
from gateway.feed.verify import KeyRing, verify
from gateway.publish.topics import AGGREGATES, topic
from gateway.seal.sampling_key import SamplingKey
from tests.capture.live_helpers import free_udp_ports, require_packet_sockets
from tests.capture.test_rtp import build_rtp
from tests.conftest import shared_dir
from tests.daemon.boxes import (
    BOX,
    CALLVEIL,
    Box,
    demo_box,
    mqtt_section,
    replace_sections,
    sip_identities,
    tomorrow_env,
    tpm_section,
)
from tests.daemon.test_notify import receive
from tests.daemon.test_run import comment, correlation, envelope
from tests.daemon.test_run import read_wav as read_wav_bytes
from tests.dsp.conftest import read_wav
from tests.privacy_scan import scan
from tests.publish.broker import Broker, free_port
from tests.publish.clients import Collector

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop  # an encoder independent of the project's decoder

pytestmark = pytest.mark.live

HERE = Path(__file__).parent
OPERATOR_IP = "127.0.0.2"
CUSTOMER_IP = "127.0.0.3"
CALLED = "0612345678"  # the user part the scenarios dial; SIPp's "-s"
DISPLAY_NAME = "Maria Bianchi"  # the caller's display name in the scenario
RATE = 8000
FRAME = 160  # samples in one 20 ms packet
TRIM_S = 2.0
CALLER_CLIPS = tuple(f"Actor_{a:02d}/03-01-05-02-01-01-{a:02d}.wav" for a in (1, 3, 5))  # angry
ANSWERER_CLIPS = tuple(f"Actor_{a:02d}/03-01-02-01-02-01-{a:02d}.wav" for a in (2, 4, 6))  # calm
DAEMON = 'user = ""\nstatus_interval_s = 0.5\nrelease_interval_s = 0.5'
STATUS = re.compile(r"STATUS=(\d+) analysed, (\d+) contract, (\d+) not sampled; (\d+) open")


@pytest.fixture(autouse=True)
def _live_parts() -> None:
    require_packet_sockets()
    if shutil.which("sipp") is None:
        pytest.skip("sipp is not installed (Debian package sip-tester)")


# --- speech as RTP captures SIPp can play -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Speech:
    """``caller.pcap`` and ``answerer.pcap`` in ``directory``, and what a G.711 decoder hears."""

    directory: Path
    caller: np.ndarray  # int16 at 8 kHz
    answerer: np.ndarray

    @property
    def seconds(self) -> float:
        return min(self.caller.size, self.answerer.size) / RATE


def telephone_speech(paths: list[Path]) -> np.ndarray:
    """The clips one after the other, resampled to 8 kHz, as int16."""
    parts = []
    for path in paths:
        down = Resampler(16000, RATE)
        clip = read_wav(path)
        parts.append(np.concatenate([down.process(clip), down.flush()])[down.delay :])
    return np.clip(np.rint(np.concatenate(parts) * 32768), -32768, 32767).astype("<i2")


def write_rtp_capture(path: Path, pcm: np.ndarray, ssrc: int) -> np.ndarray:
    """A-law RTP packets of ``pcm``, 20 ms apart; returns the audio they carry, decoded."""
    alaw = audioop.lin2alaw(pcm.tobytes(), 2)
    packets = len(alaw) // FRAME
    with PcapWriter(path) as pcap:
        for k in range(packets):
            payload = alaw[k * FRAME : (k + 1) * FRAME]
            rtp = build_rtp(payload, sequence=k + 1, timestamp=k * FRAME, ssrc=ssrc, marker=k == 0)
            # SIPp replaces the addresses and ports; it keeps the payloads and their pacing
            pcap.write(1.0 + k * 0.020, udp_frame("192.0.2.1", 4000, "192.0.2.2", 4000, rtp))
    return ALAW_TABLE[np.frombuffer(alaw[: packets * FRAME], dtype=np.uint8)]


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> Speech:
    root = shared_dir() / "data" / "ravdess"
    if not (root / "labels.csv").is_file():
        pytest.skip(f"RAVDESS speech not found at {root} (set CALLVEIL_SHARED)")
    directory = tmp_path_factory.mktemp("speech")
    caller = telephone_speech([root / clip for clip in CALLER_CLIPS])
    answerer = telephone_speech([root / clip for clip in ANSWERER_CLIPS])
    return Speech(
        directory,
        write_rtp_capture(directory / "caller.pcap", caller, 0x5EED0001),
        write_rtp_capture(directory / "answerer.pcap", answerer, 0x5EED0002),
    )


# --- SIPp at both ends ------------------------------------------------------------------------


class Phones(Closing):
    """One SIPp answering as the operator side; SIPp callers placed as customers.

    Every SIPp process and every call gets media ports of its own (``[auto_media_port]``:
    the base plus four per call), so concurrent calls never share a media address.
    """

    def __init__(self, speech: Speech, workdir: Path) -> None:
        exe = shutil.which("sipp")
        assert exe is not None
        self._exe = exe
        self._speech = speech
        self._workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.sip_port, self._uac_port = free_udp_ports(2)
        self._next_media = random.Random(self.sip_port).randrange(20000, 40000, 4)
        self.answerer_media = self._media_ports(1000)
        self.answered = 0  # calls offered to the answerer so far
        self._callers: list[subprocess.Popen[bytes]] = []
        self._traces: list[Path] = []
        self._answerer = self._start(
            [
                "-sf", str(HERE / "live_uas_speech.xml"),
                "-i", OPERATOR_IP, "-mi", OPERATOR_IP,
                "-p", str(self.sip_port), "-mp", str(self.answerer_media),
            ],
            "answerer",
        )  # fmt: skip
        time.sleep(0.5)  # SIPp binds its SIP port

    def _media_ports(self, calls: int) -> int:
        base, self._next_media = self._next_media, self._next_media + 4 * calls
        return base

    def _start(self, args: list[str], name: str) -> subprocess.Popen[bytes]:
        trace = self._workdir / f"{name}-{len(self._traces)}.msg"
        self._traces.append(trace)
        return subprocess.Popen(
            [self._exe, *args, "-nostdin", "-trace_msg", "-message_file", str(trace)],
            cwd=self._speech.directory,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def call(self, count: int, seconds: float) -> Caller:
        """Place ``count`` calls at once, each hanging up after ``seconds`` of speech."""
        media = self._media_ports(count)
        process = self._start(
            [
                f"{OPERATOR_IP}:{self.sip_port}", "-sf", str(HERE / "live_uac_speech.xml"),
                "-s", CALLED, "-i", CUSTOMER_IP, "-mi", CUSTOMER_IP,
                "-p", str(self._uac_port), "-mp", str(media),
                "-m", str(count), "-l", str(count), "-r", "20", "-d", str(round(seconds * 1000)),
            ],
            "caller",
        )  # fmt: skip
        self._callers.append(process)
        first_answer = self.answerer_media + 4 * self.answered
        self.answered += count
        return Caller(process, media, first_answer)

    def identities(self) -> list[str]:
        """Call-IDs, tags, users and addresses of every SIP message SIPp sent or received."""
        raw = "".join(t.read_text(errors="replace") for t in self._traces if t.exists())
        return [*sip_identities(raw), DISPLAY_NAME]

    def call_ids(self) -> set[str]:
        raw = "".join(t.read_text(errors="replace") for t in self._traces if t.exists())
        return set(re.findall(r"Call-ID: ([^\r\n]+)", raw))

    def close(self) -> None:
        for process in [self._answerer, *self._callers]:
            if process.poll() is None:
                process.kill()
            process.wait()


@dataclass(frozen=True, slots=True)
class Caller:
    process: subprocess.Popen[bytes]
    media: int  # the first call's RTP port on the customer side
    answer_media: int  # the first call's RTP port on the operator side

    def wait(self, timeout: float = 60) -> None:
        assert self.process.wait(timeout) == 0, "a SIPp call failed its scenario"


# --- the daemon, as systemd runs it ------------------------------------------------------------


class Running(Closing):
    """``callveil run -c CONFIG`` live; notifications read in a thread, the log in a file."""

    def __init__(
        self,
        box: Box,
        log_path: Path,
        *,
        env: dict[str, str] | None = None,
    ) -> None:
        self.log_path = log_path
        self.messages: list[str] = []
        self._dir = Path(tempfile.mkdtemp(prefix="callveil-notify-"))  # AF_UNIX paths are short
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(self._dir / "notify"))
        self._sock.settimeout(0.2)
        self._done = threading.Event()
        self._listener = threading.Thread(
            target=receive, args=(self._sock, self.messages, self._done)
        )
        self._listener.start()
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [str(CALLVEIL), "run", "-c", str(box.config_path)],
                stdout=subprocess.DEVNULL,
                stderr=log,
                env={**os.environ, "NOTIFY_SOCKET": str(self._dir / "notify"), **(env or {})},
            )

    def fields(self) -> list[str]:
        return [line for message in list(self.messages) for line in message.splitlines()]

    def statuses(self) -> list[tuple[int, int, int, int]]:
        """(analysed, contract, not sampled, open) of every STATUS line so far."""
        found = (STATUS.match(f) for f in self.fields())
        return [tuple(int(g) for g in m.groups()) for m in found if m]  # type: ignore[misc]

    def log(self) -> list[dict[str, Any]]:
        """The log so far, one JSON object per line (a line that is not JSON fails the test)."""
        return [json.loads(line) for line in self.log_path.read_text().splitlines()]

    def wait_for(self, what: str, check: Callable[[], bool], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if self.process.poll() is not None:
                pytest.fail(f"the daemon exited ({self.process.returncode}) before {what}:\n"
                            f"{self.log_path.read_text()}")  # fmt: skip
            if time.monotonic() > deadline:
                pytest.fail(f"no {what} within {timeout} s:\n{self.log_path.read_text()}")
            time.sleep(0.05)

    def wait_ready(self, times: int = 1) -> None:
        self.wait_for("READY=1", lambda: self.fields().count("READY=1") >= times)

    def wait_log(self, event: str, timeout: float = 60) -> dict[str, Any]:
        def logged() -> list[dict[str, Any]]:
            return [e for e in self.log() if e["event"] == event]

        self.wait_for(f"{event!r} in the log", lambda: bool(logged()), timeout)
        return logged()[0]

    def wait_calls(self, started: int, timeout: float = 60) -> None:
        """Until ``started`` calls have been set up and none is open any more."""

        def done() -> bool:
            status = self.statuses()
            return bool(status) and sum(status[-1][:3]) == started and status[-1][3] == 0

        self.wait_for(f"{started} finished calls", done, timeout)

    def stop(self, timeout: float = 60) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self._done.set()
        self._listener.join()
        self._sock.close()
        shutil.rmtree(self._dir, ignore_errors=True)


# --- a box wired for loopback ------------------------------------------------------------------


def live_box(
    root: Path, sip_port: int, *, sample_rate: float = 1.0, sections: dict[str, str] | None = None
) -> Box:
    """The demo box capturing on ``lo``, SIPp's answerer as the operator side."""
    return demo_box(
        root,
        {
            "capture": f'interface = "lo"\nsip_ports = [{sip_port}]',
            "privacy": f"sample_rate = {sample_rate}\ntrim_seconds = {TRIM_S}\n"
            'sampling_key_file = "state/sampling.key"',
            "roles": f'operator_networks = ["{OPERATOR_IP}/32"]\n'
            f'customer_networks = ["{CUSTOMER_IP}/32"]\ncaller_default = "unknown"',
            "daemon": DAEMON,
            "aggregates": 'state_path = "state/aggregates.db"\nk = 2',
            **(sections or {}),
        },
    )


def counted(box: Box) -> tuple[int, int]:
    """(calls seen, calls analysed) in the open buckets on disk."""
    with contextlib.closing(sqlite3.connect(box.config.aggregates.state_path)) as db:
        rows = db.execute("SELECT state FROM open_buckets").fetchall()
    buckets = [from_state(json.loads(state)) for (state,) in rows]
    return sum(b.calls_seen for b in buckets), sum(b.calls_analysed for b in buckets)


def vault_records(box: Box) -> tuple[list[dict[str, Any]], list[bytes]]:
    """(summaries, recording parts) of the analytics partition; every record is decrypted."""
    summaries, recordings = [], []
    with box.vault() as vault:
        for info in [*vault.list("analytics"), *vault.list("contract")]:
            data = vault.get(info.id)
            assert scan({"kind": info.kind, "period": info.period, "phase": info.phase}) == []
            if info.kind == "summary":
                summaries.append(json.loads(data))
            elif info.partition == "analytics":
                recordings.append(data)
    return summaries, recordings


def clean_log(
    daemon: Running, known: list[str], *, errors: tuple[str, ...] = ()
) -> list[dict[str, Any]]:
    """The daemon's log entries, each scanned for personal data (its timestamp aside, as
    journald stamps every entry); ``errors``: the error-level events expected, in order."""
    entries = daemon.log()
    for entry in entries:
        line = {k: v for k, v in entry.items() if k != "timestamp"}
        assert scan(line, known=known) == [], line
    assert tuple(e["event"] for e in entries if e["level"] in ("error", "critical")) == errors
    return entries


def integrity(path: str) -> str:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return db.execute("PRAGMA integrity_check").fetchone()[0]


# --- real calls with real speech ----------------------------------------------------------------


def test_concurrent_calls_are_trimmed_disguised_sealed_and_counted(
    tmp_path: Path, speech: Speech, broker: Broker, tcti: str
) -> None:
    with Phones(speech, tmp_path / "sipp") as phones:
        box = live_box(
            tmp_path / "box",
            phones.sip_port,
            sections={"keys": tpm_section(tcti), "mqtt": mqtt_section(broker)},
        )
        with (
            Collector(broker, "callveil/v1/#", client_id="centre") as centre,
            Running(box, tmp_path / "daemon.log") as daemon,
        ):
            daemon.wait_ready()
            phones.call(4, speech.seconds).wait()
            daemon.wait_calls(4)
            assert daemon.stop() == 0
            arrivals = centre.snapshot()
        known = phones.identities()
        assert len(phones.call_ids()) == 4

    fields = daemon.fields()
    assert fields.index("READY=1") < fields.index("STOPPING=1")
    assert max(open_ for *_, open_ in daemon.statuses()) == 4  # all four were up at once
    assert any("broker connected" in f for f in fields if f.startswith("STATUS="))
    entries = clean_log(daemon, known)
    (stopped,) = [e for e in entries if e["event"] == "stopped"]
    assert stopped["calls_analytics"] == stopped["counted_analytics"] == 4
    assert stopped["sealed_analytics_summary"] == 4
    assert "chunks_lost" not in stopped  # four calls on this machine: nothing shed
    assert counted(box) == (4, 4)
    assert arrivals and all(scan(a.payload, known=known) == [] for a in arrivals)

    summaries, parts = vault_records(box)
    assert len(summaries) == 4
    for summary in summaries:
        assert scan(summary, known=known) == []
        assert {r["role"] for r in summary["roles"]} == {"operator", "customer"}
        assert 0 < summary["analysed_share"] <= 1
    recordings = {comment(p).split()[2]: p for p in parts if " part 0 " in comment(p)}
    assert len(recordings) == 4
    for data in recordings.values():
        rate, frames, _ = read_wav_bytes(data)
        assert comment(data).endswith("channels operator,customer")
        for channel, heard in enumerate((speech.answerer, speech.caller)):
            assert_trimmed_and_disguised(frames[:, channel], rate, heard)


def assert_trimmed_and_disguised(kept: np.ndarray, rate: int, heard: np.ndarray) -> None:
    """``kept`` follows ``heard`` after the trim (same loudness contour) but not its signal."""
    up = Resampler(RATE, rate)
    original = heard.astype(np.float32) / 32768
    original = np.concatenate([up.process(original), up.flush()])[up.delay :]
    after_trim = original[round(TRIM_S * rate) :]
    voice = kept.astype(np.float32) / 32768
    assert np.flatnonzero(voice).size > 2 * rate  # seconds of speech were kept
    assert voice.size <= after_trim.size + rate // 50  # nothing from before the cut
    # the first packets may reach the capture before the kernel filter lets their port in, so
    # the kept audio may start a few 20 ms blocks late: find that lag on the loudness contour
    ours = envelope(voice)
    theirs = envelope(after_trim)
    lags = range(min(25, theirs.size - ours.size + 1))
    scores = [correlation(ours, theirs[lag : lag + ours.size]) for lag in lags]
    lag = int(np.argmax(scores))
    assert scores[lag] > 0.7, f"loudness contours differ: {max(scores):.2f}"
    aligned = after_trim[lag * rate // 50 :][: voice.size]
    speaking = np.flatnonzero(voice[: aligned.size])
    assert abs(correlation(voice[speaking], aligned[speaking])) < 0.3  # the voice is disguised


def test_the_analysed_share_is_what_the_sampling_key_decides(
    tmp_path: Path, speech: Speech
) -> None:
    with Phones(speech, tmp_path / "sipp") as phones:
        box = live_box(tmp_path / "box", phones.sip_port, sample_rate=0.5)
        with Running(box, tmp_path / "daemon.log") as daemon:
            daemon.wait_ready()
            phones.call(10, 5.0).wait()
            daemon.wait_calls(10)
            assert daemon.stop() == 0
        call_ids = phones.call_ids()
        known = phones.identities()
    assert len(call_ids) == 10
    config = box.config
    key_file = Path(config.privacy.sampling_key_file)
    assert key_file.is_file()  # the daemon made the box's key at its first start
    decider = PolicyDecider(
        config.privacy, config.contract, config.queues, SamplingKey.load_or_create(key_file)
    )
    # at 0.5, ten calls all fall on one side with probability 2/1024; either way the daemon
    # must have chosen exactly the calls its key chooses
    chosen = sum(decider.decide(c, [CALLED, CALLED], {}) is Policy.ANALYTICS for c in call_ids)
    assert daemon.statuses()[-1][:3] == (chosen, 0, 10 - chosen)
    assert counted(box) == (10, chosen)
    summaries, parts = vault_records(box)
    assert len(summaries) == chosen and len(parts) >= chosen
    clean_log(daemon, known)


# --- faults ------------------------------------------------------------------------------------


def outbox_entries(box: Box) -> int:
    with contextlib.closing(sqlite3.connect(box.config.mqtt.outbox_path)) as db:
        return db.execute("SELECT count(*) FROM entries").fetchone()[0]


def test_a_broker_outage_during_calls_and_release_loses_nothing(
    tmp_path: Path, speech: Speech, broker: Broker
) -> None:
    next_day = tomorrow_env()
    keys = tmp_path / "keys"
    keys.mkdir()
    aggregates = topic("demo", BOX, AGGREGATES)
    with (
        Phones(speech, tmp_path / "sipp") as phones,
        Collector(broker, "callveil/v1/#", client_id="centre") as centre,
    ):
        box = live_box(tmp_path / "box", phones.sip_port, sections={"mqtt": mqtt_section(broker)})
        registered = box.attest("signing-key", "--out", str(keys / f"{BOX}.pem"))
        assert registered.returncode == 0, registered.stderr
        with Running(box, tmp_path / "today.log") as today:
            today.wait_ready()
            calls = phones.call(2, 6.0)
            today.wait_for("two calls up", lambda: any(s[3] == 2 for s in today.statuses()))
            broker.stop()  # in the middle of both calls
            calls.wait()
            today.wait_calls(2)
            assert today.stop() == 0
        assert counted(box) == (2, 2)

        # the next day, with the broker still down: today's bucket closes and is released
        with Running(box, tmp_path / "tomorrow.log", env=next_day) as tomorrow:
            tomorrow.wait_ready()
            tomorrow.wait_for("the released bucket in the outbox", lambda: outbox_entries(box) == 1)
            assert counted(box) == (0, 0)
            assert "broker unreachable" in tomorrow.fields()[-1]
            broker.start()
            tomorrow.wait_for("the broker's acknowledgement", lambda: outbox_entries(box) == 0)
            assert tomorrow.stop() == 0
        assert centre.wait_for(lambda got: any(a.topic == aggregates for a in got), 30)
        arrivals = centre.snapshot()
        known = phones.identities()

    ring = KeyRing(keys)
    # QoS 1 may deliver a payload twice; the centre knows a repeat by its sequence number
    received = {r.seq: r for a in arrivals if a.topic == aggregates
                for r in [verify(ring, a.topic, a.payload)]}  # fmt: skip
    (body,) = [r.body for r in received.values()]
    assert (body["calls_seen"], body["calls_analysed"]) == (2, 2)
    assert all(scan(a.payload, known=known) == [] for a in arrivals)
    clean_log(today, known)
    assert any(e["event"] == "bucket_released" for e in clean_log(tomorrow, known))


def test_sigkill_in_the_middle_of_calls_then_a_restart_counts_every_call_once(
    tmp_path: Path, speech: Speech
) -> None:
    with Phones(speech, tmp_path / "sipp") as phones:
        box = live_box(tmp_path / "box", phones.sip_port)
        with Running(box, tmp_path / "first.log") as first:
            first.wait_ready()
            phones.call(2, 5.0).wait()
            first.wait_for("two calls counted", lambda: counted(box) == (2, 2))
            cut_short = phones.call(3, speech.seconds)
            first.wait_for("three calls up", lambda: any(s[3] == 3 for s in first.statuses()))
            time.sleep(3)  # their audio is being analysed
            first.process.kill()
            assert first.process.wait(10) == -signal.SIGKILL
        with Running(box, tmp_path / "second.log") as second:
            second.wait_ready()  # while the three calls are still going
            cut_short.wait()
            phones.call(2, 5.0).wait()
            second.wait_calls(2)  # the three it joined late are not calls to it
            assert second.stop() == 0
        known = phones.identities()

    assert counted(box) == (4, 4)  # neither lost nor counted twice; the cut calls never ended
    summaries, parts = vault_records(box)  # every record still decrypts
    assert len(summaries) == 4 and len(parts) >= 4
    config = box.config
    for path in (config.vault.path, config.aggregates.state_path):
        assert integrity(path) == "ok"
    clean_log(second, known)


def test_an_unreachable_tpm_stops_the_start_with_a_key_error_and_no_fallback(
    tmp_path: Path,
) -> None:
    closed = free_port()  # nobody listens there
    keys = tpm_section(f"swtpm:host=127.0.0.1,port={closed}")
    # a software key is configured too: it must not be used in the TPM's place
    keys += '\nkey_file = "state/keys.soft"\npassphrase_file = "state/passphrase"'
    (sip_port,) = free_udp_ports(1)
    box = live_box(tmp_path / "box", sip_port, sections={"keys": keys})
    with Running(box, tmp_path / "daemon.log") as daemon:
        assert daemon.process.wait(60) == 2
    output = daemon.log_path.read_text()
    assert "READY=1" not in daemon.fields()
    assert '"started"' not in output
    state = box.config_path.parent / "state"
    assert not (state / "keys.soft").exists()
    assert not (state / "vault.db").exists()
    assert "TPM" in output and str(closed) in output, output


def burst(sip: int, operator_rtp: int, customer_rtp: int, count: int, seed: int) -> None:
    """``count`` malformed datagrams at the SIP port and a call's two RTP ports.

    Random bytes, SIP-looking starts with garbage after them, and RTP headers of the call's
    codec with random sequence numbers, timestamps and sources. Half of those to the operator
    side come from the customer's own RTP address: SIPp sends RTP through a raw socket and
    binds only its first call's media port, so a later call's port is free to bind.
    """
    rng = random.Random(seed)
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as spoofed,
    ):
        stranger.bind((CUSTOMER_IP, 0))
        spoofed.bind((CUSTOMER_IP, customer_rtp))
        targets = [
            (stranger, (OPERATOR_IP, sip)),
            (stranger, (OPERATOR_IP, operator_rtp)),
            (spoofed, (OPERATOR_IP, operator_rtp)),
            (stranger, (CUSTOMER_IP, customer_rtp)),
        ]
        for i in range(count):
            sock, address = targets[i % len(targets)]
            garbage = rng.randbytes(rng.randrange(0, 1400))
            kind = rng.randrange(3)
            if kind == 1:
                garbage = b"INVITE sip:" + garbage
            elif kind == 2:
                garbage = build_rtp(
                    garbage,
                    sequence=rng.getrandbits(16),
                    timestamp=rng.getrandbits(32),
                    ssrc=rng.getrandbits(32),
                )
            sock.sendto(garbage, address)


def test_a_burst_of_malformed_packets_leaves_the_call_analysed(
    tmp_path: Path, speech: Speech
) -> None:
    with Phones(speech, tmp_path / "sipp") as phones:
        box = live_box(tmp_path / "box", phones.sip_port)
        with Running(box, tmp_path / "daemon.log") as daemon:
            daemon.wait_ready()
            caller = phones.call(2, speech.seconds)
            daemon.wait_for("the calls up", lambda: any(s[3] == 2 for s in daemon.statuses()))
            time.sleep(TRIM_S + 1)  # past the trim: the burst lands in audio being analysed
            # at the second call, whose ports are the first call's plus four
            burst(phones.sip_port, caller.answer_media + 4, caller.media + 4, 2000, seed=7)
            time.sleep(0.5)
            assert daemon.process.poll() is None
            caller.wait()
            daemon.wait_calls(2)
            assert daemon.stop() == 0
        known = phones.identities()
    assert counted(box) == (2, 2)
    summaries, parts = vault_records(box)
    assert len(summaries) == 2 and len(parts) >= 2
    for summary in summaries:
        assert {r["role"] for r in summary["roles"]} == {"operator", "customer"}
    entries = clean_log(daemon, known)
    assert not [e for e in entries if e["event"] == "call_failed"]
    (captured,) = [e for e in entries if e["event"] == "captured"]
    assert captured["sip_malformed"] == 500  # the burst's quarter at the SIP port, every one
    assert captured["rtp_malformed"] > 0 and captured["competing_packets"] > 0


def fill(path: Path) -> None:
    """Write ``path`` until its filesystem has no room left."""
    with path.open("wb", buffering=0) as out:
        for block in (1 << 20, 4096, 512):
            with contextlib.suppress(OSError):
                while True:
                    out.write(bytes(block))


@pytest.fixture
def small_state(tmp_path: Path) -> Iterator[Path]:
    """``box/state`` on a 16 MiB tmpfs of its own."""
    mount, umount = shutil.which("mount"), shutil.which("umount")
    if mount is None or umount is None or os.geteuid() != 0:
        pytest.skip("mounting a small filesystem needs root and util-linux")
    state = tmp_path / "box" / "state"
    state.mkdir(parents=True)
    subprocess.run([mount, "-t", "tmpfs", "-o", "size=16m,mode=0700", "tmpfs", str(state)],
                   check=True)  # fmt: skip
    try:
        yield state
    finally:
        subprocess.run([umount, str(state)], check=True)


def test_a_full_disk_is_logged_waited_out_and_loses_nothing(
    tmp_path: Path, speech: Speech, small_state: Path
) -> None:
    filler = small_state / "filler"
    with Phones(speech, tmp_path / "sipp") as phones:
        box = live_box(
            tmp_path / "box", phones.sip_port, sections={"daemon": DAEMON + "\nstall_s = 2"}
        )
        watchdog = {"WATCHDOG_USEC": "1000000"}  # pings every 0.5 s while nothing is stuck
        with Running(box, tmp_path / "daemon.log", env=watchdog) as daemon:
            daemon.wait_ready()
            fill(filler)
            phones.call(2, 6.0).wait()
            failed = daemon.wait_log("store_failed")
            pings = daemon.fields().count("WATCHDOG=1")
            time.sleep(3)  # the writer waits for room, longer than stall_s
            assert daemon.fields().count("WATCHDOG=1") >= pings + 4
            assert counted(box) == (0, 0)
            filler.unlink()
            daemon.wait_log("store_recovered")
            daemon.wait_calls(2)
            assert daemon.stop() == 0
        known = phones.identities()
    assert "free space" in failed["fix"] and "full" in failed["error"]
    assert counted(box) == (2, 2)
    summaries, parts = vault_records(box)
    assert len(summaries) == 2 and len(parts) >= 2
    config = box.config
    for path in (config.vault.path, config.aggregates.state_path):
        assert integrity(path) == "ok"
    clean_log(daemon, known, errors=("store_failed",))  # once, however long the wait


def test_sighup_applies_the_log_level_and_survives_a_broken_file(tmp_path: Path) -> None:
    (sip_port,) = free_udp_ports(1)
    box = live_box(tmp_path / "box", sip_port)
    original = box.config_path.read_text()

    def reload(text: str) -> None:
        box.config_path.write_text(text)
        daemon.process.send_signal(signal.SIGHUP)

    with Running(box, tmp_path / "daemon.log") as daemon:
        daemon.wait_ready()
        reload(replace_sections(original, {"logging": 'level = "error"\nformat = "auto"'}))
        daemon.wait_ready(2)
        reload(replace_sections(original, {"logging": 'level = "debug"\nformat = "auto"'}))
        daemon.wait_ready(3)
        daemon.wait_log("reloaded")
        reload(replace_sections(original, {"privacy": "sample_rate = 7"}))
        refused = daemon.wait_log("reload_refused")
        daemon.wait_ready(4)
        after = len(daemon.statuses())
        daemon.wait_for("a status after the refusal", lambda: len(daemon.statuses()) > after)
        assert daemon.stop() == 0

    fields = daemon.fields()
    assert fields.count("RELOADING=1") == 3
    readies = [fields[i + 1] for i, f in enumerate(fields) if f == "READY=1"]
    assert readies[1:] == ["STATUS=configuration reloaded"] * 2 + [
        "STATUS=reload refused: the configuration file is invalid"
    ]
    events = [e["event"] for e in daemon.log()]
    # at level "error" the first reload's own line was not written: the level took effect
    assert events.count("reloaded") == 1
    assert "reload_needs_restart" not in events  # only the log level changed
    assert "privacy.sample_rate" in refused["error"] and refused["fix"]
    assert events[-1] == "stopped"
