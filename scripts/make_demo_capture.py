"""Build the demo capture: two inbound calls to a call center, as a mirror port would see them.

Call 1 is a billing complaint (sampled for analytics), call 2 concludes a contract (marked by an
``X-Contract: conclude`` header in its INVITE). Each has full SIP over UDP, 20 ms G.711 A-law RTP
in both directions, RTCP sender reports, and call 1 an RFC 4733 DTMF digit. The voices are
espeak-ng's Italian voice resampled to 8 kHz by sox; the audio is encoded with ``audioop``, not
with the project's codecs, so the demo checks the decoder instead of mirroring it.

Everything is deterministic (fixed seeds, fixed start time): the same tool versions produce the
same bytes. Addresses are from the documentation ranges of RFC 5737 and numbers are fictional.

Usage: .venv/bin/python scripts/make_demo_capture.py [--output demo/demo-calls.pcap]
"""

from __future__ import annotations

import argparse
import itertools
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gateway.capture.pcapwriter import PcapWriter, udp_frame

# the G.711 encoder, independent of the project's decoder (audioop-lts from Python 3.13 on)
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = REPO / "demo" / "demo-calls.pcap"

SEED = 20260115
BASE_TIME = 1_768_471_200.0  # 2026-01-15 10:00:00 UTC
RATE = 8000
PTIME = 0.020
FRAME = int(RATE * PTIME)  # samples per RTP packet
PT_PCMA, PT_EVENT = 8, 101
NTP_OFFSET = 2_208_988_800  # seconds from 1900 (NTP era 0) to 1970
SR_FIRST, SR_EVERY = 5.0, 10.0  # RTCP sender reports: first after 5 s of media, then every 10 s
NOISE_PEAK = 12  # line noise between words, about -65 dBFS: real lines are never digital zero
SPEECH_PEAK = 0.5  # speech normalised to -6 dBFS peak

SIP_PORT = 5060
TRUNK = "198.51.100.10"  # the carrier's session border controller: customers come from there
PBX = "192.0.2.10"  # the call center's PBX (signalling)
PBX_MEDIA = "192.0.2.20"  # the PBX's media gateway
CENTER = "+390200000100"  # the call center's (fictional) number
OPERATOR, CUSTOMER = "operator", "customer"
FEMALE, MALE = "it+f3", "it"


@dataclass(frozen=True)
class Turn:
    speaker: str  # OPERATOR or CUSTOMER
    text: str = ""
    dtmf: int | None = None  # an RFC 4733 event instead of speech


@dataclass(frozen=True)
class CallPlan:
    customer_number: str
    start: float  # seconds after BASE_TIME when the INVITE is sent
    ring: float  # seconds from INVITE to answer
    voices: dict[str, str]
    turns: tuple[Turn, ...]
    trunk_rtp: int
    pbx_rtp: int
    hangs_up: str
    extra_headers: tuple[tuple[str, str], ...] = ()


CALLS = (
    CallPlan(
        customer_number="+390200000417",
        start=0.5,
        ring=4.0,
        voices={OPERATOR: FEMALE, CUSTOMER: MALE},
        turns=(
            Turn(OPERATOR, "Buongiorno, sono Giulia del servizio clienti."),
            Turn(
                CUSTOMER,
                "Buongiorno, sono Marco Bellini. Ho un problema con la bolletta di questo mese, "
                "l'importo è troppo alto.",
            ),
            Turn(OPERATOR, "Per verificare il contratto, prema uno."),
            Turn(CUSTOMER, dtmf=1),
            Turn(OPERATOR, "Grazie. Quanto paga di solito?"),
            Turn(CUSTOMER, "Circa sessanta euro, questa volta centottanta. Non è giusto."),
            Turn(
                OPERATOR,
                "C'è un conguaglio dei consumi dell'anno scorso. Posso dividerlo in tre rate.",
            ),
            Turn(CUSTOMER, "Va bene, grazie. Arrivederci."),
            Turn(OPERATOR, "Grazie a lei, buona giornata."),
        ),
        trunk_rtp=40000,
        pbx_rtp=10000,
        hangs_up=CUSTOMER,
    ),
    CallPlan(
        customer_number="+390200000852",
        start=18.0,
        ring=3.0,
        voices={OPERATOR: MALE, CUSTOMER: FEMALE},
        turns=(
            Turn(OPERATOR, "Buongiorno, sono Paolo dell'ufficio contratti."),
            Turn(CUSTOMER, "Sono Laura Ferri, vorrei attivare l'offerta luce e gas."),
            Turn(
                OPERATOR,
                "Prezzo bloccato per due anni, nessun costo di attivazione. "
                "Conferma di concludere il contratto?",
            ),
            Turn(CUSTOMER, "Sì, confermo e accetto le condizioni."),
            Turn(OPERATOR, "Il contratto è concluso. Buona giornata."),
            Turn(CUSTOMER, "Grazie, arrivederci."),
        ),
        trunk_rtp=40002,
        pbx_rtp=10002,
        hangs_up=OPERATOR,
        extra_headers=(("X-Contract", "conclude"),),
    ),
)


# --- speech -------------------------------------------------------------------------------------


def speak(text: str, voice: str, workdir: Path) -> np.ndarray:
    """``text`` spoken by espeak-ng, as int16 at 8 kHz, without leading or trailing silence."""
    wav, raw = workdir / "speech.wav", workdir / "speech.raw"
    subprocess.run(["espeak-ng", "-v", voice, "-s", "150", "-w", str(wav), text], check=True)
    # -D: no dither (it is random), -R: repeatable: the same input gives the same samples
    to_8k = f"-r {RATE} -c 1 -b 16 -e signed-integer -t raw".split()
    subprocess.run(["sox", "-D", "-R", str(wav), *to_8k, str(raw)], check=True)
    pcm = np.frombuffer(raw.read_bytes(), dtype="<i2").astype(np.float64)
    loud = np.flatnonzero(np.abs(pcm) > 0.01 * np.abs(pcm).max())
    pcm = pcm[loud[0] : loud[-1] + 1]
    return pcm * (SPEECH_PEAK * 32767 / np.abs(pcm).max())


def line_noise(n: int, seed: int) -> np.ndarray:
    # raw PCG64 output is stable across numpy versions (distributions are not guaranteed to be)
    raw = np.random.PCG64(seed).random_raw(n)
    a = (raw & 0xFFFF).astype(np.float64) / 0xFFFF
    b = ((raw >> 16) & 0xFFFF).astype(np.float64) / 0xFFFF
    return (a - b) * NOISE_PEAK  # triangular noise, like a quiet analog line


# --- RTP and RTCP -------------------------------------------------------------------------------


@dataclass
class Sender:
    """One direction's RTP sender: random SSRC and bases as RFC 3550 asks."""

    src: tuple[str, int]
    dst: tuple[str, int]
    ssrc: int
    seq0: int
    ts0: int
    cname: str
    sent: list[tuple[float, int, int, bool]] = field(default_factory=list)  # time, ts, size, audio

    @classmethod
    def new(cls, rng: random.Random, src: tuple[str, int], dst: tuple[str, int]) -> Sender:
        return cls(
            src,
            dst,
            rng.getrandbits(32),
            rng.getrandbits(16),
            rng.getrandbits(32),
            rng.randbytes(8).hex(),
        )


Packet = tuple[float, str, int, str, int, bytes]


def rtp_packets(
    sender: Sender,
    pcm: np.ndarray,
    start: float,
    events: list[tuple[int, int]],
    rng: random.Random,
) -> list[Packet]:
    """20 ms A-law packets of ``pcm`` from ``start``; ``events``: (first frame, DTMF digit)."""
    alaw = audioop.lin2alaw(np.clip(np.rint(pcm), -32768, 32767).astype("<i2").tobytes(), 2)
    frames = len(alaw) // FRAME
    replaced: dict[int, tuple[int, bytes, bool]] = {}  # frame -> (timestamp frame, payload, M)
    for first, digit in events:
        # 200 ms of tone: 10 updates, the last of them (with E set) sent three times (RFC 4733)
        for i in range(12):
            done = i >= 9
            duration = min(i + 1, 10) * FRAME
            payload = struct.pack("!BBH", digit, (0x80 if done else 0) | 10, duration)
            replaced[first + i] = (first, payload, i == 0)
    out: list[Packet] = []
    for k in range(frames):
        stamp_frame, payload, marker = replaced.get(k, (k, b"", k == 0))
        pt = PT_EVENT if payload else PT_PCMA
        payload = payload or alaw[k * FRAME : (k + 1) * FRAME]
        seq = (sender.seq0 + k) & 0xFFFF
        stamp = (sender.ts0 + stamp_frame * FRAME) & 0xFFFFFFFF
        header = struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | pt, seq, stamp, sender.ssrc)
        # the mirror sees each packet a little after its nominal time, never out of order
        t = start + k * PTIME + rng.random() * 0.0008
        sender.sent.append((t, stamp, len(payload), pt == PT_PCMA))
        out.append((t, *sender.src, *sender.dst, header + payload))
    return out


def report_times(sender: Sender, start: float, end: float) -> list[float]:
    first = start + SR_FIRST + (sender.ssrc % 1000) / 1000  # senders do not report in lockstep
    return [first + i * SR_EVERY for i in range(int((end - first) // SR_EVERY) + 1)]


def rtcp_reports(
    me: Sender, peer: Sender, times: list[float], peer_times: list[float]
) -> list[Packet]:
    """Sender reports with a reception report on the peer, plus SDES CNAME (RFC 3550)."""
    out: list[Packet] = []
    for t in times:
        mine = [p for p in me.sent if p[0] <= t]
        ntp_sec, ntp_frac = _ntp(t)
        elapsed = round((t - mine[0][0]) * RATE)
        sr = struct.pack(
            "!IIIIII", me.ssrc, ntp_sec, ntp_frac, (me.ts0 + elapsed) & 0xFFFFFFFF,
            len(mine), sum(p[2] for p in mine),
        )  # fmt: skip
        heard = [p for p in peer_times if p < t]
        body = sr + _report_block(
            peer, [p for p in peer.sent if p[0] <= t], t, heard[-1] if heard else None
        )
        report = struct.pack("!BBH", 0x81, 200, (4 + len(body)) // 4 - 1) + body + _sdes(me)
        out.append((t, me.src[0], me.src[1] + 1, me.dst[0], me.dst[1] + 1, report))
    return out


def _ntp(t: float) -> tuple[int, int]:
    ntp = t + NTP_OFFSET
    return int(ntp), int((ntp % 1) * 2**32)


def _report_block(
    peer: Sender, received: list[tuple[float, int, int, bool]], now: float, last_sr: float | None
) -> bytes:
    jitter = 0.0  # RFC 3550 A.8, in timestamp units, over audio: DTMF holds its timestamp
    audio = [(t, stamp) for t, stamp, _, is_audio in received if is_audio]
    for (t0, s0), (t1, s1) in itertools.pairwise(audio):
        transit_delta = (t1 - t0) * RATE - ((s1 - s0) & 0xFFFFFFFF)
        jitter += (abs(transit_delta) - jitter) / 16
    highest = peer.seq0 + len(received) - 1  # extended: the cycle count lands above bit 16
    lsr = dlsr = 0
    if last_sr is not None:
        sec, frac = _ntp(last_sr)
        lsr = ((sec & 0xFFFF) << 16) | (frac >> 16)
        dlsr = round((now - last_sr) * 65536)
    return struct.pack("!IIIIII", peer.ssrc, 0, highest, round(jitter), lsr, dlsr)


def _sdes(me: Sender) -> bytes:
    item = bytes([1, len(me.cname)]) + me.cname.encode() + b"\x00"  # CNAME, then end of list
    chunk = struct.pack("!I", me.ssrc) + item
    chunk += b"\x00" * (-len(chunk) % 4)
    return struct.pack("!BBH", 0x81, 202, (4 + len(chunk)) // 4 - 1) + chunk


# --- SIP ----------------------------------------------------------------------------------------


def sip_message(start_line: str, headers: list[tuple[str, str]], body: bytes = b"") -> bytes:
    lines = [start_line, *(f"{name}: {value}" for name, value in headers)]
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def sdp(addr: str, port: int, session: int, payload_types: dict[int, str]) -> bytes:
    lines = [
        "v=0",
        f"o=- {session} {session} IN IP4 {addr}",
        "s=-",
        f"c=IN IP4 {addr}",
        "t=0 0",
        f"m=audio {port} RTP/AVP {' '.join(map(str, payload_types))}",
        *(f"a=rtpmap:{pt} {name}" for pt, name in payload_types.items()),
        f"a=fmtp:{PT_EVENT} 0-16",
        "a=ptime:20",
        "a=sendrecv",
    ]
    return ("\r\n".join(lines) + "\r\n").encode()


Tracks = dict[str, np.ndarray]  # speaker -> PCM of the whole call, line noise between turns
Events = dict[str, list[tuple[int, int]]]  # speaker -> (first frame, DTMF digit)


def place_turns(plan: CallPlan, rng: random.Random, workdir: Path) -> tuple[Tracks, Events, int]:
    """Each direction's audio and DTMF events, and the call's length in samples."""
    speech: dict[str, list[tuple[int, np.ndarray]]] = {OPERATOR: [], CUSTOMER: []}
    events: Events = {OPERATOR: [], CUSTOMER: []}
    cursor = 0.6 * RATE
    for turn in plan.turns:
        if turn.dtmf is not None:
            events[turn.speaker].append((int(cursor) // FRAME + 1, turn.dtmf))
            cursor += 0.24 * RATE
        else:
            pcm = speak(turn.text, plan.voices[turn.speaker], workdir)
            speech[turn.speaker].append((int(cursor), pcm))
            cursor += len(pcm)
        cursor += (0.35 + 0.3 * rng.random()) * RATE  # the other side waits, then answers
    length = int(cursor) + 10 * FRAME
    length -= length % FRAME
    tracks = {}
    for role, seed in ((OPERATOR, rng.getrandbits(64)), (CUSTOMER, rng.getrandbits(64))):
        track = line_noise(length, seed)
        for offset, pcm in speech[role]:
            track[offset : offset + len(pcm)] += pcm
        tracks[role] = track
    return tracks, events, length


def build_call(plan: CallPlan, number: int, workdir: Path) -> list[Packet]:
    rng = random.Random(SEED * 10 + number)
    tracks, events, length = place_turns(plan, rng, workdir)
    t_invite = BASE_TIME + plan.start
    answered = t_invite + plan.ring
    media_start = answered + 0.02
    hangup = media_start + length / RATE + 0.05

    def tag() -> str:
        return rng.randbytes(4).hex()

    def via(host: str) -> tuple[str, str]:
        return ("Via", f"SIP/2.0/UDP {host}:{SIP_PORT};branch=z9hG4bK{rng.randbytes(8).hex()}")

    customer_uri = f"sip:{plan.customer_number}@{TRUNK}"
    center_uri = f"sip:{CENTER}@{PBX}"
    call_id = ("Call-ID", f"{rng.randbytes(16).hex()}@{TRUNK}")
    caller = ("From", f"<{customer_uri}>;tag={tag()}")
    callee = ("To", f"<{center_uri}>")
    answered_callee = ("To", f"<{center_uri}>;tag={tag()}")
    hops = ("Max-Forwards", "70")
    allow = ("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO")
    pbx_contact = ("Contact", f"<{center_uri}:{SIP_PORT}>")
    customer_contact = ("Contact", f"<{customer_uri}:{SIP_PORT}>")
    invite_cseq = ("CSeq", "1 INVITE")
    offer = sdp(
        TRUNK,
        plan.trunk_rtp,
        rng.getrandbits(31),
        {PT_PCMA: "PCMA/8000", 0: "PCMU/8000", PT_EVENT: "telephone-event/8000"},
    )
    answer = sdp(
        PBX_MEDIA,
        plan.pbx_rtp,
        rng.getrandbits(31),
        {PT_PCMA: "PCMA/8000", PT_EVENT: "telephone-event/8000"},
    )
    invite_via = via(TRUNK)
    trunk, pbx = (TRUNK, SIP_PORT), (PBX, SIP_PORT)
    signalling = [
        (t_invite, trunk, pbx, sip_message(
            f"INVITE {center_uri}:{SIP_PORT} SIP/2.0",
            [invite_via, hops, caller, callee, call_id, invite_cseq, customer_contact, allow,
             *plan.extra_headers],
            offer,
        )),
        (t_invite + 0.004, pbx, trunk, sip_message(
            "SIP/2.0 100 Trying", [invite_via, caller, callee, call_id, invite_cseq]
        )),
        (t_invite + 0.180, pbx, trunk, sip_message(
            "SIP/2.0 180 Ringing",
            [invite_via, caller, answered_callee, call_id, invite_cseq, pbx_contact],
        )),
        (answered, pbx, trunk, sip_message(
            "SIP/2.0 200 OK",
            [invite_via, caller, answered_callee, call_id, invite_cseq, pbx_contact, allow],
            answer,
        )),
        (answered + 0.012, trunk, pbx, sip_message(
            f"ACK {center_uri}:{SIP_PORT} SIP/2.0",
            [via(TRUNK), hops, caller, answered_callee, call_id, ("CSeq", "1 ACK")],
        )),
    ]  # fmt: skip
    if plan.hangs_up == CUSTOMER:
        bye_via, ends, src, dst = via(TRUNK), [caller, answered_callee], trunk, pbx
        bye_line, cseq = f"BYE {center_uri}:{SIP_PORT} SIP/2.0", ("CSeq", "2 BYE")
    else:  # the operator's side sends the BYE: From and To swap, its own CSeq space
        bye_via, src, dst = via(PBX), pbx, trunk
        ends = [("From", answered_callee[1]), ("To", caller[1])]
        bye_line, cseq = f"BYE {customer_uri}:{SIP_PORT} SIP/2.0", ("CSeq", "1 BYE")
    signalling += [
        (hangup, src, dst, sip_message(bye_line, [bye_via, hops, *ends, call_id, cseq])),
        (hangup + 0.009, dst, src, sip_message("SIP/2.0 200 OK", [bye_via, *ends, call_id, cseq])),
    ]

    customer = Sender.new(rng, (TRUNK, plan.trunk_rtp), (PBX_MEDIA, plan.pbx_rtp))
    operator = Sender.new(rng, (PBX_MEDIA, plan.pbx_rtp), (TRUNK, plan.trunk_rtp))
    packets = [(t, *src, *dst, message) for t, src, dst, message in signalling]
    packets += rtp_packets(operator, tracks[OPERATOR], media_start, events[OPERATOR], rng)
    packets += rtp_packets(customer, tracks[CUSTOMER], media_start + 0.010, events[CUSTOMER], rng)
    customer_times = report_times(customer, media_start, hangup)
    operator_times = report_times(operator, media_start, hangup)
    packets += rtcp_reports(customer, operator, customer_times, operator_times)
    packets += rtcp_reports(operator, customer, operator_times, customer_times)
    return packets


def build(output: Path) -> int:
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed; install it (scripts/setup does) and run again")
    with tempfile.TemporaryDirectory() as tmp:
        packets = [p for n, plan in enumerate(CALLS, 1) for p in build_call(plan, n, Path(tmp))]
    packets.sort(key=lambda p: p[0])  # stable: equal times keep their build order
    output.parent.mkdir(parents=True, exist_ok=True)
    with PcapWriter(output) as writer:
        for t, src, sport, dst, dport, payload in packets:
            writer.write(t, udp_frame(src, sport, dst, dport, payload))
    return len(packets)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="pcap to write")
    args = parser.parse_args()
    count = build(args.output)
    print(f"wrote {args.output} ({count} packets, {args.output.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
