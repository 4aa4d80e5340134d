"""The firmware recipe: its scripts parse and lint, its firewall parses and behaves, its input
checks speak up before anything slow, and (soak) the image builds, boots and attests."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FIRMWARE = REPO / "firmware"
SCRIPTS = [FIRMWARE / "build-image", FIRMWARE / "in-image.sh", FIRMWARE / "boot-test"]


def tool(name: str, package: str) -> str:
    exe = shutil.which(name)
    if exe is None:
        pytest.skip(f"{name} is not installed (apt-get install {package})")
    return exe


def needs_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, the firewall, mmdebstrap)")


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.name for s in SCRIPTS])
def test_script_parses(script: Path) -> None:
    done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert os.access(script, os.X_OK) or script.suffix == ".sh"


def test_scripts_are_shellcheck_clean() -> None:
    exe = tool("shellcheck", "shellcheck")
    done = subprocess.run([exe, *map(str, SCRIPTS)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def site_ruleset(tmp_path: Path, elements: str) -> Path:
    """firmware/nftables.conf with its include pointed at a site file holding ``elements``."""
    site = tmp_path / "nftables.d"
    site.mkdir()
    (site / "site.nft").write_text(elements)
    text = (FIRMWARE / "nftables.conf").read_text()
    assert 'include "/etc/nftables.d/*.nft"' in text
    ruleset = tmp_path / "nftables.conf"
    ruleset.write_text(text.replace("/etc/nftables.d/", f"{site}/"))
    return ruleset


def test_ruleset_parses_alone_and_with_site_values(tmp_path: Path) -> None:
    needs_root()
    nft = tool("nft", "nftables")
    alone = subprocess.run([nft, "-c", "-f", str(FIRMWARE / "nftables.conf")], capture_output=True)
    assert alone.returncode == 0, alone.stderr
    good = site_ruleset(
        tmp_path,
        "add element inet callveil mgmt_v4 { 10.20.0.0/24, 192.168.7.9 }\n"
        "add element inet callveil mgmt_v6 { fd00:20::/64 }\n"
        'add element inet callveil mirror_ifs { "enp2s0" }\n'
        "add element inet callveil broker_ports { 8883 }\n",
    )
    checked = subprocess.run([nft, "-c", "-f", str(good)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    (tmp_path / "nftables.d" / "site.nft").write_text(
        "add element inet callveil mgmt_v4 { 10.20.0.0/33 }\n"
    )
    bad = subprocess.run([nft, "-c", "-f", str(good)], capture_output=True, text=True)
    assert bad.returncode != 0 and "Prefix length 33 is invalid" in bad.stderr


class Namespaces:
    """A box and a peer in two network namespaces, joined by a management and a mirror link."""

    def __init__(self) -> None:
        tag = secrets.token_hex(2)
        self.box, self.peer = f"cvbox{tag}", f"cvpeer{tag}"
        self.mgmt, self.mirror = f"cvm{tag}", f"cvx{tag}"
        self.servers: list[subprocess.Popen[str]] = []
        ip = tool("ip", "iproute2")
        for ns in (self.box, self.peer):
            run([ip, "netns", "add", ns])
        for link, box_addr, peer_addrs in (
            (self.mgmt, "10.99.0.2/24", ["10.99.0.1/24", "10.99.0.77/24"]),
            (self.mirror, "10.98.0.2/24", ["10.98.0.1/24"]),
        ):
            run([ip, "link", "add", link, "netns", self.box, "type", "veth", "peer", "name",
                 f"{link}p", "netns", self.peer])  # fmt: skip
            run([ip, "-n", self.box, "addr", "add", box_addr, "dev", link])
            for address in peer_addrs:
                run([ip, "-n", self.peer, "addr", "add", address, "dev", f"{link}p"])
            run([ip, "-n", self.box, "link", "set", link, "up"])
            run([ip, "-n", self.peer, "link", "set", f"{link}p", "up"])
        for ns in (self.box, self.peer):
            run([ip, "-n", ns, "link", "set", "lo", "up"])

    def close(self) -> None:
        for server in self.servers:
            server.kill()
            server.communicate()
        for ns in (self.box, self.peer):
            subprocess.run(["ip", "netns", "del", ns], check=False)

    def listen(self, ns: str, port: int) -> None:
        code = (
            "import socket, sys\n"
            f"s = socket.create_server(('0.0.0.0', {port}))\n"
            "print('ready', flush=True)\n"
            "while True:\n    s.accept()[0].close()\n"
        )
        server = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-c", code],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.servers.append(server)
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"

    def connects(self, ns: str, source: str, target: str, port: int) -> bool:
        code = (
            "import socket\n"
            "s = socket.socket()\ns.settimeout(1.5)\n"
            f"s.bind(('{source}', 0))\ns.connect(('{target}', {port}))\n"
        )
        done = subprocess.run(
            ["ip", "netns", "exec", ns, sys.executable, "-c", code],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        return done.returncode == 0


def run(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, f"{command}: {done.stderr}"


@pytest.fixture
def namespaces() -> Iterator[Namespaces]:
    needs_root()
    tool("nft", "nftables")
    spaces = Namespaces()
    try:
        yield spaces
    finally:
        spaces.close()


def test_firewall_lets_through_only_management_ssh_and_the_broker(
    namespaces: Namespaces, tmp_path: Path
) -> None:
    n = namespaces
    n.listen(n.box, 22)
    n.listen(n.peer, 8883)
    n.listen(n.peer, 9999)
    # without the firewall everything connects: the checks below measure the ruleset
    assert n.connects(n.peer, "10.99.0.77", "10.99.0.2", 22)
    assert n.connects(n.box, "10.99.0.2", "10.99.0.1", 9999)
    ruleset = site_ruleset(
        tmp_path,
        # the mirror peer is even listed as management: the mirror rule must still win
        "add element inet callveil mgmt_v4 { 10.99.0.1, 10.98.0.1 }\n"
        f'add element inet callveil mirror_ifs {{ "{n.mirror}" }}\n'
        "add element inet callveil broker_ports { 8883 }\n",
    )
    run(["ip", "netns", "exec", n.box, "nft", "-f", str(ruleset)])
    assert n.connects(n.peer, "10.99.0.1", "10.99.0.2", 22), "management SSH refused"
    assert not n.connects(n.peer, "10.99.0.77", "10.99.0.2", 22), "SSH open to others"
    assert not n.connects(n.peer, "10.98.0.1", "10.98.0.2", 22), "the box answers on the mirror"
    assert n.connects(n.box, "10.99.0.2", "10.99.0.1", 8883), "broker unreachable"
    assert not n.connects(n.box, "10.99.0.2", "10.99.0.1", 9999), "other outbound allowed"
    assert not n.connects(n.box, "10.98.0.2", "10.98.0.1", 8883), "box sends on the mirror"


def build_image(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(FIRMWARE / "build-image"), "--out", str(tmp_path / "out"), *args],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_build_image_refuses_bad_input_before_building(tmp_path: Path) -> None:
    needs_root()
    tool("mmdebstrap", "mmdebstrap")
    tool("nft", "nftables")
    run([tool("ssh-keygen", "openssh-client"), "-q", "-t", "ed25519", "-N", "", "-f",
         str(tmp_path / "keys")])  # fmt: skip
    keys = str(tmp_path / "keys.pub")
    base = ["--arch", "amd64", "--mirror-if", "eth1", "--no-kernel"]
    cases = [
        (["--arch", "sparc", "--authorized-keys", keys], "--arch must be amd64 or arm64"),
        ([*base, "--authorized-keys", keys], "give --mgmt-net"),
        ([*base, "--mgmt-net", "10.0.0.0/24", "--authorized-keys", "/nonexistent"],
         "--authorized-keys FILE"),
        ([*base, "--mgmt-net", "10.0.0.0/24", "--authorized-keys", keys, "--broker-port", "x"],
         "--broker-port must be a port number"),
        ([*base, "--mgmt-net", "10.0.0.0/33", "--authorized-keys", keys],
         "the firewall does not parse"),
        ([*base, "--mgmt-net"], "--mgmt-net needs a value"),
        ([*base, "--mgmt-net", "10.0.0.0/24", "--authorized-keys", keys, "--mgmt-address",
          "10.0.0.300/24", "--gateway", "10.0.0.1"], "10.0.0.300/24 is not an IP address"),
    ]  # fmt: skip
    for args, message in cases:
        done = build_image(tmp_path, *args)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert message in done.stderr, (args, done.stderr)
    empty = tmp_path / "empty.pub"
    empty.write_text("# nobody\n")
    done = build_image(
        tmp_path, *base, "--mgmt-net", "10.0.0.0/24", "--authorized-keys", str(empty)
    )
    assert done.returncode == 2 and "holds no SSH public key" in done.stderr
    # nothing was built, and no work directory was left behind
    out = tmp_path / "out"
    assert not out.exists() or not list(out.iterdir())


def run_to_end(command: list[str]) -> subprocess.CompletedProcess[str]:
    """Run a long script in its own process group; if the test is stopped, stop all of it
    (SIGTERM lets mmdebstrap unmount and the scripts remove their work directories)."""
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        out, err = proc.communicate()
    except BaseException:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(command, proc.returncode, out, err)


@pytest.mark.soak
@pytest.mark.timeout(3600)
def test_image_builds_boots_and_attests_to_its_manifest(tmp_path: Path) -> None:
    """The whole recipe (minutes): build the amd64 image, boot it in QEMU with a software TPM,
    and run boot-test's checks, including a quote verified against the image's manifest."""
    needs_root()
    for name, package in (("mmdebstrap", "mmdebstrap"), ("qemu-system-x86_64", "qemu-system-x86"),
                          ("swtpm", "swtpm"), ("mkfs.vfat", "dosfstools"), ("mcopy", "mtools"),
                          ("sfdisk", "fdisk"), ("ssh-keygen", "openssh-client")):  # fmt: skip
        tool(name, package)
    if not Path("/usr/share/OVMF/OVMF_CODE_4M.fd").exists():
        pytest.skip("UEFI firmware for QEMU is not installed (apt-get install ovmf)")
    key = tmp_path / "id"
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)])
    out = tmp_path / "image"
    # a CA bundle the environment gives pip (a TLS-inspecting proxy) is handed to the build
    ca = ["--pip-ca", os.environ["PIP_CERT"]] if os.environ.get("PIP_CERT") else []
    built = run_to_end(
        [str(FIRMWARE / "build-image"), "--arch", "amd64", "--out", str(out),
         "--authorized-keys", f"{key}.pub", "--mgmt-net", "10.0.2.0/24", "--mirror-if", "enp0s4",
         *ca]
    )  # fmt: skip
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    booted = run_to_end([str(FIRMWARE / "boot-test"), "--image", str(out), "--ssh-key", str(key)])
    assert booted.returncode == 0, booted.stdout + booted.stderr
    assert "FAIL" not in booted.stdout
