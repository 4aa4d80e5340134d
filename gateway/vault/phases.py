"""The life of a record: collected, processed, analysed, kept, deleted; forward only."""

from __future__ import annotations

from gateway.vault.records import Partition, VaultError

COLLECTED = "collected"
PROCESSED = "processed"
ANALYSED = "analysed"
KEPT = "kept"
DELETED = "deleted"
PHASES = (COLLECTED, PROCESSED, ANALYSED, KEPT, DELETED)

# Contract recordings are kept whole, so they skip processing and analysis. Any live record
# may be deleted early (erasure request); nothing ever moves back.
_NEXT: dict[str, dict[str, frozenset[str]]] = {
    "analytics": {
        COLLECTED: frozenset({PROCESSED, DELETED}),
        PROCESSED: frozenset({ANALYSED, DELETED}),
        ANALYSED: frozenset({KEPT, DELETED}),
        KEPT: frozenset({DELETED}),
        DELETED: frozenset(),
    },
    "contract": {
        COLLECTED: frozenset({KEPT, DELETED}),
        KEPT: frozenset({DELETED}),
        DELETED: frozenset(),
    },
}


def check_transition(partition: Partition, current: str, new: str) -> None:
    """Return if a ``partition`` record may move from ``current`` to ``new``, else VaultError."""
    if new not in PHASES:
        raise VaultError(f"unknown phase {new!r}; use one of {', '.join(PHASES)}")
    allowed = _NEXT[partition].get(current)
    if allowed is None:
        raise VaultError(
            f"the record is in phase {current!r}, which {partition} records never have: "
            "the vault database was edited; restore it from backup"
        )
    if new not in allowed:
        options = ", ".join(sorted(allowed)) or "none"
        raise VaultError(
            f"a {partition} record cannot move from {current!r} to {new!r} "
            f"(allowed from {current!r}: {options})"
        )
