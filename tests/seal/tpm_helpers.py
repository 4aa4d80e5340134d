"""TPM test helpers: start swtpm, reset the test PCR, and watch the bytes on the TPM "bus"."""

from __future__ import annotations

import contextlib
import shutil
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

TEST_PCR = 16


def free_port_pair() -> int:
    """A loopback port P with P+1 also free: the swtpm TCTI talks to its control port at P+1."""
    for _ in range(100):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
            with socket.socket() as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
        return port
    raise RuntimeError("no two adjacent free loopback ports")


def _accepting(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
    except OSError:
        return False
    return True


@contextlib.contextmanager
def running_swtpm(state: Path) -> Iterator[str]:
    """Start swtpm with its state in ``state``; yield its TCTI string; kill it afterwards."""
    exe = shutil.which("swtpm")
    if exe is None:
        pytest.skip("swtpm is not installed (scripts/setup installs swtpm and swtpm-tools)")
    state.mkdir(parents=True, exist_ok=True)
    errors = []
    for _attempt in range(3):  # another process may take the ports between probe and bind
        port = free_port_pair()
        proc = subprocess.Popen(
            [
                exe, "socket", "--tpm2",
                "--server", f"type=tcp,port={port},bindaddr=127.0.0.1",
                "--ctrl", f"type=tcp,port={port + 1},bindaddr=127.0.0.1",
                "--tpmstate", f"dir={state}",
                "--flags", "not-need-init,startup-clear",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while proc.poll() is None and time.monotonic() < deadline and not _accepting(port):
            time.sleep(0.02)
        if proc.poll() is None and _accepting(port):
            break
        proc.kill()
        errors.append(proc.communicate()[1].decode(errors="replace").strip())
    else:
        pytest.fail(f"swtpm did not start: {errors}")
    try:
        yield f"swtpm:host=127.0.0.1,port={port}"
    finally:
        proc.kill()
        proc.communicate(timeout=10)


def reset_pcr(tcti: str, pcr: int = TEST_PCR) -> None:
    """Put ``pcr`` back to zero, as a reboot would (PCRs 16 and 23 allow it at locality 0)."""
    from tpm2_pytss import ESAPI
    from tpm2_pytss.constants import ESYS_TR

    with ESAPI(tcti) as ectx:
        ectx.pcr_reset(getattr(ESYS_TR, f"PCR{pcr}"))


class BusRecorder:
    """A TCP relay between a TCTI and swtpm that keeps every byte sent to and from the TPM.

    It stands for a probe on the bus of a discrete TPM. It relays the command port and the
    control port (at +1), so the TCTI it hands out works like the real one.
    """

    def __init__(self, tcti: str) -> None:
        self._target = int(tcti.rsplit("port=", 1)[1])
        self.port = free_port_pair()
        self.tcti = f"swtpm:host=127.0.0.1,port={self.port}"
        self.responses = bytearray()
        self.requests = bytearray()
        self.commands: list[int] = []  # TPM command codes, in order
        self._lock = threading.Lock()
        self._listeners = []
        for offset in (0, 1):
            listener = socket.create_server(("127.0.0.1", self.port + offset))
            self._listeners.append(listener)
            threading.Thread(
                target=self._accept, args=(listener, self._target + offset), daemon=True
            ).start()

    def close(self) -> None:
        for listener in self._listeners:
            listener.close()

    def _accept(self, listener: socket.socket, target: int) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", target))
            is_command_port = target == self._target
            threading.Thread(
                target=self._pump, args=(client, upstream, is_command_port, True), daemon=True
            ).start()
            threading.Thread(
                target=self._pump, args=(upstream, client, is_command_port, False), daemon=True
            ).start()

    def _pump(self, src: socket.socket, dst: socket.socket, command: bool, out: bool) -> None:
        pending = b""
        with contextlib.suppress(OSError):
            while chunk := src.recv(65536):
                if command and out:
                    # commands are framed: tag(2) size(4) code(4) ...; count each one
                    pending += chunk
                    with self._lock:
                        self.requests += chunk
                    while len(pending) >= 10:
                        size = struct.unpack_from(">I", pending, 2)[0]
                        if len(pending) < size:
                            break
                        with self._lock:
                            self.commands.append(struct.unpack_from(">I", pending, 6)[0])
                        pending = pending[size:]
                elif command:
                    with self._lock:
                        self.responses += chunk
                dst.sendall(chunk)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


def manufacture_tpm(state: Path, ca_dir: Path) -> Path:
    """Give a fresh swtpm state an EK and an EK certificate, as a TPM maker does.

    The certificate is issued by a local CA (root and intermediate) created in ``ca_dir``;
    returns one PEM file holding both, as TPM makers publish them for verifiers.
    """
    exe = shutil.which("swtpm_setup")
    if exe is None:
        pytest.skip("swtpm_setup is not installed (scripts/setup installs swtpm-tools)")
    state.mkdir(parents=True, exist_ok=True)
    ca_dir.mkdir(parents=True, exist_ok=True)
    localca = ca_dir / "swtpm-localca.conf"
    localca.write_text(
        f"statedir = {ca_dir}\nsigningkey = {ca_dir}/signkey.pem\n"
        f"issuercert = {ca_dir}/issuercert.pem\ncertserial = {ca_dir}/certserial\n"
    )
    options = ca_dir / "swtpm-localca.options"
    options.write_text("--platform-manufacturer callveil-tests\n")
    setup = ca_dir / "swtpm_setup.conf"
    setup.write_text(
        f"create_certs_tool = {shutil.which('swtpm_localca') or 'swtpm_localca'}\n"
        f"create_certs_tool_config = {localca}\ncreate_certs_tool_options = {options}\n"
        "active_pcr_banks = sha256\n"
    )
    done = subprocess.run(
        [exe, "--tpm2", "--tpmstate", str(state), "--create-ek-cert", "--config", str(setup),
         "--overwrite"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )  # fmt: skip
    if done.returncode != 0:
        pytest.fail(f"swtpm_setup failed: {done.stdout}{done.stderr}")
    bundle = ca_dir / "maker-ca.pem"
    bundle.write_bytes(
        (ca_dir / "swtpm-localca-rootca-cert.pem").read_bytes()
        + (ca_dir / "issuercert.pem").read_bytes()
    )
    return bundle
