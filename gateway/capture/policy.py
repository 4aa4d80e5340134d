"""The decision taken once per call at set-up: analyse (sampled), keep as contract, or drop."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from gateway.config import ContractConfig, PrivacyConfig, QueuesConfig
from gateway.events import Policy
from gateway.seal.sampling_key import SamplingKey


class PolicyDecider:
    def __init__(
        self,
        privacy: PrivacyConfig,
        contract: ContractConfig,
        queues: QueuesConfig,
        key: SamplingKey,
    ) -> None:
        self._rate = privacy.sample_rate
        self._key = key
        self._queue_header = queues.header.lower()
        self._rules = [
            (rule.kind, rule.header.lower(), re.compile(rule.pattern)) for rule in contract.rules
        ]

    def use_key(self, key: SamplingKey) -> None:
        """Sample calls set up from now on under ``key`` (after a rotation)."""
        self._key = key

    def decide(
        self,
        call_id: str,
        called_users: Sequence[str],
        headers: Mapping[str, Sequence[str]],
    ) -> Policy:
        """``called_users``: the request-URI and To user parts; ``headers``: lowercase names."""
        if self._is_contract(called_users, headers):
            return Policy.CONTRACT
        # the Call-ID is the one identity shared by every fork and re-INVITE of a call
        if self._key.fraction(call_id.encode("utf-8", "surrogateescape")) < self._rate:
            return Policy.ANALYTICS
        return Policy.DROP

    def _is_contract(
        self, called_users: Sequence[str], headers: Mapping[str, Sequence[str]]
    ) -> bool:
        for kind, header, pattern in self._rules:
            if kind == "header":
                values: Sequence[str] = headers.get(header, ())
            elif kind == "queue":
                values = headers.get(self._queue_header, ())
            else:
                values = called_users
            if any(pattern.search(value) for value in values):
                return True
        return False
