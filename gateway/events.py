"""The events that leave ``capture/``: the only shape in which a call reaches later stages.

Identity stops at the capture boundary. None of these types has a field that can hold a SIP
URI, a number, a Call-ID, a tag, an address or a wall-clock time: references are random
tokens validated on construction, a call's queue is one of the configured labels (never a
value from the wire), every other field is an enum, a count or audio samples.
Positions are relative to the start of the kept audio of one direction, in samples.
"""

from __future__ import annotations

import enum
import re
import secrets
from dataclasses import dataclass, field

import numpy as np

from gateway.aggregates.labels import check_label

_REF_PATTERN = re.compile(r"[0-9a-f]{32}")


class Policy(enum.Enum):
    """What happens to a call, decided once at call set-up."""

    ANALYTICS = "analytics"  # sampled: trimmed, decoded, anonymized, analysed
    CONTRACT = "contract"  # legal evidence: kept whole, never trimmed or anonymized
    DROP = "drop"  # not sampled: media is never decoded


class Role(enum.Enum):
    """Who speaks in one direction of a call, from configured address ranges only."""

    OPERATOR = "operator"
    CUSTOMER = "customer"
    UNKNOWN = "unknown"


class EndReason(enum.Enum):
    BYE = "bye"  # normal hang-up
    CANCELLED = "cancelled"  # caller gave up before answer
    REJECTED = "rejected"  # final failure response
    TIMEOUT = "timeout"  # no signalling or media for too long
    CAPTURE_END = "capture_end"  # the capture stopped while the call was up
    LINE_SILENT = "line_silent"  # sound-card tap: both channels fell silent


class Undecodable(enum.Enum):
    """Why a call's audio could not be decoded (counted, never fatal)."""

    CODEC = "codec"  # negotiated codec not supported (G.729, Opus, GSM, ...)
    SRTP = "srtp"  # media is encrypted
    NO_MEDIA = "no_media"  # answered, but no RTP was seen for it


@dataclass(frozen=True, slots=True)
class CallRef:
    """An opaque random reference: 128 random bits, unrelated to any identity."""

    token: str

    def __post_init__(self) -> None:
        if not _REF_PATTERN.fullmatch(self.token):
            raise ValueError("a call reference is 32 lowercase hex digits of randomness")

    @classmethod
    def new(cls) -> CallRef:
        return cls(secrets.token_hex(16))

    def __str__(self) -> str:
        return self.token[:8]


@dataclass(frozen=True, slots=True)
class CallStarted:
    ref: CallRef
    policy: Policy
    roles: frozenset[Role]
    queue: str | None = None  # a label of queues.labels; None: the call counts for the site

    def __post_init__(self) -> None:
        if self.queue is not None:
            check_label(self.queue, "queue")


@dataclass(frozen=True, slots=True)
class AudioChunk:
    """Decoded mono PCM of one direction: int16 samples at ``sample_rate``."""

    ref: CallRef
    role: Role
    pcm: np.ndarray = field(repr=False)
    sample_rate: int
    offset: int  # samples since the first kept sample of this direction

    def __post_init__(self) -> None:
        if self.pcm.dtype != np.int16 or self.pcm.ndim != 1:
            raise ValueError("audio chunks carry one-dimensional int16 PCM")


@dataclass(frozen=True, slots=True)
class DirectionStats:
    """Media quality of one direction, as counts: no times, no addresses."""

    role: Role = Role.UNKNOWN
    packets: int = 0
    lost: int = 0
    duplicates: int = 0
    concealed_samples: int = 0
    decoded_samples: int = 0
    trimmed_samples: int = 0
    telephone_events: int = 0

    def __add__(self, other: DirectionStats) -> DirectionStats:
        """Counts of two stretches of one direction (its role is kept)."""
        return DirectionStats(
            self.role,
            *(getattr(self, f) + getattr(other, f) for f in _COUNT_FIELDS),
        )


_COUNT_FIELDS = ("packets", "lost", "duplicates", "concealed_samples", "decoded_samples",
                 "trimmed_samples", "telephone_events")  # fmt: skip


@dataclass(frozen=True, slots=True)
class CallEnded:
    ref: CallRef
    reason: EndReason
    undecodable: Undecodable | None = None
    directions: tuple[DirectionStats, ...] = ()


CaptureEvent = CallStarted | AudioChunk | CallEnded
