"""The release measurement: deterministic, location-free, and sensitive to every change."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

import gateway
from gateway.seal.measurement import release_measurement

REPO = Path(__file__).resolve().parents[2]


def inputs(root: Path) -> tuple[Path, Path, list[Path]]:
    """Package tree, configuration file and models (a file and a tree) of a release in root."""
    return (
        root / "gateway",
        root / "callveil.toml",
        [root / "models/emotion.onnx", root / "models/vosk"],
    )


def make_release(root: Path) -> None:
    package, config, (model_file, model_dir) = inputs(root)
    (package / "capture").mkdir(parents=True)
    (package / "__init__.py").write_text('"""package"""\n')
    (package / "capture" / "sip.py").write_text("def parse(data):\n    return data\n")
    (package / "capture" / "rtp.py").write_text("HEADER = 12\n")
    (package / "py.typed").write_bytes(b"")
    os.symlink("capture/sip.py", package / "alias.py")
    config.write_text('[site]\nname = "test"\n')
    model_file.parent.mkdir()
    model_file.write_bytes(bytes(range(256)) * 64)
    (model_dir / "am").mkdir(parents=True)
    (model_dir / "am" / "final.mdl").write_bytes(b"\x01\x02" * 500)
    (model_dir / "conf").write_text("--sample-frequency=16000\n")


def measure(root: Path) -> bytes:
    return release_measurement(*inputs(root))


@pytest.fixture
def release(tmp_path: Path) -> Path:
    make_release(tmp_path / "release")
    return tmp_path / "release"


def test_deterministic_and_independent_of_location(release: Path, tmp_path: Path) -> None:
    digest = measure(release)
    assert len(digest) == 32 and measure(release) == digest
    moved = tmp_path / "elsewhere" / "release"
    shutil.copytree(release, moved, symlinks=True)
    os.utime(moved / "gateway" / "capture" / "sip.py", (0, 0))
    assert measure(moved) == digest


def test_top_level_links_are_followed(release: Path, tmp_path: Path) -> None:
    package, config, models = inputs(release)
    current = tmp_path / "current"
    current.symlink_to(package)
    assert release_measurement(current, config, models) == measure(release)


def test_interpreter_caches_do_not_count(release: Path) -> None:
    digest = measure(release)
    cache = release / "gateway" / "capture" / "__pycache__"
    cache.mkdir()
    (cache / "sip.cpython-311.pyc").write_bytes(b"\x00" * 16)
    (release / "gateway" / "stray.pyc").write_bytes(b"\x00")
    assert measure(release) == digest


CHANGES: dict[str, Callable[[Path], None]] = {
    "code edited": lambda r: (r / "gateway/capture/rtp.py").write_text("HEADER = 13\n"),
    "code byte appended": lambda r: (r / "gateway/py.typed").write_bytes(b"\n"),
    "file added": lambda r: (r / "gateway/capture/evil.py").write_text("import os\n"),
    "file removed": lambda r: (r / "gateway/capture/rtp.py").unlink(),
    "file renamed": lambda r: (r / "gateway/capture/rtp.py").rename(r / "gateway/capture/rtq.py"),
    "link retargeted": lambda r: (
        (r / "gateway/alias.py").unlink(),
        os.symlink("capture/rtp.py", r / "gateway/alias.py"),
    ),
    "config edited": lambda r: (r / "callveil.toml").write_text('[site]\nname = "test2"\n'),
    "model byte flipped": lambda r: (r / "models/emotion.onnx").write_bytes(
        b"\x01" + (r / "models/emotion.onnx").read_bytes()[1:]
    ),
    "model tree edited": lambda r: (r / "models/vosk/conf").write_text("--sample-frequency=8000\n"),
    "model tree file added": lambda r: (r / "models/vosk/am/extra").write_bytes(b""),
}


@pytest.mark.parametrize("change", CHANGES, ids=list(CHANGES))
def test_every_change_changes_the_digest(release: Path, change: str) -> None:
    before = measure(release)
    CHANGES[change](release)
    assert measure(release) != before


def test_content_moved_between_config_and_package_is_distinguished(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        d.mkdir()
    (a / "x").write_text("one")
    (b / "x").write_text("two")
    assert release_measurement(a, b / "x", []) != release_measurement(b, a / "x", [])
    # the same model listed in another order is another configuration
    m1, m2 = tmp_path / "m1", tmp_path / "m2"
    m1.write_bytes(b"1")
    m2.write_bytes(b"2")
    assert release_measurement(a, b / "x", [m1, m2]) != release_measurement(a, b / "x", [m2, m1])


def test_missing_input_fails_loudly(release: Path) -> None:
    with pytest.raises(FileNotFoundError):
        release_measurement(release / "gateway", release / "missing.toml", [])
    with pytest.raises(FileNotFoundError):
        release_measurement(release / "gateway", release / "callveil.toml", [release / "none"])


def test_installed_package_measures(tmp_path: Path) -> None:
    package = Path(gateway.__file__).parent
    config = REPO / "callveil.example.toml"
    digest = release_measurement(package, config, [])
    assert release_measurement(package, config, []) == digest
    edited = tmp_path / "callveil.toml"
    shutil.copy(config, edited)
    with edited.open("a") as f:
        f.write("\n")
    assert release_measurement(package, edited, []) != digest
