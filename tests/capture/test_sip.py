"""SIP parsing: crafted messages for each robustness rule, and every SIP-over-UDP message of the
shared captures checked field by field against tshark's own SIP dissector."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.capture.sip import SipError, parse_sip, sdp_payload, uri_user
from tests.capture.tshark_reference import TsharkSip, tshark_sip_captures


@pytest.fixture(scope="module")
def captures(tshark: str, pcaps_dir: Path) -> dict[str, list[TsharkSip]]:
    return tshark_sip_captures(tshark, pcaps_dir)


# -- crafted messages ---------------------------------------------------------------------------


def message(
    start: str, headers: list[tuple[str, str]], body: bytes = b"", eol: str = "\r\n"
) -> bytes:
    lines = [start] + [f"{name}: {value}" for name, value in headers]
    return (eol.join(lines) + eol + eol).encode() + body


def invite_headers(**overrides: str) -> list[tuple[str, str]]:
    headers = {
        "Via": "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-1",
        "From": '"Alice" <sip:alice@example.com>;tag=a1',
        "To": "<sip:bob@example.com>",
        "Call-ID": "c1@192.0.2.10",
        "CSeq": "1 INVITE",
        "Max-Forwards": "70",
    }
    headers.update(overrides)
    return [(name, value) for name, value in headers.items() if value]


def test_request_fields() -> None:
    msg = parse_sip(message("INVITE sip:200@example.com SIP/2.0", invite_headers()))
    assert msg.method == "INVITE"
    assert msg.status is None
    assert msg.request_uri == "sip:200@example.com"
    assert uri_user(msg.request_uri) == "200"
    assert (msg.call_id, msg.cseq, msg.cseq_method) == ("c1@192.0.2.10", 1, "INVITE")
    assert (msg.from_tag, msg.to_tag) == ("a1", "")
    assert (msg.from_user, msg.to_user) == ("alice", "bob")
    assert msg.headers["max-forwards"] == ["70"]
    assert msg.body == b""
    assert msg.content_type == ""


def test_response_takes_the_cseq_method() -> None:
    headers = invite_headers(To="<sip:bob@example.com>;tag=b1")
    msg = parse_sip(message("SIP/2.0 183 Session Progress", headers))
    assert (msg.method, msg.status, msg.request_uri, msg.to_tag) == ("INVITE", 183, None, "b1")
    assert parse_sip(message("SIP/2.0 200", headers)).status == 200  # empty reason phrase


def test_compact_names_and_case_insensitive_names() -> None:
    headers = [
        ("v", "SIP/2.0/UDP 192.0.2.10;branch=z9hG4bK-2"),
        ("f", "<sip:alice@example.com>;TAG=a2"),
        ("t", "<sip:bob@example.com>"),
        ("i", "c2"),
        ("cseq", "7 OPTIONS"),
        ("c", "application/SDP; charset=utf-8"),
        ("l", "3"),
        ("k", "100rel"),
        ("m", "<sip:alice@192.0.2.10>"),
        ("X-Custom", "one"),
        ("x-custom", "two"),
    ]
    msg = parse_sip(message("OPTIONS sip:bob@example.com SIP/2.0", headers, b"v=0"))
    assert msg.call_id == "c2"
    assert msg.from_tag == "a2"
    assert msg.content_type == "application/sdp"
    assert msg.headers["supported"] == ["100rel"]
    assert msg.headers["contact"] == ["<sip:alice@192.0.2.10>"]
    assert msg.headers["via"] == ["SIP/2.0/UDP 192.0.2.10;branch=z9hG4bK-2"]
    assert msg.headers["x-custom"] == ["one", "two"]
    assert msg.body == b"v=0"


def test_folded_header_lines_are_joined() -> None:
    raw = (
        b"INVITE sip:200@example.com SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bK-3\r\n"
        b"From: <sip:alice@example.com>\r\n"
        b"  ;tag=a3\r\n"
        b"To: <sip:bob@example.com>\r\n"
        b"Subject: first part\r\n"
        b"\tsecond part\r\n"
        b"Call-ID: c3\r\nCSeq: 1 INVITE\r\n\r\n"
    )
    msg = parse_sip(raw)
    assert msg.from_tag == "a3"
    assert msg.headers["subject"] == ["first part second part"]
    with pytest.raises(SipError, match="folded"):
        parse_sip(b"INVITE sip:a@example.com SIP/2.0\r\n continued\r\n\r\n")


def test_lf_only_line_endings() -> None:
    raw = message("INVITE sip:200@example.com SIP/2.0", invite_headers(), b"body", eol="\n")
    msg = parse_sip(raw)
    assert (msg.call_id, msg.from_tag, msg.body) == ("c1@192.0.2.10", "a1", b"body")


@pytest.mark.parametrize("name", ["Call-ID", "CSeq", "From", "To"])
def test_missing_dialog_header_is_rejected(name: str) -> None:
    raw = message("INVITE sip:200@example.com SIP/2.0", invite_headers(**{name: ""}))
    with pytest.raises(SipError, match=f"missing {name.lower()}"):
        parse_sip(raw)


@pytest.mark.parametrize(
    ("name", "value"),
    [("Call-ID", "other"), ("CSeq", "2 INVITE"), ("From", "<sip:x@example.com>"), ("t", "sip:y@h")],
)
def test_duplicated_dialog_header_is_rejected(name: str, value: str) -> None:
    raw = message("INVITE sip:200@example.com SIP/2.0", [*invite_headers(), (name, value)])
    with pytest.raises(SipError, match="duplicate"):
        parse_sip(raw)


def test_content_length() -> None:
    start = "INVITE sip:200@example.com SIP/2.0"
    # Without Content-Length (UDP), the body is the rest of the datagram.
    assert parse_sip(message(start, invite_headers(), b"v=0\r\nx")).body == b"v=0\r\nx"
    # A shorter length cuts trailing bytes (padding); a longer one is malformed.
    short = message(start, [*invite_headers(), ("Content-Length", "3")], b"v=0\r\n")
    assert parse_sip(short).body == b"v=0"
    with pytest.raises(SipError, match="larger"):
        parse_sip(message(start, [*invite_headers(), ("Content-Length", "99")], b"v=0"))
    for bad in ("-1", "9" * 5000):
        with pytest.raises(SipError, match="not a number"):
            parse_sip(message(start, [*invite_headers(), ("Content-Length", bad)], b"v=0"))
    # An identical repeat is tolerated, conflicting values are not.
    same = message(start, [*invite_headers(), ("l", "3"), ("Content-Length", "3")], b"v=0")
    assert parse_sip(same).body == b"v=0"
    with pytest.raises(SipError, match="conflicting"):
        parse_sip(message(start, [*invite_headers(), ("l", "3"), ("l", "2")], b"v=0"))


@pytest.mark.parametrize(
    ("value", "user", "tag"),
    [
        ("<sip:alice@example.com>;tag=t1", "alice", "t1"),
        ("sip:alice@example.com;tag=t2", "alice", "t2"),
        ("Alice Smith <sip:alice@example.com;transport=udp>;tag=t3", "alice", "t3"),
        ('"Smith, Alice <sales>; \\"VIP\\"" <sip:alice@example.com>;tag=t4', "alice", "t4"),
        ("<sips:alice:secret@example.com:5061>;tag=t5", "alice", "t5"),
        ("<tel:+15550100;phone-context=example.com>;tag=t6", "+15550100", "t6"),
        ("tel:+15550101;tag=t7", "+15550101", "t7"),
        ("<sip:%2B15550102@example.com;user=phone>", "+15550102", ""),
        ("<sip:example.com>;tag=t8", "", "t8"),
        ("<urn:service:sos>;tag=t9", "", "t9"),
        ("<sip:bob@example.com>;tag=first;tag=second", "bob", "first"),
    ],
)
def test_address_forms(value: str, user: str, tag: str) -> None:
    msg = parse_sip(message("INVITE sip:200@example.com SIP/2.0", invite_headers(From=value)))
    assert (msg.from_user, msg.from_tag) == (user, tag)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\r\n\r\n", "keep-alive"),
        (b"INVITE sip:a@example.com SIP/2.0\r\nCall-ID: x", "no blank line"),
        (b"INVITE sip:a@example.com SIP/3.0\r\n\r\n", "bad request line"),
        (b"INVITE  sip:a@example.com SIP/2.0\r\n\r\n", "bad request line"),
        (b"INV<TE sip:a@example.com SIP/2.0\r\n\r\n", "bad request method"),
        (b"INVITE nothing SIP/2.0\r\n\r\n", "no scheme"),
        (b"SIP/2.0 99 Odd\r\n\r\n", "bad status code"),
        (b"SIP/2.0 2x0 OK\r\n\r\n", "bad status code"),
        (b"SIP/1.0 200 OK\r\n\r\n", "bad status line"),
        (b"INVITE sip:a@example.com SIP/2.0\r\nno colon here\r\n\r\n", "without a colon"),
        (b"INVITE sip:a@example.com SIP/2.0\r\nBad Name: x\r\n\r\n", "bad header name"),
    ],
)
def test_malformed_messages(raw: bytes, reason: str) -> None:
    with pytest.raises(SipError, match=reason):
        parse_sip(raw)


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"CSeq": "1 BYE"}, "does not match"),
        ({"CSeq": "4294967296 INVITE"}, "32-bit"),
        ({"CSeq": "one INVITE"}, "32-bit"),
        ({"CSeq": "1"}, "number method"),
        ({"Call-ID": " "}, "empty Call-ID"),
        ({"From": '"unterminated <sip:a@example.com>'}, "unterminated quoted"),
        ({"To": "<sip:bob@example.com"}, "unterminated <URI>"),
        ({"To": "bob"}, "no URI"),
    ],
)
def test_malformed_dialog_headers(overrides: dict[str, str], reason: str) -> None:
    raw = message("INVITE sip:200@example.com SIP/2.0", invite_headers(**overrides))
    with pytest.raises(SipError, match=reason):
        parse_sip(raw)


def test_sdp_payload_forms() -> None:
    start = "INVITE sip:200@example.com SIP/2.0"
    sdp = b"v=0\r\nm=audio 4000 RTP/AVP 0\r\n"
    plain = parse_sip(message(start, [*invite_headers(), ("c", "application/sdp")], sdp))
    assert sdp_payload(plain) == sdp
    untyped = parse_sip(message(start, invite_headers(), sdp))
    assert sdp_payload(untyped) == sdp  # no Content-Type, but the body is SDP
    other = parse_sip(message(start, [*invite_headers(), ("c", "text/plain")], b"hello"))
    assert sdp_payload(other) is None
    multipart = (
        b"--sep\r\nContent-Type: application/isup;version=itu-t92+\r\n\r\n\x01\x02\r\n"
        b"--sep\r\nContent-Type: application/sdp\r\n\r\n" + sdp + b"\r\n--sep--\r\n"
    )
    ctype = ("Content-Type", 'multipart/mixed; boundary="sep"')
    mixed = parse_sip(message(start, [*invite_headers(), ctype], multipart))
    assert sdp_payload(mixed) == sdp.replace(b"\r\n", b"\n").rstrip(b"\n")
    unbounded = ("Content-Type", "multipart/mixed")
    assert sdp_payload(parse_sip(message(start, [*invite_headers(), unbounded], multipart))) is None


# -- the shared captures, against tshark ----------------------------------------------------------


def test_parse_matches_tshark_on_every_capture(captures: dict[str, list[TsharkSip]]) -> None:
    """Every SIP-over-UDP message tshark dissects parses, with the same dialog fields."""
    checked = 0
    for name, messages in captures.items():
        for ref in messages:
            if name.startswith("c07-sip"):
                continue  # PROTOS fuzz cases: checked for clean rejection below
            where = f"{name} at {ref.dg.ts}"
            try:
                msg = parse_sip(ref.dg.payload)
            except SipError as exc:
                pytest.fail(f"{where}: {exc.reason}")
            expected = {
                "sip.Call-ID": msg.call_id,
                "sip.Status-Code": str(msg.status) if msg.status else "",
                "sip.CSeq.seq": str(msg.cseq),
                "sip.CSeq.method": msg.cseq_method,
                "sip.from.tag": msg.from_tag,
                "sip.to.tag": msg.to_tag,
            }
            if msg.status is None:
                expected["sip.Method"] = msg.method
            for field_name, mine in expected.items():
                theirs = ref.first(field_name)
                if "\\" in theirs:
                    continue  # tshark escapes control characters (a corrupted tag in one file)
                assert mine == theirs, f"{where}: {field_name} {mine!r} != {theirs!r}"
            users = [
                ("sip.from.user", msg.from_user),
                ("sip.to.user", msg.to_user),
                ("sip.r-uri.user", uri_user(msg.request_uri or "")),
            ]
            for field_name, mine in users:
                theirs = ref.first(field_name)
                # tshark shows no user part when it is a single character (Asterisk's "s").
                if theirs or len(mine) > 1:
                    assert mine == theirs, f"{where}: {field_name} {mine!r} != {theirs!r}"
            checked += 1
    assert checked > 9000  # the sipp load run alone has 8,989 messages


def test_protos_fuzz_cases_are_rejected_cleanly(captures: dict[str, list[TsharkSip]]) -> None:
    """The PROTOS c07 cases: overlong method names whose CSeq says INVITE are malformed."""
    cases = next(msgs for name, msgs in captures.items() if name.startswith("c07-sip"))
    outcomes = []
    for ref in cases:
        try:
            outcomes.append(parse_sip(ref.dg.payload).method)
        except SipError as exc:
            outcomes.append(exc.reason)
    tshark_methods = [ref.first("sip.Method") for ref in cases]
    for method, outcome in zip(tshark_methods, outcomes, strict=True):
        assert outcome == (
            "INVITE" if method == "INVITE" else "CSeq method does not match the request method"
        )
