"""``callveil reseal``: approve the next release on a TPM box, and forget the old one later.

An update of a TPM box has three steps. The running release measures the new one (its package,
the configuration it will read and the models that configuration names) and seals the vault
key to that measurement too (``reseal --package-root DIR``). The box switches and reboots, and
the new release opens the vault; if it fails, the box goes back and the old release still
opens it. Once the new release has proved itself it runs ``reseal --prune``, after which only
it opens the vault.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pwd
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TextIO

from gateway.config import Config, ConfigError, load_config
from gateway.seal.fromconfig import model_paths, open_configured_provider
from gateway.seal.keyprovider import KeyProvider, SealError
from gateway.seal.measurement import release_measurement
from gateway.vault.audit import DONE, FAILED, AuditEvent, AuditLog
from gateway.vault.records import VaultError

PACKAGE = "gateway"
# how an approval appears in the audit log; the subject is the release's measurement prefix
APPROVE = "approve-release"
PRUNE = "prune-releases"
RESEAL_ROLE = "system"
RESEAL_PURPOSE = "release update"


def package_dir(root: Path) -> Path:
    """The ``gateway`` package at ``root``, or inside ``root`` when it is a release's virtual
    environment (``lib/python3.X/site-packages/gateway``)."""
    if root.name == PACKAGE and (root / "__init__.py").is_file():
        return root
    found = sorted(root.glob(f"lib/python3*/site-packages/{PACKAGE}/__init__.py"))
    if len(found) == 1:
        return found[0].parent
    raise SealError(
        f"--package-root {root} is neither callveil's package directory ({PACKAGE}/ with "
        "__init__.py) nor a release's virtual environment holding exactly one "
        f"lib/python3.X/site-packages/{PACKAGE}: give the new release's directory, e.g. "
        "/opt/callveil/releases/<release>"
    )


def _same_keys(current: Config, new: Config, new_path: Path) -> None:
    """Refuse a new configuration that moves the vault key: the approval would not fit it."""
    for name in ("provider", "pcr", "state_dir"):
        before, after = getattr(current.keys, name), getattr(new.keys, name)
        if before != after:
            raise SealError(
                f"{new_path} changes keys.{name} from {before!r} to {after!r}: an update cannot "
                f"move the vault key; keep keys.{name} as it is in the new configuration"
            )


def new_release_measurement(current: Config, package_root: Path, new_config: Path) -> bytes:
    """The measurement the new release will extend at its first start."""
    if not new_config.is_file():
        raise ConfigError(
            f"{new_config}: no such configuration file; --config names the file the new "
            "release will read"
        )
    config = load_config(new_config)
    _same_keys(current, config, new_config)
    package = package_dir(package_root)
    try:
        return release_measurement(package, new_config, model_paths(config))
    except OSError as exc:
        raise SealError(
            f"cannot measure the new release ({exc}): check that {package}, {new_config} and "
            "the models it names are readable by this user"
        ) from None


def reseal(
    config_path: Path,
    *,
    package_root: Path | None,
    new_config: Path | None,
    prune: bool,
    out: TextIO,
) -> int:
    """Approve the release at ``package_root`` and/or prune; print what was done; exit status."""
    config = load_config(config_path)
    if config.keys.provider != "tpm":
        print(
            f'reseal is not needed: keys.provider is "{config.keys.provider}", whose key file '
            "is not bound to the release; update the box as it is",
            file=out,
        )
        return 0
    measurement = None
    if package_root is not None:
        measurement = new_release_measurement(config, package_root, new_config or config_path)
    opened = open_configured_provider(config, config_path, create=False)
    # importable now: the TPM provider just opened
    from gateway.seal.tpm import TpmKeyProvider, extended_pcr

    with contextlib.closing(opened) as provider:
        if not isinstance(provider, TpmKeyProvider):
            raise SealError(f"keys.provider is tpm but the {provider.name} provider opened")
        with _audit_log(config, provider) as audit:
            if measurement is not None:
                value = extended_pcr(measurement).hex()[:16]
                with _audited(audit, APPROVE, measurement) as said:
                    if provider.reseal(measurement):
                        said.append("approved")
                        print(
                            f"approved the new release (measurement {measurement.hex()}): the "
                            f"vault key is now sealed to it (PCR {config.keys.pcr} {value}...) "
                            "as well as to the running release, so the box can go back. Switch "
                            "to it and reboot (the release is measured once per boot); once it "
                            "runs well, run `callveil reseal --prune` with it",
                            file=out,
                        )
                    else:
                        said.append("already approved")
                        print(
                            "nothing to re-seal: the vault key is already sealed to that "
                            f"release (measurement {measurement.hex()}, PCR {config.keys.pcr} "
                            f"{value}...)",
                            file=out,
                        )
            if prune:
                with _audited(audit, PRUNE, measurement) as said:
                    removed = provider.prune(keep=[measurement] if measurement else [])
                    said.append(f"removed {removed}")
                kept = "the running release" + (" and the new one" if measurement else "")
                if removed:
                    print(
                        f"pruned: removed {removed} sealed "
                        f"{'copy' if removed == 1 else 'copies'} of the vault key; only {kept} "
                        "can open the vault now",
                        file=out,
                    )
                else:
                    print(f"nothing to prune: only {kept} can open the vault", file=out)
    return 0


def _audit_log(config: Config, provider: KeyProvider) -> AuditLog:
    """The vault's audit log: who may open the vault is as much its business as who did."""
    try:
        return AuditLog(Path(config.vault.audit_path), provider, sign_every=config.vault.sign_every)
    except (VaultError, OSError) as exc:
        raise SealError(
            f"cannot open the audit log {config.vault.audit_path} ({exc}); nothing was changed: "
            "run reseal as the service user, which owns the log"
        ) from None


@contextlib.contextmanager
def _audited(audit: AuditLog, action: str, measurement: bytes | None) -> Iterator[list[str]]:
    """Log ``action`` as done with what the block said, or as failed with its error."""
    said: list[str] = []
    subject = measurement.hex()[:16] if measurement is not None else None
    try:
        yield said
    except SealError as exc:
        audit.append(_event(action, FAILED, subject, str(exc)))
        raise
    audit.append(_event(action, DONE, subject, "; ".join(said)))


def _event(action: str, outcome: str, subject: str | None, reason: str) -> AuditEvent:
    return AuditEvent(
        _account(), RESEAL_ROLE, action, outcome, RESEAL_PURPOSE, subject=subject, reason=reason
    )


def _account() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid {os.geteuid()}"


def add_reseal_command(
    sub: argparse._SubParsersAction, config_path: Callable[[argparse.Namespace], Path]
) -> None:
    """Register ``reseal`` on the ``callveil`` parser's subcommands ``sub``.

    Its ``--config`` names the NEW release's configuration; the running release's comes, as
    for every command, from ``callveil -c FILE`` before the subcommand.
    """
    parser = sub.add_parser(
        "reseal",
        help="TPM boxes: approve the next release before an update; prune after it",
        description="Run by the running release before an update: seal the vault key to the "
        "new release as well (--package-root), so the box opens its vault after rebooting "
        "into it and still after going back. Run by the new release once it works: --prune, "
        "so only it opens the vault. The running release's configuration is callveil's -c "
        "FILE (before the subcommand).",
    )
    parser.add_argument(
        "--package-root",
        type=Path,
        metavar="DIR",
        help="the new release: its virtual environment or its site-packages/gateway directory",
    )
    parser.add_argument(
        "--config",
        dest="new_config",
        type=Path,
        metavar="FILE",
        help="the configuration file the new release will read (default: the running one's)",
    )
    previous = parser.add_mutually_exclusive_group()
    previous.add_argument(
        "--keep-previous",
        dest="prune",
        action="store_const",
        const=False,
        help="keep every release approved so far, the running one included (the default)",
    )
    previous.add_argument(
        "--prune",
        dest="prune",
        action="store_const",
        const=True,
        help="forget every release but the running one (and the new one, with --package-root)",
    )

    def run(args: argparse.Namespace) -> int:
        if args.package_root is None and args.new_config is not None:
            parser.error("--config names the new release's configuration: give --package-root")
        if args.package_root is None and not args.prune:
            parser.error(
                "give --package-root DIR (approve a new release, run by the running one) or "
                "--prune (run by the new release once it works)"
            )
        return reseal(
            config_path(args),
            package_root=args.package_root,
            new_config=args.new_config,
            prune=bool(args.prune),
            out=sys.stdout,
        )

    parser.set_defaults(func=run)
