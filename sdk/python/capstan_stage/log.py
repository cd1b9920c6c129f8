"""``ctx.log``: the stage's logger in the worker (``log`` messages)."""
from __future__ import annotations

from typing import Any, Callable

MAX_MESSAGE_CHARS = 64 << 10


class StageLogger:
    def __init__(self, send: Callable[[dict], None]):
        self._send = send

    def _log(self, level: str, message: Any, fields: dict) -> None:
        text = str(message)
        if len(text) > MAX_MESSAGE_CHARS:
            text = text[:MAX_MESSAGE_CHARS] + f"… ({len(text) - MAX_MESSAGE_CHARS} more characters)"
        msg = {"type": "log", "level": level, "message": text}
        if fields:
            msg["fields"] = fields
        self._send(msg)

    def debug(self, message: Any, **fields: Any) -> None:
        self._log("debug", message, fields)

    def info(self, message: Any, **fields: Any) -> None:
        self._log("info", message, fields)

    def warn(self, message: Any, **fields: Any) -> None:
        self._log("warn", message, fields)

    warning = warn

    def error(self, message: Any, **fields: Any) -> None:
        self._log("error", message, fields)
