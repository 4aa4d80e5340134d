"""What the daemon does, run inside callveil.service's sandbox by tests/systemd/test_sandbox.py.

It stands where ``callveil run`` stands (same user, capabilities, mounts, seccomp filter) and
does the daemon's risky things with the real libraries: opens the AF_PACKET capture and
reads a frame, drops its capability, runs the ONNX emotion model and the Vosk recognizer,
seals with the TPM and stores in the SQLite vault, talks sd_notify. Each check's outcome goes
to ``probe.json`` in the state directory; the process exits 0 whatever the outcomes, so a
failed check shows up as data rather than a crash.

Usage: ``python sandbox_probe.py INPUT_DIR`` where INPUT_DIR holds ``inputs.json`` (TCTI, PCR,
Vosk model, topics, threshold, files to try writing), ``speech16k.npy`` (float speech for the
emotion model) and ``phrase8k.npy`` (int16 telephone speech for the keyword spotter).
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as dt
import errno
import hashlib
import json
import os
import socket
import stat
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np

PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
SYS_CAPSET = {"x86_64": 126, "aarch64": 91, "armv7l": 185}
SIP_PORT = 5060


def notify(message: str) -> None:
    """One sd_notify datagram to the manager."""
    address = os.environ["NOTIFY_SOCKET"]
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(message.encode(), address)


def capabilities() -> dict[str, int]:
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("CapEff", "CapPrm", "CapBnd", "CapAmb"):
            fields[key] = int(value, 16)
    return fields


def check_capture() -> str:
    from gateway.capture.live import LiveSource

    with LiveSource("lo", sip_ports=[SIP_PORT], idle_timeout=0.2) as source:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.sendto(b"OPTIONS sip:probe@127.0.0.1 SIP/2.0\r\n\r\n", ("127.0.0.1", SIP_PORT))
        for idle, frame in enumerate(source):
            if frame is not None:
                return f"read a {len(frame.data)}-byte frame on lo"
            if idle > 20:
                raise RuntimeError("no frame arrived within 4 s")
    raise RuntimeError("the capture ended without a frame")


def drop_capabilities() -> str:
    """Clear the ambient set, then every set with capset(2), as the daemon does."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_CAP_AMBIENT_CLEAR_ALL)")
    header = (ctypes.c_uint32 * 2)(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()
    if libc.syscall(SYS_CAPSET[os.uname().machine], header, data) != 0:
        raise OSError(ctypes.get_errno(), "capset")
    left = capabilities()
    if left["CapEff"] or left["CapPrm"] or left["CapAmb"]:
        raise RuntimeError(f"capabilities left after the drop: {left}")
    try:
        socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0).close()
    except PermissionError:
        return "no capability left; a new packet socket is refused"
    raise RuntimeError("a packet socket could still be opened after the drop")


def check_emotion(inputs: Path) -> str:
    from gateway.models.emotion import EmotionModel

    scores = EmotionModel(threads=2).predict(np.load(inputs / "speech16k.npy"))
    if scores is None:
        raise RuntimeError("the model found nothing to score in the speech")
    return f"scored speech as {scores.label}"


def check_keywords(inputs: Path, spec: dict) -> str:
    from gateway.events import Role
    from gateway.models.keywords import KeywordSpotter

    spotter = KeywordSpotter(
        Path(spec["model_dir"]), spec["topics"], threshold=spec["threshold"],
        fillers=spec["fillers"],
    )  # fmt: skip
    stream = spotter.stream(Role.CUSTOMER, 8000)
    stream.feed(np.load(inputs / "phrase8k.npy"))
    return "heard topics: " + ", ".join(sorted({hit.topic for hit in stream.finish()}))


def check_vault(state: Path, tcti: str, pcr: int) -> str:
    from gateway.seal.envelope import Sealer
    from gateway.seal.tpm import TpmKeyProvider
    from gateway.vault.store import Vault

    keys = state / "keys"
    keys.mkdir(mode=0o700, exist_ok=True)
    measurement = hashlib.sha256(b"sandbox probe release").digest()
    with (
        TpmKeyProvider(tcti, keys, measurement=measurement, pcr=pcr) as provider,
        Vault(state / "vault.db", {"analytics": Sealer(provider)}) as vault,
    ):
        expires = dt.date.today() + dt.timedelta(days=30)
        record = vault.put(
            "summary", b"probe record", partition="analytics", period="2026-W01", expires=expires
        )
        if vault.get(record) != b"probe record":
            raise RuntimeError("the vault returned other data than it stored")
    return "sealed with the TPM, stored and read back a vault record"


def check_broker_path(tcti: str) -> str:
    """A TCP connection by host name, as the MQTT client makes (no netlink socket allowed)."""
    port = int(tcti.rsplit("port=", 1)[1])
    socket.getaddrinfo("localhost", port, type=socket.SOCK_STREAM, flags=socket.AI_ADDRCONFIG)
    with socket.create_connection(("localhost", port), timeout=5) as conn:
        return f"connected to {conn.getpeername()[0]}"


def check_writes(paths: list[str]) -> dict[str, str]:
    """Try to create each file; "ok" or the error's name."""
    outcome = {}
    for name in paths:
        path = Path(name)
        try:
            path.write_bytes(b"x")
        except OSError as exc:
            outcome[name] = errno.errorcode.get(exc.errno or 0, str(exc))
        else:
            path.unlink()
            outcome[name] = "ok"
    return outcome


def check_configuration() -> dict[str, list[int]]:
    """Mode, owner and group of the configuration directory and file, after reading the file."""
    config = Path("/etc/callveil/callveil.toml")
    config.read_bytes()
    return {
        str(path): [stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid]
        for path, st in ((p, p.stat()) for p in (config.parent, config))
    }


def main() -> int:
    inputs = Path(sys.argv[1])
    spec = json.loads((inputs / "inputs.json").read_text())
    state = Path(os.environ["STATE_DIRECTORY"])
    results: dict[str, dict[str, object]] = {}

    def record(name: str, check: Callable[[], object]) -> None:
        try:
            results[name] = {"ok": True, "detail": check()}
        except Exception:
            results[name] = {"ok": False, "detail": traceback.format_exc(limit=4)}

    record("capabilities_at_start", capabilities)
    record("capture", check_capture)
    record("drop_capabilities", drop_capabilities)
    record("notify_ready", lambda: notify("READY=1\nSTATUS=probing"))
    record("emotion", lambda: check_emotion(inputs))
    record("keywords", lambda: check_keywords(inputs, spec))
    record("vault", lambda: check_vault(state, spec["tcti"], spec["pcr"]))
    record("configuration", check_configuration)
    record("broker_path", lambda: check_broker_path(spec["tcti"]))
    record("writes", lambda: check_writes(spec["write_attempts"]))
    record("notify_watchdog", lambda: notify("WATCHDOG=1"))
    record("proc_cpuinfo_hidden", lambda: not Path("/proc/cpuinfo").exists())
    record("pid1_hidden", lambda: not Path("/proc/1").exists())
    with contextlib.suppress(OSError):
        (state / "probe.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
