"""What one check found: a status, the check's name, what it saw and how to fix it."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Status(StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "FAIL"


@dataclass(frozen=True, slots=True)
class Finding:
    status: Status
    check: str
    detail: str
    fix: str = ""


def ok(check: str, detail: str) -> Finding:
    return Finding(Status.OK, check, detail)


def warn(check: str, detail: str, fix: str) -> Finding:
    return Finding(Status.WARN, check, detail, fix)


def fail(check: str, detail: str, fix: str) -> Finding:
    return Finding(Status.FAIL, check, detail, fix)
