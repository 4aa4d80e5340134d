"""SIP message parsing (RFC 3261): one UDP payload or one reassembled TCP message to a SipMessage.

Only what dialog tracking needs is interpreted (start line, Call-ID, CSeq, From, To, body);
every other header is kept as text. Anything that is not a well-formed SIP message raises
``SipError`` so the caller can count it and move on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

# RFC 3261 7.3.3 and later RFCs: compact header names.
_COMPACT = {
    "i": "call-id",
    "f": "from",
    "t": "to",
    "m": "contact",
    "l": "content-length",
    "c": "content-type",
    "v": "via",
    "k": "supported",
    "s": "subject",
    "e": "content-encoding",
    "o": "event",
    "u": "allow-events",
    "r": "refer-to",
    "b": "referred-by",
    "x": "session-expires",
    "y": "identity",
}
# Headers that identify the dialog: a second copy makes the message ambiguous, so it is rejected.
_SINGLE = frozenset({"call-id", "cseq", "from", "to"})
# Headers that frame the body: an identical repeat is tolerated (some peers send one), a
# conflicting one is rejected (two lengths are the classic request-smuggling trick).
_CONSISTENT = frozenset({"content-length", "content-type"})
# Header names as written -> canonical name: spares the checks for the few dozen names that real
# traffic uses. Bounded, so random names in hostile traffic cannot grow it.
_NAMES: dict[str, str] = {}
_MAX_NAMES = 1024
_TOKEN = re.compile(r"[A-Za-z0-9.!%*_+`'~-]+")
_MAX_CSEQ = 2**32 - 1


class SipError(ValueError):
    """The bytes are not a well-formed SIP message; ``reason`` says what is wrong."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(slots=True)
class SipMessage:
    method: str  # request method, or the CSeq method of a response
    status: int | None  # None for requests
    request_uri: str | None  # None for responses
    call_id: str
    from_tag: str
    to_tag: str
    from_user: str
    to_user: str
    cseq: int
    cseq_method: str
    headers: dict[str, list[str]]  # lowercase full names, values in order of appearance
    body: bytes
    content_type: str  # lowercase media type without parameters, "" when absent


def parse_sip(data: bytes) -> SipMessage:
    """Parse one SIP message; raise ``SipError`` when it is not well formed."""
    if not data or data.isspace():
        raise SipError("keep-alive or empty datagram")
    head, body_start = _split_head(data)
    lines = head.decode("utf-8", "replace").replace("\r\n", "\n").split("\n")
    start = lines[0]
    method, status, request_uri = _start_line(start)
    headers = _headers(lines)

    call_id = _one(headers, "call-id")
    if not call_id:
        raise SipError("empty Call-ID header")
    cseq, cseq_method = _cseq(_one(headers, "cseq"))
    if status is None:
        if cseq_method != method:
            raise SipError("CSeq method does not match the request method")
    else:
        method = cseq_method
    from_uri, from_tag = _address(_one(headers, "from"))
    to_uri, to_tag = _address(_one(headers, "to"))

    rest = len(data) - body_start
    length = headers.get("content-length")
    if length is None:
        # Over UDP the datagram ends the message, so the body is whatever follows the headers.
        body = data[body_start:]
    else:
        text = length[0]
        if not (text.isascii() and text.isdigit()) or len(text) > 10:
            raise SipError("Content-Length is not a number")
        size = int(text)
        if size > rest:
            raise SipError("Content-Length is larger than the message")
        body = data[body_start : body_start + size]
    content_type = headers.get("content-type")
    return SipMessage(
        method=method,
        status=status,
        request_uri=request_uri,
        call_id=call_id,
        from_tag=from_tag,
        to_tag=to_tag,
        from_user=uri_user(from_uri),
        to_user=uri_user(to_uri),
        cseq=cseq,
        cseq_method=cseq_method,
        headers=headers,
        body=body,
        content_type=content_type[0].partition(";")[0].strip().lower() if content_type else "",
    )


def uri_user(uri: str) -> str:
    """The user part of a ``sip:``/``sips:`` URI or the number of a ``tel:`` URI, else ""."""
    scheme, sep, rest = uri.partition(":")
    if not sep:
        return ""
    scheme = scheme.lower()
    if scheme in ("sip", "sips"):
        at = rest.find("@")
        if at < 0:
            return ""
        query = rest.find("?")
        if 0 <= query < at:
            return ""
        user = rest[:at].partition(":")[0]  # drop a password
    elif scheme == "tel":
        user = rest.partition(";")[0]
    else:
        return ""
    return unquote(user) if "%" in user else user


def sdp_payload(msg: SipMessage) -> bytes | None:
    """The SDP carried by a message: the whole body, or the SDP part of a multipart body."""
    body = msg.body
    if not body:
        return None
    ctype = msg.content_type
    if ctype == "application/sdp":
        return body
    if ctype.startswith("multipart/"):
        return _multipart_sdp(msg.headers["content-type"][0], body)
    # Some user agents omit Content-Type; an SDP body still announces itself.
    if not ctype and body.lstrip()[:2] == b"v=":
        return body
    return None


def _split_head(data: bytes) -> tuple[bytes, int]:
    """The header block and the offset of the body (CRLF or bare LF line endings)."""
    crlf = data.find(b"\r\n\r\n")
    lf = data.find(b"\n\n")
    if crlf >= 0 and (lf < 0 or crlf < lf):
        return data[:crlf], crlf + 4
    if lf >= 0:
        return data[:lf], lf + 2
    # No blank line: accept a message that at least ends its last header line (no body).
    if data.endswith(b"\n"):
        return data.rstrip(b"\r\n"), len(data)
    raise SipError("no blank line after the headers")


def _start_line(line: str) -> tuple[str, int | None, str | None]:
    if line[:4].upper() == "SIP/":
        parts = line.split(" ", 2)
        if len(parts) < 2 or parts[0].upper() != "SIP/2.0":
            raise SipError("bad status line")
        code = parts[1]
        if len(code) != 3 or not (code.isascii() and code.isdigit()) or code[0] not in "123456":
            raise SipError("bad status code")
        return "", int(code), None
    parts = line.split(" ")
    if len(parts) != 3 or parts[2].upper() != "SIP/2.0":
        raise SipError("bad request line")
    method, uri = parts[0], parts[1]
    if not _TOKEN.fullmatch(method):
        raise SipError("bad request method")
    if ":" not in uri:
        raise SipError("request URI has no scheme")
    return method, None, uri


def _headers(lines: list[str]) -> dict[str, list[str]]:
    headers: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in lines[1:]:
        if not line:
            continue
        if line[0] in " \t":
            # Obsolete line folding: the line continues the previous header's value.
            if current is None:
                raise SipError("folded line before any header")
            current[-1] = f"{current[-1]} {line.strip()}"
            continue
        raw_name, sep, value = line.partition(":")
        if not sep:
            raise SipError("header line without a colon")
        name = _NAMES.get(raw_name) or _header_name(raw_name)
        value = value.strip()
        current = headers.get(name)
        if current is None:
            current = headers[name] = [value]
        elif name in _SINGLE:
            raise SipError(f"duplicate {name} header")
        elif name in _CONSISTENT and current[0] != value:
            raise SipError(f"conflicting {name} headers")
        else:
            current.append(value)
    return headers


def _header_name(raw: str) -> str:
    """Canonical (lowercase, full) form of a header name as written; remembered when valid."""
    name = raw.rstrip().lower()
    if not _TOKEN.fullmatch(name):
        raise SipError("bad header name")
    name = _COMPACT.get(name, name)
    if len(_NAMES) < _MAX_NAMES:
        _NAMES[raw] = name
    return name


def _one(headers: dict[str, list[str]], name: str) -> str:
    values = headers.get(name)
    if values is None:
        raise SipError(f"missing {name} header")
    return values[0]


def _cseq(value: str) -> tuple[int, str]:
    parts = value.split()
    if len(parts) != 2:
        raise SipError("CSeq is not 'number method'")
    number, method = parts
    if not (number.isascii() and number.isdigit()) or len(number) > 10:
        raise SipError("CSeq number is not a 32-bit number")
    seq = int(number)
    if seq > _MAX_CSEQ:
        raise SipError("CSeq number is not a 32-bit number")
    if not _TOKEN.fullmatch(method):
        raise SipError("bad CSeq method")
    return seq, method


def _address(value: str) -> tuple[str, str]:
    """The URI and the tag of a From or To value (name-addr or bare addr-spec)."""
    rest = value
    if rest.startswith('"'):
        rest = rest[_closing_quote(rest) + 1 :]
    lt = rest.find("<")
    if lt >= 0:
        gt = rest.find(">", lt)
        if gt < 0:
            raise SipError("unterminated <URI> in From/To")
        uri = rest[lt + 1 : gt].strip()
        params = rest[gt + 1 :]
    else:
        # A bare addr-spec cannot carry URI parameters: the first ';' starts header parameters.
        uri, _, params = rest.partition(";")
        uri = uri.strip()
        params = ";" + params
    if ":" not in uri:
        raise SipError("From/To has no URI")
    for param in params.split(";"):
        key, _, val = param.partition("=")
        if key.strip().lower() == "tag":
            return uri, val.strip()  # the first tag wins if a broken peer repeats it
    return uri, ""


def _closing_quote(text: str) -> int:
    """Index of the quote closing the quoted string that starts ``text``."""
    i = 1
    while True:
        j = text.find('"', i)
        if j < 0:
            raise SipError("unterminated quoted display name")
        k = j - 1
        while k >= i and text[k] == "\\":
            k -= 1
        if (j - 1 - k) % 2 == 0:  # an even number of backslashes: the quote is not escaped
            return j
        i = j + 1


def _multipart_sdp(content_type: str, body: bytes) -> bytes | None:
    boundary = ""
    for param in content_type.split(";")[1:]:
        key, _, val = param.partition("=")
        if key.strip().lower() == "boundary":
            boundary = val.strip().strip('"')
    if not boundary:
        return None
    for part in body.split(b"--" + boundary.encode("utf-8", "replace"))[1:]:
        if part.startswith(b"--"):
            break  # close delimiter
        head, _, content = part.lstrip(b"\r\n").replace(b"\r\n", b"\n").partition(b"\n\n")
        for line in head.split(b"\n"):
            name, _, val = line.partition(b":")
            if name.strip().lower() in (b"content-type", b"c"):
                if val.split(b";")[0].strip().lower() == b"application/sdp":
                    return content.rstrip(b"\n")
                break
    return None
