"""Capture-stage benchmark: how many concurrent G.711 calls one core follows in real time.

For each N it builds a mirror of N concurrent SIP calls with two-way G.711 media from a real
capture: copies of the template call, each re-addressed (its own IP addresses, media ports,
Call-IDs and SSRCs, rewritten in the SIP and SDP text too) and shifted by a few seconds so that
the copies overlap. It then times, each in a fresh process so that peak memory is its own:

- ``CaptureSession`` over the file at 10 % sampling (``trim_seconds = 10``), and at 100 %;
- ``tshark -n -r FILE -q -z rtp,streams`` and a dpkt parse (Ethernet, IP, UDP, RTP header),
  as peers that read the same file;
- live capture from loopback, when ``gateway.capture.live`` exists.

A "call" is one SIP dialog with media in both directions, which is what the capture stage counts
(a call through a back-to-back PBX shows two). The real-time factor is the capture's duration
over the CPU time spent on it, and N times it is the number of such calls one core sustains.

Run by hand (not part of the tests); the default run takes several minutes on two cores:
    .venv/bin/python bench/capture.py [N ...] [--template FILE]
Template hosts must be IPv4; other frames of the template (IPv6, TCP) are left out.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import hashlib
import heapq
import json
import os
import random
import re
import resource
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.capture.session import CaptureSession

# gateway, dpkt and numpy are imported inside the functions that use them: each measuring child
# process then loads only what it measures, and its peak memory is its own.

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TEMPLATE = "SIP-RTP-Normal_Call_two_parties.pcap"
DEFAULT_CALLS = (100, 500, 1000, 2000)
SAMPLED, FULL = 0.1, 1.0
TRIM_SECONDS = 10.0
MEDIA_PORT_BASE, MEDIA_PORT_SPAN = 10000, 50000  # re-addressed media ports stay in 10000-59999
_SIP_START_LINE = re.compile(rb"[A-Z]+ \S+ SIP/2\.0\r\n|SIP/2\.0 \d{3} ")
SIP, RTP, RTCP, OTHER = range(4)
_V2 = frozenset(bytes([b]) for b in range(0x80, 0xC0))  # first byte of RTP/RTCP version 2


def _is_sip(payload: bytes) -> bool:
    return _SIP_START_LINE.match(payload) is not None


def shared_dir() -> Path:
    return Path(os.environ.get("CALLVEIL_SHARED", REPO.parent / "shared"))


# --- the template ---------------------------------------------------------------------------


@dataclass(slots=True)
class Template:
    """The UDP datagrams of one real call, from its first INVITE to the answer to its last BYE."""

    hosts: list[str]  # IPv4 addresses of the hosts that take part (SIP or SDP)
    media_ports: set[int]
    dialogs: int  # answered INVITE dialogs (call legs) in the window
    duration: float
    # (seconds from the window start, src host, sport, dst host, dport, kind, payload)
    datagrams: list[tuple[float, int, int, int, int, int, bytes]] = field(default_factory=list)


def load_template(path: Path) -> Template:
    from gateway.capture.datagram import UDP
    from gateway.capture.packets import PacketDecoder
    from gateway.capture.pcapfile import CaptureReader
    from gateway.capture.rtp import is_rtcp

    decoder = PacketDecoder()
    with CaptureReader(path) as reader:
        datagrams = [
            dg
            for frame in reader
            for dg in decoder.decode(frame)
            if dg.proto == UDP and len(dg.src) == 4
        ]
    sip = [dg for dg in datagrams if _is_sip(dg.payload)]
    invites = [dg for dg in sip if dg.payload.startswith(b"INVITE ")]
    if not invites:
        sys.exit(f"{path}: no INVITE over UDP/IPv4; pick a capture of a call with SIP and RTP")
    start = invites[0].ts
    byes = [dg.ts for dg in sip if re.search(rb"\r\nCSeq:[ \t]*\d+ BYE\r\n", dg.payload, re.I)]
    end = max(byes) if byes else datagrams[-1].ts
    hosts: set[bytes] = {a for dg in sip for a in (dg.src, dg.dst)}
    media_ports: set[int] = set()
    answered: set[bytes] = set()
    for dg in sip:
        for addr in re.findall(rb"(?m)^c=IN IP4 ([\d.]+)", dg.payload):
            hosts.add(socket.inet_aton(addr.decode()))
        for port in re.findall(rb"(?m)^m=\w+ (\d+)", dg.payload):
            media_ports.update((int(port), int(port) + 1))
        if dg.payload.startswith(b"SIP/2.0 200") and re.search(
            rb"CSeq:[ \t]*\d+ INVITE", dg.payload
        ):
            found = re.search(rb"(?mi)^(?:Call-ID|i)[ \t]*:[ \t]*(\S+)", dg.payload)
            if found:
                answered.add(found.group(1))
    media_ports.discard(0)
    order = sorted(hosts)
    index = {addr: i for i, addr in enumerate(order)}
    template = Template(
        hosts=[socket.inet_ntoa(a) for a in order],
        media_ports=media_ports,
        dialogs=len(answered),
        duration=end - start,
    )
    for dg in datagrams:
        if not start <= dg.ts <= end or dg.src not in index or dg.dst not in index:
            continue
        if _is_sip(dg.payload):
            kind = SIP
        elif (dg.sport in media_ports or dg.dport in media_ports) and dg.payload[:1] in _V2:
            kind = RTCP if is_rtcp(dg.payload) else RTP
        else:
            kind = OTHER
        template.datagrams.append(
            (dg.ts - start, index[dg.src], dg.sport, index[dg.dst], dg.dport, kind, dg.payload)
        )
    if template.dialogs == 0:
        sys.exit(f"{path}: no answered INVITE; pick a capture of an answered call")
    return template


# --- the mirror -----------------------------------------------------------------------------


class Copy:
    """One copy of the template call: its addresses, ports, Call-IDs and SSRCs."""

    def __init__(self, template: Template, number: int) -> None:
        self.number = number
        # host j of copy c is 10.j.x.y with y in 1-254: distinct for 65024 copies
        high, low = divmod(number, 254)
        self.hosts = [f"10.{j}.{high}.{low + 1}" for j in range(1, len(template.hosts) + 1)]
        self._text = dict(zip(template.hosts, self.hosts, strict=True))
        longest_first = sorted(template.hosts, key=len, reverse=True)
        alternatives = b"|".join(re.escape(h.encode()) for h in longest_first)
        self._ip = re.compile(rb"(?<![\d.])(" + alternatives + rb")(?!\d)")
        self._media_ports = template.media_ports
        digest = hashlib.sha256(number.to_bytes(4, "big")).digest()
        self._ssrc_key = int.from_bytes(digest[:4], "big")
        self._suffix = f"-{number}".encode()

    def port(self, port: int) -> int:
        if port not in self._media_ports:
            return port  # SIP and other service ports keep their meaning
        # parity is kept, so RTP stays even and its RTCP the next odd port
        return MEDIA_PORT_BASE + (port + 2 * self.number) % MEDIA_PORT_SPAN

    def sip(self, payload: bytes) -> bytes:
        text = self._ip.sub(lambda m: self._text[m.group(1).decode()].encode(), payload)
        text = re.sub(
            rb"(?m)^(m=\w+ |a=rtcp:)(\d+)",
            lambda m: m.group(1) + str(self.port(int(m.group(2)))).encode(),
            text,
        )
        text = re.sub(
            rb"(?mi)^((?:Call-ID|i)[ \t]*:[ \t]*)(\S+)",
            lambda m: m.group(1) + m.group(2) + self._suffix,
            text,
        )
        head, sep, body = text.partition(b"\r\n\r\n")
        head = re.sub(
            rb"(?mi)^((?:Content-Length|l)[ \t]*:[ \t]*)\d+",
            lambda m: m.group(1) + str(len(body)).encode(),
            head,
        )
        return head + sep + body

    def ssrc(self, payload: bytes, offset: int) -> bytes:
        value = int.from_bytes(payload[offset : offset + 4], "big") ^ self._ssrc_key
        return payload[:offset] + value.to_bytes(4, "big") + payload[offset + 4 :]


def copy_frames(template: Template, number: int, start: float) -> Iterator[tuple[float, bytes]]:
    from gateway.capture.pcapwriter import udp_frame

    copy = Copy(template, number)
    hosts = copy.hosts
    ports = {p: copy.port(p) for d in template.datagrams for p in (d[2], d[4])}
    for ts, src, sport, dst, dport, kind, payload in template.datagrams:
        if kind == RTP:
            payload = copy.ssrc(payload, 8)
        elif kind == RTCP:
            payload = copy.ssrc(payload, 4)
        elif kind == SIP:
            payload = copy.sip(payload)
        yield start + ts, udp_frame(hosts[src], ports[sport], hosts[dst], ports[dport], payload)


@dataclass(slots=True)
class Mirror:
    path: Path
    calls: int
    copies: int
    packets: int
    duration: float
    build_seconds: float


def write_mirror(template: Template, calls: int, path: Path, stagger: float, seed: int) -> Mirror:
    from gateway.capture.pcapwriter import PcapWriter

    copies = -(-calls // template.dialogs)
    rng = random.Random(seed)
    base = 1_768_471_200.0
    starts = sorted(base + rng.uniform(0, stagger) for _ in range(copies))
    began = time.perf_counter()
    merged = heapq.merge(
        *(copy_frames(template, c, t) for c, t in enumerate(starts)), key=lambda x: x[0]
    )
    first = last = None
    with PcapWriter(path) as writer:
        for ts, frame in merged:
            writer.write(ts, frame)
            first = ts if first is None else first
            last = ts
        packets = writer.frames
    assert first is not None and last is not None
    return Mirror(
        path, copies * template.dialogs, copies, packets, last - first, time.perf_counter() - began
    )


# --- measurements, each in its own process ----------------------------------------------------


@dataclass(slots=True)
class Result:
    pipeline: str
    cpu: float
    peak_rss_kib: int
    per_call_kib: float | None = None
    peak_calls: int | None = None
    note: str = ""


def run_measured(command: list[str]) -> tuple[str, float, int]:
    """Run ``command``; its stdout, its own CPU seconds and its peak RSS (KiB)."""
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            sys.exit(f"{shlex.join(command)} failed with exit code {proc.returncode}")
        out.seek(0)
        return out.read().decode(), usage.ru_utime + usage.ru_stime, usage.ru_maxrss


def measure_session(path: Path, rate: float) -> Result:
    out, _, peak = run_measured([sys.executable, __file__, "--child-session", str(path), str(rate)])
    child = json.loads(out)
    grown = peak - child["baseline_kib"]
    return Result(
        f"CaptureSession, sampling {rate:.0%}",
        child["cpu"],
        peak,
        per_call_kib=grown / child["peak_calls"] if child["peak_calls"] else None,
        peak_calls=child["peak_calls"],
        note=f"policies {child['policies']}",
    )


def _bench_session(rate: float) -> CaptureSession:
    from gateway.capture.session import CaptureSession
    from gateway.config import parse_config
    from gateway.seal.sampling_key import KEY_BYTES, SamplingKey

    config = parse_config({"privacy": {"sample_rate": rate, "trim_seconds": TRIM_SECONDS}})
    # a fixed key: the same calls are sampled on every run, so runs compare
    key = SamplingKey(hashlib.sha256(b"callveil capture benchmark").digest()[:KEY_BYTES])
    return CaptureSession(config, key)


def child_session(path: Path, rate: float) -> None:
    from gateway.capture.pcapfile import CaptureReader
    from gateway.events import CallEnded, CallStarted

    session = _bench_session(rate)
    active = peak_calls = 0
    gc.collect()
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    began = time.process_time()
    with CaptureReader(path) as reader:
        for frame in reader:
            for event in session.feed(frame):
                if type(event) is CallStarted:
                    active += 1
                    peak_calls = max(peak_calls, active)
                elif type(event) is CallEnded:
                    active -= 1
    session.finish()
    cpu = time.process_time() - began
    result = {
        "cpu": cpu,
        "baseline_kib": baseline,
        "peak_calls": peak_calls,
        "policies": dict(session.report.policies),
    }
    print(json.dumps(result))


def measure_dpkt(path: Path) -> Result:
    out, _, peak = run_measured([sys.executable, __file__, "--child-dpkt", str(path)])
    child = json.loads(out)
    return Result("dpkt parse (Ethernet, IP, UDP, RTP)", child["cpu"], peak)


def child_dpkt(path: Path) -> None:
    import dpkt

    began = time.process_time()
    rtp = 0
    with path.open("rb") as f:
        for _, buf in dpkt.pcap.Reader(f):
            ip = dpkt.ethernet.Ethernet(buf).data
            if isinstance(ip, dpkt.ip.IP) and isinstance(ip.data, dpkt.udp.UDP):
                payload = ip.data.data
                if len(payload) >= 12 and payload[0] >> 6 == 2 and not 192 <= payload[1] <= 223:
                    dpkt.rtp.RTP(payload)
                    rtp += 1
    print(json.dumps({"cpu": time.process_time() - began, "rtp": rtp}))


def measure_tshark(path: Path) -> Result:
    command = ["tshark", "-n", "-r", str(path), "-q", "-z", "rtp,streams"]
    out, cpu, peak = run_measured(command)
    streams = sum(1 for line in out.splitlines() if re.search(r" 0x[0-9A-F]{8} ", line))
    return Result("tshark -z rtp,streams", cpu, peak, note=f"{streams} RTP streams")


def measure_peers(path: Path) -> list[Result]:
    """tshark and dpkt at once, one per core: each is timed by its own CPU time."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        tshark = pool.submit(measure_tshark, path)
        dpkt = pool.submit(measure_dpkt, path)
        return [tshark.result(), dpkt.result()]


@dataclass(slots=True)
class LiveResult:
    mode: str
    sent: int
    send_seconds: float
    received: int  # passed the kernel filter
    dropped: int  # lost because the ring was full
    processed: int
    cpu: float
    policies: dict[str, int]
    matched: int
    dropped_unsampled: int


def measure_live(path: Path, filtered: bool) -> LiveResult | str:
    """``tcpreplay --topspeed -i lo`` while a LiveSource feeds a CaptureSession at 10 %."""
    try:
        import gateway.capture.live  # noqa: F401
    except ImportError:
        return "live capture not measured: gateway/capture/live.py does not exist"
    if shutil.which("tcpreplay") is None:
        return "live capture not measured: tcpreplay is not installed (Debian package tcpreplay)"
    mode = "filtered" if filtered else "unfiltered"
    command = [sys.executable, __file__, "--child-live", str(path), mode]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.run(command, stdout=out, stderr=err, check=False)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            last = err.read().decode(errors="replace").strip().splitlines()[-1:]
            return f"live capture ({mode}) failed: {' '.join(last) or proc.returncode}"
        return LiveResult(**json.loads(out.read()))


def child_live(path: Path, mode: str) -> None:
    from gateway.capture.live import LiveSource

    session = _bench_session(SAMPLED)
    # unfiltered: every UDP port passes (one port range), as if the kernel filtered nothing
    media = range(1, 65536) if mode == "unfiltered" else ()
    processed = 0
    with LiveSource("lo", sip_ports={5060}, media_ports=media, idle_timeout=0.5) as source:
        began = time.process_time()
        sender = subprocess.Popen(
            ["tcpreplay", "--topspeed", "-i", "lo", str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        for frame in source:
            if frame is None:
                if sender.poll() is not None:
                    break  # the sender is done and the ring has drained
                continue
            processed += 1
            session.feed(frame)
            if session.media_ports_changed and mode == "filtered":
                source.update_media_ports(session.media_ports())
        session.finish()
        cpu = time.process_time() - began
        stats = source.statistics()
    report = sender.stdout.read().decode() if sender.stdout else ""
    sent = re.search(r"Actual: (\d+) packets .* in ([\d.]+) seconds", report)
    result = LiveResult(
        mode=mode,
        sent=int(sent.group(1)) if sent else 0,
        send_seconds=float(sent.group(2)) if sent else 0.0,
        received=stats.received,
        dropped=stats.dropped,
        processed=processed,
        cpu=cpu,
        policies=dict(session.report.policies),
        matched=session.report.rtp_packets_matched,
        dropped_unsampled=session.report.rtp_packets_dropped_unsampled,
    )
    print(json.dumps(dataclasses.asdict(result)))


# --- report -----------------------------------------------------------------------------------


def table_rows(mirror: Mirror, results: list[Result]) -> list[str]:
    rows = []
    for r in results:
        pps = mirror.packets / r.cpu
        factor = mirror.duration / r.cpu
        per_call = f"{r.per_call_kib:.1f}" if r.per_call_kib is not None else ""
        tracked = str(r.peak_calls) if r.peak_calls is not None else ""
        rows.append(
            f"| {mirror.calls} | {r.pipeline} | {mirror.packets:,} | {mirror.duration:.1f} "
            f"| {r.cpu:.1f} | {pps:,.0f} | {factor:.2f} | {mirror.calls * factor:,.0f} "
            f"| {r.peak_rss_kib / 1024:.0f} | {tracked} | {per_call} | {r.note} |"
        )
    return rows


HEADER = (
    "| calls (N) | pipeline | packets | capture s | CPU s | packets/s | real-time factor "
    "| calls per core (N x RTF) | peak RSS MiB | calls tracked at peak | KiB per tracked call "
    "| notes |\n|" + " --- |" * 12
)


LIVE_HEADER = (
    "| calls (N) | kernel filter | frames sent | sender s | passed filter | dropped (ring full) "
    "| processed | consumer CPU s | RTP parsed | RTP dropped unparsed | policies |\n|"
    + " --- |"
    * 11
)


def live_row(mirror: Mirror, r: LiveResult) -> str:
    kind = "SIP + sampled media ports" if r.mode == "filtered" else "none (all UDP)"
    return (
        f"| {mirror.calls} | {kind} | {r.sent:,} | {r.send_seconds:.1f} | {r.received:,} "
        f"| {r.dropped:,} | {r.processed:,} | {r.cpu:.1f} | {r.matched:,} "
        f"| {r.dropped_unsampled:,} | {r.policies} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("calls", nargs="*", type=int, default=list(DEFAULT_CALLS))
    parser.add_argument(
        "--template",
        type=Path,
        default=None,
        help=f"capture of one call to copy (default: $CALLVEIL_SHARED/pcaps/{DEFAULT_TEMPLATE})",
    )
    parser.add_argument("--stagger", type=float, default=5.0, help="seconds over which calls start")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--live",
        type=int,
        default=1000,
        metavar="N",
        help="also replay the mirror of N calls onto lo for live capture (0: skip; needs root)",
    )
    parser.add_argument(
        "--child-session", nargs=2, metavar=("FILE", "RATE"), help=argparse.SUPPRESS
    )
    parser.add_argument("--child-dpkt", metavar="FILE", help=argparse.SUPPRESS)
    parser.add_argument("--child-live", nargs=2, metavar=("FILE", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_session:
        child_session(Path(args.child_session[0]), float(args.child_session[1]))
        return
    if args.child_dpkt:
        child_dpkt(Path(args.child_dpkt))
        return
    if args.child_live:
        child_live(Path(args.child_live[0]), args.child_live[1])
        return

    template_path = args.template or shared_dir() / "pcaps" / DEFAULT_TEMPLATE
    if not template_path.is_file():
        sys.exit(f"template {template_path} not found; set CALLVEIL_SHARED or pass --template")
    template = load_template(template_path)
    print(f"command: {shlex.join([Path(sys.executable).name, *sys.argv])}")
    print(
        f"template: {template_path.name}: {template.dialogs} answered dialog(s), "
        f"{len(template.datagrams)} datagrams over {template.duration:.1f} s; "
        f"calls start within {args.stagger:g} s; CPU: {os.cpu_count()} cores, "
        f"Python {sys.version.split()[0]}"
    )
    rows, live_rows, notes = [], [], []
    with tempfile.TemporaryDirectory(prefix="callveil-bench-") as tmp:
        for calls in args.calls:
            path = Path(tmp) / f"mirror-{calls}.pcap"
            mirror = write_mirror(template, calls, path, args.stagger, args.seed)
            size = path.stat().st_size
            notes.append(
                f"N={mirror.calls}: {mirror.copies} copies, {mirror.packets:,} packets, "
                f"{size / 2**20:.0f} MiB, built in {mirror.build_seconds:.0f} s"
            )
            print(notes[-1], flush=True)
            results = [measure_session(path, SAMPLED), measure_session(path, FULL)]
            results += measure_peers(path)
            rows += table_rows(mirror, results)
            if calls == args.live:
                for filtered in (True, False):
                    live = measure_live(path, filtered)
                    if isinstance(live, str):
                        notes.append(live)
                        break
                    live_rows.append(live_row(mirror, live))
            path.unlink()
    if args.live and args.live not in args.calls:
        notes.append(f"live capture not measured: N={args.live} is not among {args.calls}")
    print()
    print(HEADER)
    print("\n".join(rows))
    if live_rows:
        print()
        print(LIVE_HEADER)
        print("\n".join(live_rows))
    print()
    print("\n".join(f"- {n}" for n in notes))


if __name__ == "__main__":
    main()
