"""Validate payloads against the JSON Schemas published in ``schemas/``."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import pytest

jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is not installed (dev extra)")

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
FILES = {
    "callveil/aggregates/v1": "aggregates-v1.schema.json",
    "callveil/status/v1": "status-v1.schema.json",
}


@cache
def _validator(schema_id: str) -> object:
    schema = json.loads((SCHEMAS / FILES[schema_id]).read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def validate(payload: bytes) -> dict:
    """The decoded payload; fails the test if it does not match its schema."""
    message = json.loads(payload)
    _validator(message["schema"]).validate(message)
    return message
