"""Which direction is the operator: from configured address ranges, never from identity."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from gateway.config import RolesConfig
from gateway.events import Role

_OPPOSITE = {Role.OPERATOR: Role.CUSTOMER, Role.CUSTOMER: Role.OPERATOR, Role.UNKNOWN: Role.UNKNOWN}


class RoleMap:
    def __init__(self, config: RolesConfig) -> None:
        self._operator = [ipaddress.ip_network(n, strict=False) for n in config.operator_networks]
        self._customer = [ipaddress.ip_network(n, strict=False) for n in config.customer_networks]
        self._caller_default = Role(config.caller_default)

    def classify(self, addresses: Iterable[bytes]) -> Role | None:
        """The role of a party seen at ``addresses`` (raw 4/16-byte IPs), if configured."""
        for raw in addresses:
            if len(raw) not in (4, 16):
                continue
            addr = ipaddress.ip_address(raw)
            if any(addr in net for net in self._operator):
                return Role.OPERATOR
            if any(addr in net for net in self._customer):
                return Role.CUSTOMER
        return None

    def assign(self, caller: Iterable[bytes], callee: Iterable[bytes]) -> tuple[Role, Role]:
        """Roles of (caller, callee); a party outside every range takes the other's opposite."""
        caller_role, callee_role = self.classify(caller), self.classify(callee)
        if caller_role is None and callee_role is None:
            caller_role = self._caller_default
        if caller_role is None:
            assert callee_role is not None
            caller_role = _OPPOSITE[callee_role]
        if callee_role is None:
            callee_role = _OPPOSITE[caller_role]
        return caller_role, callee_role
