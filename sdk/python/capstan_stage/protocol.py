"""Stage protocol v1 (docs/stage-protocol.md): the version, the SDK's name and JSON lines."""
from __future__ import annotations

import json
import math
import numbers
from pathlib import PurePath
from typing import Any, Mapping

PROTOCOL_VERSION = 1
SDK_VERSION = "0.1.0"
SDK = f"capstan-stage/{SDK_VERSION}"
CONTEXT_ENV = "CAPSTAN_STAGE_CONTEXT"
MAX_LINE_BYTES = 1 << 20
MAX_DETAILS_BYTES = 64 << 10


def plain(value: Any) -> Any:
    """A JSON-safe copy: numpy scalars and arrays as Python values, paths as text, NaN/±inf as null."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        f = float(value)
        return f if math.isfinite(f) else None
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [plain(v) for v in value]
    if hasattr(value, "tolist"):  # numpy arrays and scalars, tensors converted by numpy
        return plain(value.tolist())
    return str(value)


def number(value: Any) -> float | int | None:
    """A metric value as a Python number: None when it is not finite; TypeError when not a number."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        raise TypeError(f"expected a number, got {value!r}")
    if hasattr(value, "item") and not isinstance(value, numbers.Real):
        value = value.item()  # a 0-d array or tensor
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real) or hasattr(value, "__float__"):
        f = float(value)
        return f if math.isfinite(f) else None
    raise TypeError(f"expected a number, got {type(value).__name__}")


def encode(message: Mapping[str, Any]) -> bytes:
    """One message as one UTF-8 JSON line; ValueError when it exceeds the protocol's 1 MiB a line."""
    line = json.dumps(plain(message), allow_nan=False, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"
    if len(line) > MAX_LINE_BYTES:
        raise ValueError(f"a {message.get('type')} message is {len(line)} bytes; the protocol allows {MAX_LINE_BYTES} a line")
    return line


def check_details(what: str, details: Mapping[str, Any]) -> dict:
    """Small objects only (checkpoint details, heartbeat details, output meta): at most 64 KiB of JSON."""
    clean = plain(dict(details))
    size = len(json.dumps(clean, ensure_ascii=False).encode("utf-8"))
    if size > MAX_DETAILS_BYTES:
        raise ValueError(f"{what} is {size} bytes of JSON; keep it under {MAX_DETAILS_BYTES} (store large data in a file)")
    return clean
