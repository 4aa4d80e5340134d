"""Verify a callveil audit log: its hash chain and the box's signatures on its chain heads.

Each entry is a canonical JSON object holding its sequence number (``seq``), the hash of the
entry before it (``prev``) and what happened; its hash is SHA-256 of that text. Every so many
entries, and whenever the box closes the log or exports it, the box signs the newest
(seq, hash) pair with its ECDSA P-256 key (held by the TPM on a TPM box).

What a check finds, and names:

- an entry whose text was changed (its hash no longer matches): that entry;
- an entry changed and given a new hash (the next entry still points at the old one): that
  entry;
- entries removed from the middle (a gap in the sequence numbers): which ones;
- entries moved (stored out of sequence order): which ones;
- entries removed from the end that a signed head still vouches for: which ones;
- a rewrite that recomputed every later hash (only possible for someone who edits the file):
  the stretch between the two signed heads around it, because only the signatures, which need
  the box's key, cannot be recomputed;
- entries after the last signed head: reported as unverifiable, since whoever edits the file
  can add, change or cut them without trace.

What no check of a single log can find: the end of the log cut off together with the signed
heads that covered it. Keep each export: a later log that lacks an earlier export's signed
head, or disagrees with it, was cut.

This module needs only Python 3.11+ and ``cryptography``; copy it and run
``python3 audit.py EXPORT.json --public-key BOX-KEY.pem``. Exit status: 0 intact, 1 problems
found, 2 unreadable input.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

EXPORT_FORMAT = "callveil-audit-export/1"
GENESIS = hashlib.sha256(b"callveil audit log v1").hexdigest()
_HEAD_DOMAIN = b"callveil audit head v1\x00"


class ExportError(ValueError):
    """The export file or public key cannot be read; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One stored entry: its canonical JSON text and the hash stored beside it."""

    body: str
    hash: str


@dataclass(frozen=True, slots=True)
class Head:
    """A signed chain head: the box vouches that entry ``seq`` has hash ``hash``."""

    seq: int
    hash: str
    signature: bytes


@dataclass(frozen=True, slots=True)
class Problem:
    seq: int | None  # the entry it names, when it names one
    kind: str  # edited | removed | reordered | truncated | rewritten | forged | unsigned | damaged
    message: str


@dataclass(frozen=True, slots=True)
class Report:
    entries: int
    signed_through: int  # the last entry covered by a valid signed head (0: none)
    problems: tuple[Problem, ...]

    @property
    def ok(self) -> bool:
        return not self.problems

    def render(self) -> str:
        lines = [
            f"{self.entries} entries; entries 1 to {self.signed_through} are covered by a valid "
            "signed head"
            if self.signed_through
            else f"{self.entries} entries; none is covered by a valid signed head"
        ]
        lines += [f"PROBLEM: {problem.message}" for problem in self.problems]
        lines.append("audit log intact" if self.ok else f"{len(self.problems)} problem(s) found")
        return "\n".join(lines)


def canonical(fields: dict[str, Any]) -> str:
    """The one text form of an entry that its hash is taken over."""
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def entry_hash(body: str) -> str:
    # surrogatepass: a damaged export's unpaired surrogates still hash (to a mismatch)
    return hashlib.sha256(body.encode("utf-8", "surrogatepass")).hexdigest()


def head_message(seq: int, chain_hash: str) -> bytes:
    """The bytes the box signs for a chain head."""
    return _HEAD_DOMAIN + seq.to_bytes(8, "big") + bytes.fromhex(chain_hash)


@dataclass(frozen=True, slots=True)
class _Item:
    seq: int
    prev: str
    entry: Entry
    intact: bool  # its content matches its hash


def _claims(body: str) -> tuple[int, str] | None:
    """(seq, prev) as the entry states them, or None if it is not a readable entry."""
    try:
        fields = json.loads(body)
        seq, prev = fields["seq"], fields["prev"]
    except (ValueError, TypeError, KeyError):
        return None
    if type(seq) is not int or seq < 1 or not isinstance(prev, str):
        return None
    return seq, prev


def _items(entries: Sequence[Entry], first_seq: int, problems: list[Problem]) -> list[_Item]:
    """The entries with their sequence numbers; content that does not match its hash is
    reported and named by where it stands, since its own claims cannot be trusted."""
    items, last = [], first_seq - 1
    for entry in entries:
        claims = _claims(entry.body)
        intact = entry_hash(entry.body) == entry.hash
        if intact and claims is not None:
            seq, prev = claims
        else:
            seq, prev = last + 1, claims[1] if claims else ""
            if claims:
                what = "was edited: its content does not match its hash"
            else:
                what = "is damaged: it is not a readable entry"
            problems.append(Problem(seq, "edited", f"entry {seq} {what}"))
        items.append(_Item(seq, prev, entry, intact and claims is not None))
        last = max(last, seq)
    return items


def chain_problems(
    entries: Sequence[Entry], *, first_seq: int = 1, first_prev: str = GENESIS
) -> list[Problem]:
    """Problems in the chain of ``entries`` (stored order), which should start at ``first_seq``
    and link to ``first_prev``: edits, removals, reordering and broken links."""
    problems: list[Problem] = []
    items = _items(entries, first_seq, problems)
    last = first_seq - 1
    for item in items:
        if item.seq < last:
            problems.append(
                Problem(item.seq, "reordered", f"entry {item.seq} is stored after entry {last}")
            )
        elif item.seq == last:
            problems.append(Problem(item.seq, "edited", f"entry {item.seq} appears twice"))
        last = max(last, item.seq)
    by_seq: dict[int, _Item] = {}
    for item in items:
        by_seq.setdefault(item.seq, item)
    expected, prev_hash, prev_intact = first_seq, first_prev, True
    for seq in sorted(by_seq):
        item = by_seq[seq]
        if seq < first_seq:
            problems.append(Problem(seq, "reordered", f"entry {seq} is out of place"))
            continue
        if seq > expected:
            span = (
                f"entry {expected} was"
                if seq == expected + 1
                else f"entries {expected} to {seq - 1} were"
            )
            problems.append(Problem(expected, "removed", f"{span} removed"))
        elif item.intact and prev_intact and item.prev != prev_hash:
            # the link is only judged between two entries whose own hashes hold
            if seq == 1:
                message = "entry 1 does not start the chain: it was replaced"
                problems.append(Problem(seq, "edited", message))
            else:
                message = (
                    f"entry {seq - 1} was edited and its hash recomputed: entry {seq} still "
                    "points at the original"
                )
                problems.append(Problem(seq - 1, "edited", message))
        expected, prev_hash, prev_intact = seq + 1, item.entry.hash, item.intact
    return problems


def load_public_key(public_key_pem: bytes) -> ec.EllipticCurvePublicKey:
    try:
        key = serialization.load_pem_public_key(public_key_pem)
    except ValueError as exc:
        raise ExportError(f"the public key is not a PEM public key ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise ExportError("the public key is not an ECDSA P-256 key (the box's signing key is)")
    return key


def fingerprint(public_key_pem: bytes) -> str:
    """SHA-256 of the key's DER form: compare it with the one noted when the box was set up."""
    der = load_public_key(public_key_pem).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "sha256:" + hashlib.sha256(der).hexdigest()


def head_signed(key: ec.EllipticCurvePublicKey, head: Head) -> bool:
    """Whether ``head`` carries a valid signature by ``key``."""
    try:
        key.verify(head.signature, head_message(head.seq, head.hash), ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return False
    return True


def verify(entries: Sequence[Entry], heads: Sequence[Head], public_key_pem: bytes) -> Report:
    """Check ``entries`` (in stored order) and ``heads`` against the box's public key."""
    key = load_public_key(public_key_pem)
    problems = chain_problems(entries)
    stored: dict[int, str] = {}
    for item in _items(entries, 1, []):
        stored.setdefault(item.seq, item.entry.hash)
    last_seq = max(stored, default=0)
    signed_through = covered = previous = 0
    for head in sorted(heads, key=lambda h: h.seq):
        if not head_signed(key, head):
            problems.append(
                Problem(
                    head.seq,
                    "forged",
                    f"the signed head at entry {head.seq} has no valid signature by this key: "
                    "forged, damaged, or signed by another box",
                )
            )
            continue
        covered = max(covered, head.seq)
        if head.seq > last_seq:
            first = last_seq + 1
            problems.append(
                Problem(
                    first,
                    "truncated",
                    f"the log was cut: entries {first} to {head.seq} were removed from its end "
                    f"(a signed head vouches for entry {head.seq})",
                )
            )
        elif head.seq in stored and stored[head.seq] != head.hash:
            problems.append(
                Problem(
                    head.seq,
                    "rewritten",
                    f"entries {previous + 1} to {head.seq} were rewritten with recomputed hashes:"
                    f" entry {head.seq} differs from what the box signed",
                )
            )
        elif head.seq in stored:
            signed_through = max(signed_through, head.seq)
        previous = head.seq
    if last_seq > covered:
        problems.append(
            Problem(
                covered + 1,
                "unsigned",
                f"entries {covered + 1} to {last_seq} are not covered by a signed head: "
                "they cannot be trusted (they may have been added or changed without trace)",
            )
        )
    return Report(len(entries), signed_through, tuple(problems))


def load_export(path: Path) -> tuple[list[Entry], list[Head], bytes]:
    """(entries, heads, the box's public key as the export states it) from an export file."""
    try:
        document = json.loads(path.read_bytes())
        if not isinstance(document, dict) or document.get("format") != EXPORT_FORMAT:
            raise ExportError(f"{path} is not a callveil audit export ({EXPORT_FORMAT})")
        entries = [Entry(str(e["body"]), str(e["hash"])) for e in document["entries"]]
        heads = [
            Head(int(h["seq"]), str(h["hash"]), base64.b64decode(h["signature"], validate=True))
            for h in document["heads"]
        ]
        stated_key = str(document["public_key"]).encode("ascii")
    except OSError as exc:
        raise ExportError(f"cannot read {path}: {exc.strerror}") from None
    except (ValueError, TypeError, KeyError, binascii.Error) as exc:
        if isinstance(exc, ExportError):
            raise
        raise ExportError(f"{path} is damaged: {exc!r} is missing or malformed") from None
    return entries, heads, stated_key


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Verify a callveil audit export with only the box's public key."
    )
    parser.add_argument("export", help="the file written by `callveil audit export`")
    parser.add_argument(
        "--public-key",
        required=True,
        help="the box's signing key (PEM), obtained from the box beforehand, not from the export",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        entries, heads, stated_key = load_export(Path(args.export))
        trusted = Path(args.public_key).read_bytes()
        report = verify(entries, heads, trusted)
    except OSError as exc:
        print(f"audit.py: cannot read {args.public_key}: {exc.strerror}", file=sys.stderr)
        return 2
    except ExportError as exc:
        print(f"audit.py: {exc}", file=sys.stderr)
        return 2
    print(f"checked against the key {fingerprint(trusted)}")
    if stated_key.strip() != trusted.strip():
        print("note: the export names another signing key than the one given")
    print(report.render())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
