import socket

from gateway.capture.roles import RoleMap
from gateway.config import parse_config
from gateway.events import Role


def ip(text: str) -> bytes:
    family = socket.AF_INET6 if ":" in text else socket.AF_INET
    return socket.inet_pton(family, text)


def roles(**kw) -> RoleMap:
    return RoleMap(parse_config({"roles": kw}).roles)


def test_operator_side_from_ranges_either_direction() -> None:
    rm = roles(operator_networks=["10.20.0.0/16", "fd00:20::/32"])
    assert rm.assign([ip("198.51.100.7")], [ip("10.20.3.4")]) == (Role.CUSTOMER, Role.OPERATOR)
    assert rm.assign([ip("10.20.3.4")], [ip("198.51.100.7")]) == (Role.OPERATOR, Role.CUSTOMER)
    assert rm.assign([ip("2001:db8::1")], [ip("fd00:20::9")]) == (Role.CUSTOMER, Role.OPERATOR)


def test_customer_ranges_and_defaults() -> None:
    rm = roles(customer_networks=["192.0.2.0/24"])
    assert rm.assign([ip("10.0.0.1")], [ip("192.0.2.9")]) == (Role.OPERATOR, Role.CUSTOMER)
    assert rm.assign([ip("10.0.0.1")], [ip("10.0.0.2")]) == (Role.CUSTOMER, Role.OPERATOR)
    unknown = roles(caller_default="unknown")
    assert unknown.assign([ip("10.0.0.1")], [ip("10.0.0.2")]) == (Role.UNKNOWN, Role.UNKNOWN)


def test_first_matching_address_of_a_party_decides() -> None:
    rm = roles(operator_networks=["10.20.0.0/16"])
    # signalling from a public address, media from the operator range
    assert rm.classify([ip("203.0.113.5"), ip("10.20.0.8")]) is Role.OPERATOR
    assert rm.classify([b"bad"]) is None
