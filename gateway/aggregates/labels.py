"""Labels that may appear in published data: sites, queues, boxes, topics."""

from __future__ import annotations

import re

LABEL = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")


def check_label(value: object, what: str) -> str:
    """``value`` if it is 1-63 lowercase letters, digits, '-' or '_'; ValueError otherwise.

    The same shape serves as an MQTT topic segment: no '/', '+', '#' or anything else a
    topic or a file name would read specially.
    """
    if not isinstance(value, str) or not LABEL.fullmatch(value):
        raise ValueError(
            f"{what} {value!r} must be 1-63 lowercase letters, digits, '-' or '_', starting "
            "with a letter or digit"
        )
    return value
