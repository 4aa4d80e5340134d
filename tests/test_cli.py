"""The console command: exit codes and messages people see."""

from pathlib import Path

from gateway.cli import main

REPO = Path(__file__).resolve().parents[1]


def test_config_check_accepts_the_example(capsys) -> None:
    assert main(["config-check", "-c", str(REPO / "callveil.example.toml")]) == 0
    assert "valid" in capsys.readouterr().out


def test_bad_configuration_exits_2_naming_the_key(tmp_path, capsys) -> None:
    bad = tmp_path / "box.toml"
    bad.write_text("[privacy]\ntrim_seconds = -1\n")
    assert main(["-c", str(bad), "config-check"]) == 2
    err = capsys.readouterr().err
    assert "privacy.trim_seconds = -1 is out of range" in err


def test_missing_configuration_says_where_to_get_one(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("CALLVEIL_CONFIG", str(tmp_path / "absent.toml"))
    assert main(["replay", str(tmp_path / "x.pcap")]) == 2
    assert "copy callveil.example.toml there" in capsys.readouterr().err


def test_rotate_sampling_key_replaces_the_secret(tmp_path, capsys) -> None:
    config = tmp_path / "box.toml"
    config.write_text('[privacy]\nsampling_key_file = "state/sampling.key"\n')
    key = tmp_path / "state" / "sampling.key"
    assert main(["rotate-sampling-key", "-c", str(config)]) == 0
    first = key.read_bytes()
    assert main(["rotate-sampling-key", "-c", str(config)]) == 0
    assert key.read_bytes() != first and len(first) == 32
    assert "rotated" in capsys.readouterr().out


def test_capture_check_on_a_missing_interface_fails_clearly(tmp_path, capsys) -> None:
    config = tmp_path / "box.toml"
    config.write_text('[privacy]\nsampling_key_file = "k"\n')
    assert main(["capture-check", "--interface", "nope0", "--seconds", "1", "-c", str(config)]) == 1
    assert "no network interface named 'nope0'" in capsys.readouterr().err


def test_a_sampling_key_others_can_read_is_refused(tmp_path, capsys) -> None:
    config = tmp_path / "box.toml"
    config.write_text('[privacy]\nsampling_key_file = "k"\n')
    (tmp_path / "k").write_bytes(bytes(32))
    (tmp_path / "k").chmod(0o644)
    demo = REPO / "demo" / "demo-calls.pcap"
    assert main(["replay", "-q", str(demo), "-c", str(config)]) == 2
    assert "chmod 600" in capsys.readouterr().err
