"""The processing register (GDPR art. 30) as this box applies it, written from its configuration.

Retention periods, access roles, sampling and trimming come from the configuration and the
permission table, so the register cannot drift from what the box does. The purpose and legal
basis wording is the box's design; the controller confirms it with its DPO.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

from gateway.config import Config
from gateway.vault.permissions import (
    AUDIT_EXPORT,
    AUDIT_VERIFY,
    DELETE,
    EXPORT,
    LIST,
    PHASE,
    PLAY,
    USERS_LIST,
    USERS_MANAGE,
    roles_for,
)
from gateway.vault.phases import COLLECTED, PHASES, check_transition
from gateway.vault.records import VaultError, check_partition
from gateway.vault.retention import retention_days

WIDTH = 100


@dataclass(frozen=True, slots=True)
class _RecordType:
    title: str
    partition: str
    kind: str
    holds: str
    purpose: str
    basis: str


_RECORD_TYPES = (
    _RecordType(
        "Anonymized call recording",
        "analytics",
        "recording",
        "both directions of a sampled call, its first {trim} s cut before decoding, both voices "
        "disguised with per-call random parameters; no number, name, address, operator "
        "identity or call time",
        "improving the service: listening checks of the analysis results",
        "legitimate interest (GDPR art. 6(1)(f)) under the Garante's conditions for "
        "call-center quality recordings: sampling, trimming, anonymization, short retention",
    ),
    _RecordType(
        "Call summary",
        "analytics",
        "summary",
        "emotion and topic results of a sampled, anonymized call, with positions relative to "
        "the call only; no identifiers and no times",
        "service quality analytics: aggregate statistics per site or queue, never per operator",
        "legitimate interest (GDPR art. 6(1)(f)); no evaluation of individual operators",
    ),
    _RecordType(
        "Contract recording",
        "contract",
        "recording",
        "the whole call (not trimmed, not anonymized) of calls that conclude or end a contract, "
        "as marked by the configured contract rules",
        "evidence that a contract was concluded or ended",
        "performance of a contract and the establishment or defence of legal claims "
        "(GDPR art. 6(1)(b), 6(1)(f) and 17(3)(e))",
    ),
)


def _roles(action: str, partition: str | None = None) -> str:
    return ", ".join(roles_for(action, partition)) or "nobody"


def _lifecycle(partition: str) -> str:
    """The phases a record of ``partition`` passes through, read from the phase rules."""
    path = [COLLECTED]
    for phase in PHASES[1:]:
        try:
            check_transition(check_partition(partition), path[-1], phase)
        except VaultError:
            continue
        path.append(phase)
    return " -> ".join(path)


def _field(indent: int, label: str, text: str) -> str:
    """``label: text`` wrapped with the text aligned, for a terminal."""
    head = " " * indent + f"{label + ':':<{17 - indent}} "
    return textwrap.fill(
        text,
        WIDTH,
        initial_indent=head,
        subsequent_indent=" " * len(head),
        break_on_hyphens=False,
    )


def _rule(kind: str, header: str, pattern: str) -> str:
    what = f"SIP header {header}" if kind == "header" else kind.replace("_", " ")
    return f"{what} matches {pattern!r}"


def render_register(config: Config, config_path: Path) -> str:
    """The register as plain text."""
    vault, privacy = config.vault, config.privacy
    trim = f"{privacy.trim_seconds:g}"
    keys = (
        f"sealed by the TPM to the measured release (PCR {config.keys.pcr})"
        if config.keys.provider == "tpm"
        else f"in the passphrase-protected key file {config.keys.key_file} (no TPM)"
    )
    rules = "; ".join(_rule(r.kind, r.header, r.pattern) for r in config.contract.rules)
    lines = [
        f"callveil processing register - site {config.site.name!r}",
        f"written from {config_path}",
        "",
        "Selection and minimisation",
        _field(
            2,
            "calls analysed",
            f"about {privacy.sample_rate:.0%}, chosen unpredictably by a keyed hash at call "
            "set-up; the others are never decoded or stored",
        ),
        _field(
            2,
            "trimmed",
            f"the first {trim} s of each direction of an analysed call, before decoding",
        ),
        _field(
            2,
            "identities",
            "SIP addresses, numbers, Call-IDs and IP addresses never leave the capture stage; "
            "nothing stored or published names a caller or an operator",
        ),
        _field(
            2, "contract calls", rules or "no contract rules configured: no call is recorded whole"
        ),
        "",
        "Records in the vault",
    ]
    for record in _RECORD_TYPES:
        part = record.partition
        days = retention_days(vault, part, record.kind)
        lines += [
            f"  {record.title} (partition {part}, kind {record.kind})",
            _field(4, "holds", record.holds.format(trim=trim)),
            _field(4, "purpose", record.purpose),
            _field(4, "legal basis", record.basis),
            _field(
                4,
                "kept",
                f"{days} days at most, then crypto-shredded by the retention job (expiry falls "
                "on a Monday, so the records of one week expire together)",
            ),
            _field(4, "phases", _lifecycle(part)),
            _field(
                4,
                "access",
                f"play: {_roles(PLAY, part)}; export: {_roles(EXPORT, part)}; phase changes: "
                f"{_roles(PHASE, part)}; list metadata: {_roles(LIST, part)}; delete early: "
                f"{_roles(DELETE, part)}",
            ),
            _field(
                4,
                "where",
                f"{vault.path}, each record under its own key (AES-256-GCM), wrapped by the "
                f"{part} partition's key, derived from the box key {keys}",
            ),
            "",
        ]
    lines += [
        "  Staff accounts",
        _field(4, "holds", "user name, role, Argon2id password hash, count of wrong passwords"),
        _field(4, "purpose", "letting only named, authorised staff into the vault"),
        _field(
            4,
            "kept",
            f"until the account is removed; managed by: {_roles(USERS_MANAGE)}; listed by: "
            f"{_roles(USERS_LIST)}",
        ),
        _field(4, "where", vault.users_path),
        "",
        "  Audit log",
        _field(
            4,
            "holds",
            "every access, refusal and retention run: user, role, action, record id, stated "
            "purpose, outcome, time of the access to the minute",
        ),
        _field(4, "purpose", "accountability of staff access (GDPR art. 5(2) and 32)"),
        _field(
            4, "kept", "for the life of the box, append-only, hash-chained, signed by the box key"
        ),
        _field(4, "access", f"verify: {_roles(AUDIT_VERIFY)}; export: {_roles(AUDIT_EXPORT)}"),
        _field(4, "where", vault.audit_path),
        "",
        "Informing callers is the PBX's announcement, not this box's.",
    ]
    return "\n".join(lines)
