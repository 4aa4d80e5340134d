"""A scanner for published payloads: anything that could identify a call or a person.

``scan(payload)`` walks a JSON payload (keys and values) and reports what looks like a phone
number, a SIP/tel URI, a user@host, an IP address, a Call-ID-like token, a clock time or
a date-time, a date finer than the payload's own bucket, or an integer as long as a phone
number or an epoch time. ``known`` adds literal identities taken from the input (numbers,
extensions, Call-IDs, addresses pulled out of a capture), reported wherever a string holds
them. The ``signature`` and ``key_fingerprint`` members are exempt only while they have
exactly the shape of a signature and a key digest, so they cannot smuggle anything.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from typing import Any

_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
_WEEK = re.compile(r"\d{4}-W\d{2}")
_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("SIP or tel URI", re.compile(r"\b(?:sips?|tel):", re.IGNORECASE)),
    ("user@host", re.compile(r"[^\s@]+@[^\s@]+")),
    ("IPv4 address", re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b")),
    ("IPv6 address", re.compile(r"(?<![\w:])[0-9a-f]{0,4}(?::[0-9a-f]{0,4}){2,7}(?![\w:])", re.I)),
    ("clock time", re.compile(r"(?<!\d)\d{1,2}:\d{2}(?::\d{2})?(?!\d)")),
    ("date-time", re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}")),
    ("date", re.compile(r"(?<!\d)\d{4}-\d{2}-\d{2}(?!\d)")),
    ("date", re.compile(r"(?<!\d)\d{1,2}/\d{1,2}/\d{2,4}(?!\d)")),
    # Call-IDs, tags, branches, UUIDs: long tokens mixing letters and digits, or long hex
    ("Call-ID-like token", re.compile(r"\b(?=[\w.-]*\d)(?=[\w.-]*[a-zA-Z])[\w.-]{12,}\b")),
    ("Call-ID-like token", re.compile(r"\b[0-9a-f]{16,}\b", re.IGNORECASE)),
)
# six digits or more, maybe with +, spaces, dots, dashes, brackets between them
_DIGIT_RUN = re.compile(r"\+?\(?\d[\d\s().-]{4,}\d")
_MIN_PHONE_DIGITS = 6
_EXEMPT = {
    "signature": re.compile(r"[A-Za-z0-9+/]{86,100}={0,2}"),
    "key_fingerprint": re.compile(r"[0-9a-f]{64}"),
}


def _walk(value: Any, path: str) -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield f"{path}.{key}(key)", key
            yield from _walk(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _walk(item, f"{path}[{i}]")
    else:
        yield path, value


def _bucket_label(message: Any) -> str | None:
    if isinstance(message, dict) and isinstance(message.get("body"), dict):
        period = message["body"].get("period")
        return period if isinstance(period, str) else None
    return None


def _scan_text(text: str, bucket: str | None, known: list[str]) -> Iterator[str]:
    if bucket is not None and text == bucket and (_DAY.fullmatch(text) or _WEEK.fullmatch(text)):
        return  # the payload's own period label, the coarse time it is allowed
    for what, pattern in _PATTERNS:
        for match in pattern.finditer(text):
            yield f"{what} {match.group()!r}"
    for match in _DIGIT_RUN.finditer(text):
        if sum(ch.isdigit() for ch in match.group()) >= _MIN_PHONE_DIGITS:
            yield f"phone-number-like digits {match.group()!r}"
    for literal in known:
        if literal in text:
            yield f"identity from the input {literal!r}"


def scan(payload: bytes | str | dict[str, Any], *, known: Iterable[str] = ()) -> list[str]:
    """Findings as "where: what"; an empty list means nothing identifying was found."""
    if isinstance(payload, bytes):
        payload = payload.decode("utf-8", errors="replace")
    if isinstance(payload, str):
        try:
            payload = json.loads(payload)
        except ValueError:
            return [f"(text): {f}" for f in _scan_text(payload, None, list(known))]
    bucket = _bucket_label(payload)
    literals = [k for k in known if k]
    findings = []
    for path, value in _walk(payload, "$"):
        leaf = path.rsplit(".", 1)[-1]
        if leaf in _EXEMPT and isinstance(value, str):
            if not _EXEMPT[leaf].fullmatch(value):
                findings.append(f"{path}: {leaf} does not have the shape of one: {value!r}")
            continue
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, int | float):
            digits = len(str(abs(int(value))))
            if digits >= _MIN_PHONE_DIGITS:
                findings.append(f"{path}: number as long as a phone number or a time {value!r}")
            continue
        findings.extend(f"{path}: {f}" for f in _scan_text(str(value), bucket, literals))
    return findings
