"""Signed release manifests: a vendor signs the package and model digests, the security team
adds the site's configuration, and a quote from a real (simulated) TPM is checked against them."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("tpm2_pytss", reason="tpm2-pytss is not installed (pip install tpm2-pytss)")

from cryptography.hazmat.primitives import serialization

from gateway.cli import main
from gateway.config import load_config
from gateway.seal.fromconfig import PACKAGE_ROOT, model_paths
from gateway.seal.measurement import release_components, release_measurement
from gateway.verifiers import attestation as verifier
from tests.seal.tpm_helpers import TEST_PCR, reset_pcr

REPO = Path(__file__).resolve().parents[2]
RELEASE_TOOL = REPO / "firmware" / "release.py"
SHIPPED_MODEL = PACKAGE_ROOT / "models" / "emotion.onnx"


def release_tool(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, str(RELEASE_TOOL), *map(str, args)],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    if check:
        assert done.returncode == 0, done.stderr
    return done


class Site:
    """A box on the simulated TPM with a retrained emotion model, and the vendor's release."""

    def __init__(self, root: Path, tcti: str) -> None:
        self.root = root
        self.model = root / "models" / "emotion.onnx"
        self.model.parent.mkdir()
        shutil.copy(SHIPPED_MODEL, self.model)
        self.config = root / "callveil.toml"
        self.config.write_text(
            f'[keys]\nprovider = "tpm"\ntcti = "{tcti}"\npcr = {TEST_PCR}\n'
            f'state_dir = "tpm-keys"\n[emotion]\nmodel_path = "{self.model}"\n'
        )
        self.key = root / "vendor"
        release_tool("keygen", "--out", self.key)
        self.manifest = root / "manifest.json"
        release_tool("build", "--model", self.model, "--release", "1.2.3", "--out", self.manifest)
        release_tool("sign", self.manifest, "--key", f"{self.key}.key")
        self.tcti = tcti

    def quote(self, nonce: str) -> Path:
        """``callveil attest quote`` on the box, as after a reboot into its current files."""
        reset_pcr(self.tcti)
        out = self.root / f"quote-{nonce[:8]}.json"
        assert (
            main(["-c", str(self.config), "attest", "quote", "--nonce", nonce, "--out", str(out)])
            == 0
        )
        return out

    def components(self) -> verifier.ReleaseComponents:
        return release_components(PACKAGE_ROOT, self.config, model_paths(load_config(self.config)))

    def ak_pem(self, quote: Path) -> str:
        # trust on first use here; enrolment by credential activation is tested in test_attest
        blob = base64.b64decode(json.loads(quote.read_text())["ak_public"])
        key = verifier.parse_public(blob, "AK").key
        path = self.root / "ak.pem"
        path.write_bytes(
            key.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        return str(path)


@pytest.fixture
def site(tmp_path: Path, tpm: str) -> Site:
    return Site(tmp_path, tpm)


def verify(
    site: Site, quote: Path, nonce: str, capsys: pytest.CaptureFixture[str], *extra: str
) -> tuple[int, str]:
    capsys.readouterr()
    args = ["verify-attestation", "quote", str(quote), "--nonce", nonce, "--ak", site.ak_pem(quote),
            "--release-pcr", str(TEST_PCR)]  # fmt: skip
    if not any(a.startswith("--manifest") for a in extra):
        args += ["--manifest", str(site.manifest)]
    if not any(a.startswith("--release-key") for a in extra):
        args += ["--release-key", f"{site.key}.pub"]
    if not any(a.startswith("--config") for a in extra):
        args += ["--config", str(site.config)]
    code = main([*args, *extra])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_manifest_and_site_configuration_give_the_box_measurement(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    nonce = os.urandom(16).hex()
    quote = site.quote(nonce)
    code, output = verify(site, quote, nonce, capsys)
    measured = release_measurement(PACKAGE_ROOT, site.config, [site.model])
    assert code == 0, output
    assert f"release 1.2.3: {measured.hex()}" in output
    # ops who only know the digest of the file they deployed
    digest = verifier.component_digest(site.config).hex()
    code, output = verify(site, quote, nonce, capsys, "--config-digest", digest)
    assert code == 0, output
    # what a box re-sealing to this release with this configuration must show
    assert main(["verify-attestation", "expect", "--manifest", str(site.manifest), "--release-key",
                 f"{site.key}.pub", "--config", str(site.config)]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert measured.hex() in out and verifier.extended_pcr(measured).hex() in out


def test_manifest_signed_by_another_key_is_refused(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    intruder = site.root / "intruder"
    release_tool("keygen", "--out", intruder)
    forged = site.root / "forged.json"
    release_tool("sign", site.manifest, "--key", f"{intruder}.key", "--out", forged)
    nonce = os.urandom(16).hex()
    quote = site.quote(nonce)
    code, output = verify(site, quote, nonce, capsys, "--manifest", str(forged))
    assert code == 1 and "signed by another release key" in output
    # nor does the intruder's public key make the vendor's manifest pass
    code, output = verify(site, quote, nonce, capsys, "--release-key", f"{intruder}.pub")
    assert code == 1 and "signed by another release key" in output


@pytest.mark.parametrize(
    "edit",
    [
        lambda m: m.update(release="1.2.4"),
        lambda m: m.update(package="00" * 32),
        lambda m: m["models"][0].update(digest="11" * 32),
        lambda m: m["models"].clear(),
    ],
    ids=["release renamed", "package digest", "model digest", "model removed"],
)
def test_edited_manifest_is_refused(site: Site, capsys: pytest.CaptureFixture[str], edit) -> None:
    document = json.loads(site.manifest.read_text())
    edit(document)
    site.manifest.write_text(json.dumps(document))
    nonce = os.urandom(16).hex()
    code, output = verify(site, site.quote(nonce), nonce, capsys)
    assert code == 1 and "altered after it was signed" in output


def test_other_configuration_is_refused(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    nonce = os.urandom(16).hex()
    quote = site.quote(nonce)
    other = site.root / "other.toml"
    other.write_text(site.config.read_text() + "# one more line\n")
    code, output = verify(site, quote, nonce, capsys, "--config", str(other))
    assert code == 1 and "is not release 1.2.3 with configuration" in output
    # a quote that reports its components names the configuration as the difference
    document = json.loads(quote.read_text())
    document["components"] = site.components().document()
    quote.write_text(json.dumps(document))
    code, output = verify(site, quote, nonce, capsys, "--config", str(other))
    assert code == 1 and "the box's configuration file" in output
    assert "is not the one given" in output


def test_changed_model_is_refused(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    data = bytearray(site.model.read_bytes())
    data[len(data) // 2] ^= 0x01
    site.model.write_bytes(data)
    nonce = os.urandom(16).hex()
    quote = site.quote(nonce)
    code, output = verify(site, quote, nonce, capsys)
    assert code == 1 and "another package, configuration or model set" in output
    document = json.loads(quote.read_text())
    document["components"] = site.components().document()
    quote.write_text(json.dumps(document))
    code, output = verify(site, quote, nonce, capsys)
    assert code == 1 and "model 0 (emotion.onnx) on the box" in output
    # components that do not combine into the quoted PCR are not believed
    document["components"]["models"] = [
        json.loads(site.manifest.read_text())["models"][0]["digest"]
    ]
    quote.write_text(json.dumps(document))
    code, output = verify(site, quote, nonce, capsys)
    assert code == 1 and "reported release components do not give PCR" in output


def test_changed_package_is_named(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    """A manifest of another build: the box's package is named as the difference."""
    other_package = site.root / "gateway"
    shutil.copytree(PACKAGE_ROOT, other_package, ignore=shutil.ignore_patterns("__pycache__"))
    (other_package / "seal" / "extra.py").write_text("BACKDOOR = True\n")
    release_tool("build", "--package", other_package, "--model", site.model, "--release", "1.2.3",
                 "--out", site.manifest)  # fmt: skip
    release_tool("sign", site.manifest, "--key", f"{site.key}.key")
    nonce = os.urandom(16).hex()
    quote = site.quote(nonce)
    document = json.loads(quote.read_text())
    document["components"] = site.components().document()
    quote.write_text(json.dumps(document))
    code, output = verify(site, quote, nonce, capsys)
    assert code == 1 and "another callveil package" in output


def test_standalone_verifier_checks_manifests(site: Site, tmp_path: Path) -> None:
    """The security team's single copied file needs nothing of callveil for manifests either."""
    script = tmp_path / "team" / "attestation.py"
    script.parent.mkdir()
    shutil.copy(verifier.__file__, script)
    nonce = os.urandom(16).hex()
    quote = site.quote(nonce)
    done = subprocess.run(
        [sys.executable, "-I", str(script), "quote", str(quote), "--nonce", nonce,
         "--ak", site.ak_pem(quote), "--release-pcr", str(TEST_PCR),
         "--manifest", str(site.manifest), "--release-key", f"{site.key}.pub",
         "--config", str(site.config)],
        cwd=script.parent, env={"PATH": os.environ["PATH"], "PYTHONNOUSERSITE": "1"},
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "the box runs release 1.2.3" in done.stdout


def test_release_tool_refuses_bad_inputs(tmp_path: Path) -> None:
    passphrase = tmp_path / "pass"
    passphrase.write_text("correct horse\n")
    release_tool("keygen", "--out", tmp_path / "k", "--passphrase-file", passphrase)
    assert (tmp_path / "k.key").stat().st_mode & 0o077 == 0
    again = release_tool("keygen", "--out", tmp_path / "k", check=False)
    assert again.returncode == 2 and "never overwritten" in again.stderr
    manifest = tmp_path / "m.json"
    release_tool("build", "--out", manifest)
    assert (
        json.loads(manifest.read_text())["package"] == verifier.component_digest(PACKAGE_ROOT).hex()
    )
    locked = release_tool("sign", manifest, "--key", tmp_path / "k.key", check=False)
    assert locked.returncode == 2 and "give --passphrase-file" in locked.stderr
    release_tool("sign", manifest, "--key", tmp_path / "k.key", "--passphrase-file", passphrase)
    wrong = tmp_path / "wrong"
    wrong.write_text("guess\n")
    bad = release_tool("sign", manifest, "--key", tmp_path / "k.key", "--passphrase-file", wrong,
                       check=False)  # fmt: skip
    assert bad.returncode == 2 and "wrong passphrase" in bad.stderr
    not_package = release_tool("build", "--package", tmp_path, check=False)
    assert not_package.returncode == 2 and "not an installed callveil package" in not_package.stderr
    missing = release_tool("build", "--model", tmp_path / "none.onnx", check=False)
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    not_manifest = release_tool("sign", passphrase, "--key", tmp_path / "k.key", check=False)
    assert not_manifest.returncode == 2 and "cannot read" in not_manifest.stderr


def test_verifier_names_missing_or_bad_release_arguments(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    nonce = os.urandom(16).hex()
    quote = site.quote(nonce)
    base = ["verify-attestation", "quote", str(quote), "--nonce", nonce, "--ak", site.ak_pem(quote),
            "--release-pcr", str(TEST_PCR), "--manifest", str(site.manifest)]  # fmt: skip
    capsys.readouterr()
    assert main([*base, "--config", str(site.config)]) == 2
    assert "--manifest needs --release-key" in capsys.readouterr().err
    key = ["--release-key", f"{site.key}.pub"]
    assert main([*base, *key, "--config-digest", "abcd"]) == 2
    assert "64 hex digits" in capsys.readouterr().err
    assert main([*base, "--release-key", str(site.config), "--config", str(site.config)]) == 1
    assert "not a PEM public key" in capsys.readouterr().err
    unsigned = site.root / "unsigned.json"
    release_tool("build", "--model", site.model, "--out", unsigned)
    assert main([*base[:-1], str(unsigned), *key, "--config", str(site.config)]) == 1
    assert "is not signed" in capsys.readouterr().err
