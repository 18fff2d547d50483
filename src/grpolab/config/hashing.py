"""Stable hashes of config parts, used as cache keys (warm-start weights, prepared datasets)."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def config_hash(*parts: Any) -> str:
    """A short hash of JSON-serialisable parts; dict key order does not matter.

    >>> config_hash({"a": 1, "b": 2}) == config_hash({"b": 2, "a": 1})
    True
    """
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
