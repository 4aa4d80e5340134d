"""The ``callveil`` command."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path

from gateway import __version__
from gateway.config import Config, ConfigError, load_config
from gateway.doctor.command import add_doctor_command
from gateway.logs import configure_logging
from gateway.seal.keyprovider import SealError
from gateway.seal.resealcmd import add_reseal_command
from gateway.vault.commands import add_staff_commands

DEFAULT_CONFIG = Path("/etc/callveil/callveil.toml")


def _config_path(args: argparse.Namespace) -> Path:
    if args.config is not None:
        return Path(args.config)
    return Path(os.environ.get("CALLVEIL_CONFIG", DEFAULT_CONFIG))


def _load(args: argparse.Namespace) -> Config:
    config = load_config(_config_path(args))
    configure_logging(config.logging.level, config.logging.format)
    return config


def _cmd_replay(args: argparse.Namespace) -> int:
    from gateway.capture.replay import replay_file

    config = _load(args)
    return replay_file(Path(args.file), config, progress=not args.quiet)


def _cmd_run(args: argparse.Namespace) -> int:
    # Before numpy loads: a BLAS thread pool would start before the daemon drops its
    # capabilities (which leaves those threads holding them), and would only compete with
    # the per-call analysis threads for the cores.
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        os.environ.setdefault(name, "1")
    from gateway.daemon.run import run_daemon

    return run_daemon(_config_path(args), pcap=Path(args.pcap) if args.pcap else None)


def _cmd_capture_check(args: argparse.Namespace) -> int:
    from gateway.capture.replay import check_interface

    config = _load(args)
    return check_interface(args.interface or config.capture.interface, args.seconds, config)


def _cmd_config_check(args: argparse.Namespace) -> int:
    path = _config_path(args)
    load_config(path)
    print(f"{path}: valid")
    return 0


def _cmd_rotate_key(args: argparse.Namespace) -> int:
    from gateway.seal.sampling_key import SamplingKey

    config = _load(args)
    SamplingKey.rotate(Path(config.privacy.sampling_key_file))
    print("sampling key rotated: calls set up from now on are sampled under the new key")
    return 0


def _cmd_attest(args: argparse.Namespace) -> int:
    from gateway.seal import attest
    from gateway.seal.fromconfig import open_configured_provider

    config = _load(args)
    nonce, challenge = b"", None
    if args.step == "quote":
        try:
            nonce = bytes.fromhex(args.nonce)
        except ValueError:
            raise SealError("--nonce must be hex, as the verifier chose it") from None
    if args.step == "activate":
        try:
            challenge = json.loads(Path(args.challenge).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise SealError(f"cannot read the challenge {args.challenge}: {exc}") from None
    with contextlib.closing(open_configured_provider(config, _config_path(args))) as provider:
        if args.step == "signing-key":
            return _write_or_print(provider.public_key_pem().decode(), args.out)
        if challenge is not None:
            print(attest.activate(provider, challenge))
            return 0
        if args.step == "enrolment":
            document = attest.enrolment(provider)
        else:
            document = attest.quote(provider, nonce, config.keys.pcr)
    return _write_or_print(json.dumps(document, indent=1) + "\n", args.out)


def _write_or_print(text: str, out: str | None) -> int:
    if out:
        Path(out).write_text(text, encoding="utf-8")
    else:
        print(text, end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="callveil",
        description="Privacy-preserving call analytics beside the PBX.",
    )
    parser.add_argument("--version", action="version", version=f"callveil {__version__}")
    config_help = f"configuration file (default: $CALLVEIL_CONFIG or {DEFAULT_CONFIG})"
    parser.add_argument("-c", "--config", help=config_help)
    # the option is accepted after the subcommand too, where people tend to type it
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-c", "--config", default=argparse.SUPPRESS, help=config_help)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser(
        "run", parents=[common], help="the daemon: mirror port to vault, aggregates and MQTT"
    )
    run.add_argument(
        "--pcap",
        help="read this capture file instead of the mirror port, then stop (demo, tests)",
    )
    run.set_defaults(func=_cmd_run)

    replay = sub.add_parser(
        "replay", parents=[common], help="run the capture stage over a pcap/pcapng file"
    )
    replay.add_argument("file", help="capture file (pcap or pcapng)")
    replay.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    replay.set_defaults(func=_cmd_replay)

    check = sub.add_parser(
        "capture-check",
        parents=[common],
        help="listen on the mirror port and summarise what it carries",
    )
    check.add_argument("--interface", help="interface (default: capture.interface)")
    check.add_argument("--seconds", type=float, default=30.0, help="how long to listen")
    check.set_defaults(func=_cmd_capture_check)

    config = sub.add_parser(
        "config-check", parents=[common], help="validate the configuration file"
    )
    config.set_defaults(func=_cmd_config_check)

    rotate = sub.add_parser(
        "rotate-sampling-key", parents=[common], help="replace the per-box sampling secret"
    )
    rotate.set_defaults(func=_cmd_rotate_key)
    add_staff_commands(sub, common, _load, _config_path)
    add_doctor_command(sub, common, _config_path)
    add_reseal_command(sub, _config_path)

    attest = sub.add_parser(
        "attest", parents=[common], help="prove to a security team what this box runs (TPM)"
    )
    steps = attest.add_subparsers(dest="step", required=True)
    steps.add_parser(
        "enrolment", parents=[common], help="print the TPM's EK, its certificate and the AK"
    )
    activate = steps.add_parser(
        "activate", parents=[common], help="answer a verifier's enrolment challenge"
    )
    activate.add_argument("challenge", help="the challenge file the verifier made")
    quote = steps.add_parser("quote", parents=[common], help="quote the release and boot PCRs")
    quote.add_argument("--nonce", required=True, help="the verifier's random nonce, in hex")
    signing = steps.add_parser(
        "signing-key",
        parents=[common],
        help="print the public key that signs this box's aggregates (the centre registers it "
        "as <box_id>.pem for callveil feed --keys)",
    )
    for step in (steps.choices["enrolment"], quote, signing):
        step.add_argument("--out", help="write the document here instead of standard output")
    attest.set_defaults(func=_cmd_attest)

    # listed for --help only: main() hands its arguments to the standalone verifier untouched
    sub.add_parser(
        "verify-attestation",
        help="check a box's enrolment or quote (security teams; see its --help)",
        add_help=False,
    )
    sub.add_parser(
        "feed",
        help="central side: collect, verify and merge the boxes' aggregates (see its --help)",
        add_help=False,
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # the verifier needs no configuration: "-c FILE" before it is accepted and ignored
    start = 2 if argv[:1] in (["-c"], ["--config"]) else 0
    if argv[start : start + 1] == ["verify-attestation"]:
        from gateway.verifiers.attestation import main as verify

        return verify(argv[start + 1 :])
    if argv[start : start + 1] == ["feed"]:
        from gateway.feed.command import main as feed

        return feed(argv[start + 1 :])
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"callveil: configuration error: {exc}", file=sys.stderr)
        return 2
    except SealError as exc:
        print(f"callveil: key error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
