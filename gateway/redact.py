"""A structlog processor that strips personal data from every log event.

The capture stage never logs identities on purpose; this processor is the second line of
defence for the day somebody does (an exception message quoting a SIP header, say). It
redacts by field name (anything called like a number, URI, address or Call-ID) and by value
shape (SIP/tel URIs, user@host, IP addresses, phone-number-like digit runs, long random
tokens such as Call-IDs), recursively through dicts, lists and exception text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, MutableMapping
from typing import Any

# field names (split on _ - . and spaces) whose values are identities whatever they look like
_SENSITIVE_WORDS = frozenset(
    {
        "uri",
        "number",
        "msisdn",
        "caller",
        "callee",
        "from",
        "to",
        "user",
        "contact",
        "addr",
        "address",
        "ip",
        "src",
        "dst",
        "host",
        "tag",
        "extension",
        "ext",
        "display",
        "phone",
        "sip",
        "ssrc",
        "callid",
        "cid",
    }
)
# keys that are ours and safe even though they match the pattern above
_SAFE_KEYS = frozenset({"event", "level", "timestamp", "logger", "topic", "interface", "site"})

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\b(?:sips?|tel):[^\s;,<>\"']+", re.IGNORECASE), "<uri>"),
    (re.compile(r"\b(tag|branch|epid|sip\.instance)=[^\s;,<>\"']+", re.IGNORECASE), r"\1=<id>"),
    (re.compile(r"[\w.!~*'()&=+$%-]+@[\w.-]+(?::\d+)?"), "<user@host>"),
    # IPv6: a '::' form or the full eight groups (so clock times such as 12:30:45 survive)
    (
        re.compile(
            r"(?<![\w:])(?:(?:[0-9a-f]{1,4}:){7}[0-9a-f]{1,4}|"
            r"(?:[0-9a-f]{1,4}:){0,6}[0-9a-f]{0,4}::(?:[0-9a-f]{1,4}:){0,6}[0-9a-f]{0,4})(?![\w:])",
            re.IGNORECASE,
        ),
        "<ip>",
    ),
    (re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b"), "<ip>"),
    # phone numbers: six or more digits, optionally with +, spaces, dots, dashes, brackets
    (re.compile(r"(?<![\w.])\+?\(?\d(?:[\d\s().-]{4,}\d)(?![\w.])"), "<number>"),
    # long tokens mixing letters and digits: Call-IDs, tags, branch ids
    (
        re.compile(r"\b(?=[\w.-]*\d)(?=[\w.-]*[a-zA-Z])[\w.-]{8,}\b"),
        "<token>",
    ),
)


def redact_text(text: str) -> str:
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _redact_value(key: str | None, value: Any) -> Any:
    if key == "timestamp":  # ours: the log record's own time, at one-second resolution
        return value
    if key is not None and key not in _SAFE_KEYS and _is_sensitive_key(key):
        if isinstance(value, bool | int | float) and not _looks_like_identity_number(value):
            return value
        return "<redacted>"
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, bytes | bytearray):
        return "<bytes>"
    if isinstance(value, Mapping):
        return {k: _redact_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_redact_value(None, v) for v in value]
    if isinstance(value, bool | int | float) or value is None:
        return value
    return redact_text(str(value))


def _is_sensitive_key(key: str) -> bool:
    words = re.split(r"[_\-.\s]+", key.lower())
    return "callid" in "".join(words) or any(word in _SENSITIVE_WORDS for word in words)


def _looks_like_identity_number(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 100_000


def redact_processor(
    _logger: object, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: run after format_exc_info so tracebacks are redacted too."""
    for key in list(event_dict):
        event_dict[key] = _redact_value(key, event_dict[key])
    return event_dict
