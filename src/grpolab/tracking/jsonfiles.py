"""Strict JSON files written atomically, and the UTC timestamps in them: the storage layer of the run directory.

Every JSON file grpolab writes (``summary.json``, ``manifest.json``, a checkpoint's markers) is strict JSON (no
NaN/Infinity: non-finite numbers are written as ``null``) and replaced atomically (tmp + rename), so a reader sees the
old file or the new one, never a partial one.
"""

from __future__ import annotations

import json
import math
import os
import secrets
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any


def utc_now_iso() -> str:
    """Current UTC time as ``2024-05-01T12:00:00.123456Z``."""
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def to_json_safe(value: Any) -> Any:
    """Recursively turn ``value`` into strict-JSON data: non-finite floats -> None, unknown objects -> str.

    >>> to_json_safe({"a": float("nan"), "b": (1, 2.5)})
    {'a': None, 'b': [1, 2.5]}
    """
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(key): to_json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_json_safe(item) for item in value]
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars, without importing either
        try:
            return to_json_safe(value.item())
        except (TypeError, ValueError):
            pass
    return str(value)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as JSON so that readers see either the old or the new file, never a partial one.

    The file gets the permissions of any other new file (0644 under the usual umask 022): the temporary file is
    created with mode 0666 and the umask, not with ``tempfile.mkstemp``'s private 0600.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(to_json_safe(data), indent=2, allow_nan=False) + "\n"
    tmp_path = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``, or None when it is missing or unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
