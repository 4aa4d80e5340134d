"""The queue of a call: a configured SIP header of its INVITE, matched against an allow-list.

Only a configured label ever leaves capture: a header value off the list gives no queue, so
free text from the wire (a name, a number, an agent's extension) cannot reach the aggregates.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from gateway.config import QueuesConfig


def queue_of(headers: Mapping[str, Sequence[str]], queues: QueuesConfig) -> str | None:
    """The configured label that ``headers`` (lowercase names) name, or None.

    Values are compared ignoring case and surrounding spaces; values off the list are
    ignored. A header may be repeated or hold a comma-separated list (RFC 3261 allows either):
    when its values name two different listed queues, the call belongs to neither (None),
    since a call is counted in one bucket only.
    """
    if not queues.header:
        return None
    allowed = {label.lower(): label for label in queues.labels}
    named = {
        allowed[value]
        for line in headers.get(queues.header.lower(), ())
        for value in (part.strip().lower() for part in line.split(","))
        if value in allowed
    }
    return named.pop() if len(named) == 1 else None
