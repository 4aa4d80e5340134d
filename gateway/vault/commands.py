"""The staff commands: ``users``, ``vault``, ``audit``, ``retention`` and ``register``.

Each command that touches records, accounts or the log needs ``--user`` and ``--purpose`` and
the user's password, read from the terminal or, for scripts, from ``$CALLVEIL_PASSWORD``.
Exit status: 0 done, 1 failed (or the audit log has problems), 2 configuration or key error,
3 refused.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import importlib.util
import io
import os
import sys
import wave
from collections.abc import Callable
from pathlib import Path

from gateway.closing import Closing
from gateway.config import Config
from gateway.seal.envelope import Sealer
from gateway.seal.fromconfig import open_configured_provider
from gateway.seal.keyprovider import KeyProvider
from gateway.vault.access import Credentials, Gate, VaultAccess
from gateway.vault.audit import GRANTED, REFUSED, AuditEvent, AuditLog
from gateway.vault.permissions import (
    AUDIT_EXPORT,
    AUDIT_VERIFY,
    EXPORT,
    OWN_PASSWORD,
    PLAY,
    ROLES,
    USERS_LIST,
    USERS_MANAGE,
    AccessDenied,
)
from gateway.vault.records import PARTITIONS, VaultError
from gateway.vault.register import render_register
from gateway.vault.retention import run_retention
from gateway.vault.store import Vault
from gateway.vault.users import RateLimit, Users, check_name, production_hasher
from gateway.verifiers.audit import fingerprint

PASSWORD_ENV = "CALLVEIL_PASSWORD"
NEW_PASSWORD_ENV = "CALLVEIL_NEW_PASSWORD"
EXIT_FAILED = 1
EXIT_REFUSED = 3
BOOTSTRAP = "bootstrap"

Handler = Callable[[argparse.Namespace, Config, Path], int]


class _Box(Closing):
    """The parts one staff command needs, opened from the configuration, closed together."""

    def __init__(self, config: Config, config_path: Path, *, with_vault: bool) -> None:
        settings = config.vault
        self._vault: Vault | None = None
        self._provider: KeyProvider = open_configured_provider(config, config_path)
        self._opened: list[Closing | KeyProvider] = [self._provider]
        try:
            self.audit = AuditLog(
                Path(settings.audit_path), self._provider, sign_every=settings.sign_every
            )
            self._opened.append(self.audit)
            limits = RateLimit(
                settings.password_free_attempts,
                settings.password_lockout_s,
                settings.password_lockout_max_s,
            )
            hasher = production_hasher(settings.password_memory_mib)
            self.users = Users(Path(settings.users_path), limits=limits, hasher=hasher)
            self._opened.append(self.users)
            self.gate = Gate(self.users, self.audit)
            if with_vault:
                path = Path(settings.path)
                path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                # each partition under its own key, derived from the box key
                sealers = {p: Sealer(self._provider, label=p) for p in PARTITIONS}
                self._vault = Vault(path, sealers)
                self._opened.append(self._vault)
        except BaseException:
            self.close()
            raise

    @property
    def vault(self) -> Vault:
        if self._vault is None:
            raise VaultError("internal: this command opened no vault")
        return self._vault

    def access(self) -> VaultAccess:
        return VaultAccess(self.vault, self.gate)

    def close(self) -> None:
        while self._opened:  # newest first: the audit log signs its head before the key goes
            self._opened.pop().close()


def _password(user: str) -> str:
    value = os.environ.get(PASSWORD_ENV)
    return value if value is not None else getpass.getpass(f"password for {user}: ")


def _new_password(name: str) -> str:
    value = os.environ.get(NEW_PASSWORD_ENV)
    if value is not None:
        return value
    first = getpass.getpass(f"new password for {name}: ")
    if getpass.getpass(f"new password for {name} again: ") != first:
        raise VaultError("the two passwords differ; nothing was changed")
    return first


def _credentials(args: argparse.Namespace) -> Credentials:
    return Credentials(args.user, _password(args.user), args.purpose)


# -- users ----------------------------------------------------------------------------------


def _users_bootstrap(args: argparse.Namespace, config: Config, path: Path) -> int:
    check_name(args.name)  # checked first: only valid names reach the audit log
    with _Box(config, path, with_vault=False) as box:
        password = _new_password(args.name)
        try:
            user = box.users.bootstrap(args.name, password)
        except AccessDenied as exc:
            event = AuditEvent(args.name, "-", BOOTSTRAP, REFUSED, reason=str(exc))
            box.audit.append(event)
            raise
        purpose = "first administrator of a new box"
        box.audit.append(AuditEvent(user.name, user.role, BOOTSTRAP, GRANTED, purpose))
    print(f"administrator {user.name!r} created; add the other staff with `callveil users add`")
    return 0


def _users_add(args: argparse.Namespace, config: Config, path: Path) -> int:
    check_name(args.name)
    with _Box(config, path, with_vault=False) as box:
        cred = _credentials(args)
        password = _new_password(args.name)
        admin = box.gate.authorize(cred, USERS_MANAGE, subject=args.name)
        with box.gate.performing(admin, cred, USERS_MANAGE, subject=args.name):
            user = box.users.add(args.name, args.role, password)
    print(f"user {user.name!r} added with role {user.role}")
    return 0


def _users_passwd(args: argparse.Namespace, config: Config, path: Path) -> int:
    check_name(args.name)
    action = OWN_PASSWORD if args.name == args.user else USERS_MANAGE
    with _Box(config, path, with_vault=False) as box:
        cred = _credentials(args)
        password = _new_password(args.name)
        user = box.gate.authorize(cred, action, subject=args.name)
        with box.gate.performing(user, cred, action, subject=args.name):
            box.users.set_password(args.name, password)
    print(f"password of {args.name!r} changed")
    return 0


def _users_remove(args: argparse.Namespace, config: Config, path: Path) -> int:
    check_name(args.name)
    with _Box(config, path, with_vault=False) as box:
        cred = _credentials(args)
        admin = box.gate.authorize(cred, USERS_MANAGE, subject=args.name)
        with box.gate.performing(admin, cred, USERS_MANAGE, subject=args.name):
            box.users.remove(args.name)
    print(f"user {args.name!r} removed")
    return 0


def _users_list(args: argparse.Namespace, config: Config, path: Path) -> int:
    with _Box(config, path, with_vault=False) as box:
        box.gate.authorize(_credentials(args), USERS_LIST)
        users = box.users.list()
    for user in users:
        print(f"{user.name:<32} {user.role}")
    return 0


# -- vault ----------------------------------------------------------------------------------


def _vault_list(args: argparse.Namespace, config: Config, path: Path) -> int:
    with _Box(config, path, with_vault=True) as box:
        records = box.access().list(_credentials(args), args.partition)
    if not records:
        print(f"no records in the {args.partition} partition")
    else:
        print(f"{'id':<32}  {'kind':<9}  {'period':<10}  {'phase':<9}  expires")
    for info in records:
        print(f"{info.id:<32}  {info.kind:<9}  {info.period:<10}  {info.phase:<9}  {info.expires}")
    return 0


def _vault_export(args: argparse.Namespace, config: Config, path: Path) -> int:
    out = Path(args.out)
    if out.exists():  # checked before the access, so a typo does not cost an audited read
        raise VaultError(f"{out} exists already; choose a new file name")
    with _Box(config, path, with_vault=True) as box:
        info, data = box.access().open(_credentials(args), args.record, EXPORT)
    with os.fdopen(os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
        f.write(data)
    print(f"{info.partition} {info.kind} {info.id} written to {out} ({len(data)} bytes)")
    return 0


def _play(data: bytes) -> None:
    import pyaudio

    try:
        with wave.open(io.BytesIO(data)) as wav:
            params, frames = wav.getparams(), wav.readframes(wav.getnframes())
    except (wave.Error, EOFError) as exc:
        raise VaultError(f"the record is not a WAV recording ({exc}); export it instead") from None
    audio = pyaudio.PyAudio()
    try:
        stream = audio.open(
            format=audio.get_format_from_width(params.sampwidth),
            channels=params.nchannels,
            rate=params.framerate,
            output=True,
        )
        stream.write(frames)
        stream.stop_stream()
        stream.close()
    except OSError as exc:
        raise VaultError(
            f"this machine cannot play sound ({exc}); export the record instead "
            "(callveil vault export ID --out FILE)"
        ) from None
    finally:
        audio.terminate()


def _vault_play(args: argparse.Namespace, config: Config, path: Path) -> int:
    if importlib.util.find_spec("pyaudio") is None:
        raise VaultError(
            "PyAudio is not installed, so recordings cannot be played here; export the record "
            "instead (callveil vault export ID --out FILE) and play the file elsewhere"
        )
    with _Box(config, path, with_vault=True) as box:
        info, data = box.access().open(_credentials(args), args.record, PLAY)
    _play(data)
    print(f"played {info.partition} {info.kind} {info.id}")
    return 0


def _vault_delete(args: argparse.Namespace, config: Config, path: Path) -> int:
    with _Box(config, path, with_vault=True) as box:
        box.access().delete(_credentials(args), args.record)
    print(f"record {args.record} deleted (crypto-shredded)")
    return 0


# -- audit, retention, register --------------------------------------------------------------


def _audit_verify(args: argparse.Namespace, config: Config, path: Path) -> int:
    with _Box(config, path, with_vault=False) as box:
        box.gate.authorize(_credentials(args), AUDIT_VERIFY)
        report = box.audit.verify()
    print(report.render())
    return 0 if report.ok else EXIT_FAILED


def _audit_export(args: argparse.Namespace, config: Config, path: Path) -> int:
    out = Path(args.out)
    if out.exists():
        raise VaultError(f"{out} exists already; choose a new file name")
    with _Box(config, path, with_vault=False) as box:
        cred = _credentials(args)
        user = box.gate.authorize(cred, AUDIT_EXPORT)
        with box.gate.performing(user, cred, AUDIT_EXPORT):
            count = box.audit.export(out)
        key = fingerprint(box.audit.public_key_pem)
    print(
        f"{count} entries written to {out}\n"
        f"box signing key: {key}\n"
        "verify it off the box with the box's public key (not the copy inside the export):\n"
        f"  python3 audit.py {out} --public-key BOX-KEY.pem"
    )
    return 0


def _retention_run(args: argparse.Namespace, config: Config, path: Path) -> int:
    with _Box(config, path, with_vault=True) as box:
        counts = run_retention(box.vault, box.audit, dt.date.today())
    print("shredded: " + ", ".join(f"{p} {n}" for p, n in counts.items()))
    return 0


def _register(args: argparse.Namespace, config: Config, path: Path) -> int:
    print(render_register(config, path))
    return 0


# -- parsers --------------------------------------------------------------------------------


def _run(handler: Handler, args: argparse.Namespace, config: Config, path: Path) -> int:
    try:
        return handler(args, config, path)
    except AccessDenied as exc:
        print(f"callveil: refused: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except VaultError as exc:
        print(f"callveil: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as exc:
        print(f"callveil: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAILED


_CREDENTIALS_HELP = (
    f"The password is read from the terminal, or from ${PASSWORD_ENV} (for scripts); a new "
    f"password likewise, or from ${NEW_PASSWORD_ENV}. Every use is written to the audit log."
)


def add_staff_commands(
    sub: argparse._SubParsersAction,
    common: argparse.ArgumentParser,
    load: Callable[[argparse.Namespace], Config],
    config_path: Callable[[argparse.Namespace], Path],
) -> None:
    """Register the staff commands on the ``callveil`` parser's subcommands ``sub``."""

    def command(group: argparse._SubParsersAction, name: str, handler: Handler, help: str,
                *, staff: bool = True) -> argparse.ArgumentParser:  # fmt: skip
        parser = group.add_parser(
            name, parents=[common], help=help, epilog=_CREDENTIALS_HELP if staff else None
        )
        if staff:
            parser.add_argument("--user", required=True, help="your user name")
            parser.add_argument(
                "--purpose",
                required=True,
                help="why you need this, in words (logged; no personal data), "
                "e.g. 'quality review of billing calls, ticket 4711'",
            )
        parser.set_defaults(func=lambda args: _run(handler, args, load(args), config_path(args)))
        return parser

    users = sub.add_parser("users", help="staff accounts and their roles").add_subparsers(
        dest="users_command", required=True
    )
    boot = command(
        users, "bootstrap", _users_bootstrap, "create the first administrator (empty box only)",
        staff=False,
    )  # fmt: skip
    boot.add_argument("name", help="the administrator's user name")
    add = command(users, "add", _users_add, "add a user (administrators)")
    add.add_argument("name", help="the new user's name")
    add.add_argument("--role", required=True, choices=ROLES, help="what the user may do")
    passwd = command(
        users, "passwd", _users_passwd, "change your password, or (administrators) anyone's"
    )
    passwd.add_argument("name", help="whose password")
    remove = command(users, "remove", _users_remove, "remove a user (administrators)")
    remove.add_argument("name", help="the user to remove")
    command(users, "list", _users_list, "list users and roles (administrators, auditors)")

    vault = sub.add_parser("vault", help="authorized access to stored records").add_subparsers(
        dest="vault_command", required=True
    )
    listing = command(vault, "list", _vault_list, "list record metadata of a partition")
    listing.add_argument("--partition", required=True, choices=PARTITIONS)
    export = command(vault, "export", _vault_export, "write a record's content to a file")
    export.add_argument("record", help="record id (from vault list)")
    export.add_argument("--out", required=True, help="new file to write (mode 0600)")
    play = command(vault, "play", _vault_play, "play a recording (needs PyAudio and a speaker)")
    play.add_argument("record", help="record id (from vault list)")
    delete = command(vault, "delete", _vault_delete, "crypto-shred a record now (administrators)")
    delete.add_argument("record", help="record id (from vault list)")

    audit = sub.add_parser("audit", help="the signed, hash-chained audit log").add_subparsers(
        dest="audit_command", required=True
    )
    command(audit, "verify", _audit_verify, "check the audit log's chain and signatures")
    out = command(audit, "export", _audit_export, "write the log for verification elsewhere")
    out.add_argument("--out", required=True, help="new file to write")

    retention = sub.add_parser("retention", help="automatic deletion").add_subparsers(
        dest="retention_command", required=True
    )
    command(
        retention, "run", _retention_run, "crypto-shred every expired record (run by a timer)",
        staff=False,
    )  # fmt: skip
    command(
        sub, "register", _register, "print the processing register from the configuration",
        staff=False,
    )  # fmt: skip
