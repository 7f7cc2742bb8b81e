"""JSON as the server writes it: compact, UTF-8, keys in insertion order (Go's encoding/json).

Every post is encoded here once for its `posted` event and copied for the caller, thousands of times a
second under the bench's firehose, so orjson does it (several times faster than the standard library,
and than `copy.deepcopy` for a copy). The standard library stays the fallback for what orjson refuses
and a client may still send: integers beyond 64 bits.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import orjson


def dumps(value: Any) -> str:
    """Compact JSON text of ``value``."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def copied(value: Any) -> Any:
    """A deep copy of JSON-shaped data (dicts, lists, strings, numbers)."""
    try:
        return orjson.loads(orjson.dumps(value))
    except TypeError:
        return copy.deepcopy(value)
