"""Where messages go: the worker's pipe (under Capstan) or readable lines on stderr (by hand)."""
from __future__ import annotations

import errno
import os
import select
import sys
import threading
from typing import Any, TextIO

from .protocol import encode

# Exit status when the worker is gone (as if SIGPIPE had killed the process: 128 + 13).
EXIT_WORKER_GONE = 141


class PipeChannel:
    """JSON lines on the worker's pipe, one write per line under a lock, never buffered.

    When the worker closes its end (it died), the process exits at once instead of training on
    beside the retry: at the next write (EPIPE), or sooner through a thread that waits for the
    pipe's error condition.
    """

    def __init__(self, fd: int):
        try:
            os.fstat(fd)
        except OSError:
            raise RuntimeError(
                f"capstan_stage: the context says messages go to file descriptor {fd}, but it is not open; "
                "run the script under the Capstan worker, or unset CAPSTAN_STAGE_CONTEXT to run it by hand"
            ) from None
        self._fd = fd
        self._lock = threading.Lock()
        threading.Thread(target=self._watch, name="capstan-stage-pipe-watch", daemon=True).start()

    def send(self, message: dict) -> None:
        data = memoryview(encode(message))
        with self._lock:
            try:
                while data:
                    data = data[os.write(self._fd, data):]
            except OSError as e:
                if isinstance(e, BrokenPipeError) or e.errno == errno.EPIPE:
                    _worker_gone(self._fd)
                raise

    def _watch(self) -> None:
        # A pipe's write end reports POLLERR once no reader is left; a socket reports POLLHUP.
        poller = select.poll()
        poller.register(self._fd, select.POLLERR | select.POLLHUP)
        while True:
            try:
                events = poller.poll()
            except InterruptedError:
                continue
            for _, ev in events:
                if ev & select.POLLNVAL:
                    return  # the process closed the descriptor itself
                if ev & (select.POLLERR | select.POLLHUP):
                    _worker_gone(self._fd)


def _worker_gone(fd: int) -> None:
    try:
        sys.stderr.write(f"capstan_stage: the worker closed the message pipe (fd {fd}); stopping\n")
        sys.stderr.flush()
    finally:
        os._exit(EXIT_WORKER_GONE)


class ConsoleChannel:
    """Outside Capstan: each message as a readable line on stderr, e.g. ``epoch 3/10 trainLoss=0.12``."""

    def __init__(self, stream: TextIO | None = None):
        self._stream = stream
        self._lock = threading.Lock()

    def send(self, message: dict) -> None:
        encode(message)  # the same checks as under Capstan, so a script that works by hand works there
        line = describe(message)
        if line is None:
            return
        stream = self._stream or sys.stderr
        with self._lock:
            stream.write(f"[capstan] {line}\n")
            stream.flush()


def describe(m: dict) -> str | None:
    kind = m.get("type")
    if kind == "open":
        return None
    if kind == "log":
        return f"{m['level']:<5} {m['message']}{_pairs(m.get('fields'), lead=' ')}"
    if kind == "epoch":
        total = f"/{m['epochs']}" if m.get("epochs") is not None else ""
        return f"epoch {m['epoch']}{total}{_pairs(m.get('metrics'), lead=' ')}"
    if kind == "checkpoint":
        return f"checkpoint {m['path']}{_pairs(m.get('details'), lead=' ')}"
    if kind == "heartbeat":
        return f"heartbeat{_pairs(m.get('details'), lead=' ')}"
    if kind == "metrics":
        return f"metrics{_pairs(m.get('metrics'), lead=' ')}"
    if kind == "usage":
        return f"usage gpuSeconds={_fmt(m['gpuSeconds'])}"
    if kind == "output":
        return f"output {m['kind']}{_pairs(m.get('meta'), lead=' ')}"
    if kind == "error":
        e = m["error"]
        return f"error {e['type']}: {e['message']} (retryable={e['retryable']}, badInput={e['badInput']})"
    return f"{kind} {m}"


def _pairs(fields: Any, lead: str = "") -> str:
    if not fields:
        return ""
    return lead + " ".join(f"{k}={_fmt(v)}" for k, v in fields.items())


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)
