"""``open_stage()``: the stage's context (params, inputs, folders) and what it reports through it."""
from __future__ import annotations

import json
import numbers
import os
import shutil
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .channel import ConsoleChannel, PipeChannel
from .errors import StageError
from .log import StageLogger
from .protocol import CONTEXT_ENV, PROTOCOL_VERSION, SDK, check_details, number
from .tracing import start_stage_span

MAX_TRACEBACK_CHARS = 8 << 10
MAX_ERROR_MESSAGE_CHARS = 16 << 10
_warned_local = False  # outside Capstan, the warning is given once a process


@dataclass(frozen=True)
class Checkpoint:
    """The last checkpoint the previous attempt reported: a local folder (or file) and its details."""

    path: Path
    details: dict = field(default_factory=dict)


class UnsupportedProtocol(RuntimeError):
    """The worker speaks a stage protocol version this SDK does not."""


def open_stage(params: Mapping[str, Any] | None = None, inputs: Mapping[str, Any] | None = None, local_dir: str | os.PathLike = "capstan-local") -> "StageContext":
    """Opens the stage: ``with open_stage() as ctx: ...``.

    Under Capstan everything comes from the context file named by CAPSTAN_STAGE_CONTEXT. Run by
    hand (no context), ``params`` and ``inputs`` (kind -> folder) stand in for it, outputs and
    checkpoints go under ``local_dir``, and messages are printed on stderr.
    """
    path = os.environ.get(CONTEXT_ENV)
    if path:
        return StageContext._from_context_file(Path(path))
    return StageContext._local(params or {}, inputs or {}, Path(local_dir))


class StageContext:
    """What a stage reads (params, inputs, folders) and how it reports (log, epoch, checkpoint, …)."""

    def __init__(self, *, channel: Any, in_capstan: bool, context: dict, outputs: dict[str, Path], checkpoint_dir: Path, last_checkpoint: Checkpoint | None, inputs: dict[str, Path], input_meta: dict[str, dict], local_dir: Path | None):
        self._channel = channel
        self._outputs = outputs
        self._local_dir = local_dir  # by hand: outputs/<kind> under it, emptied on first use
        self._declared: set[str] = set()
        self._opened = False
        self.in_capstan = in_capstan
        self.params: dict = dict(context.get("params") or {})
        self.inputs = inputs
        self.input_meta = input_meta
        self.checkpoint_dir = checkpoint_dir
        self.last_checkpoint = last_checkpoint
        self.run: dict = dict(context.get("run") or {})
        self.attempt: int = int(self.run.get("attempt") or 1)
        self.replica: dict | None = self.run.get("replica")
        self.device: dict | None = context.get("device")
        self.work_dir = Path(context["workDir"]) if context.get("workDir") else None
        self.log = StageLogger(self._send)
        self._span: Any = None

    # ---- opening ------------------------------------------------------------------------------

    @classmethod
    def _from_context_file(cls, path: Path) -> "StageContext":
        try:
            context = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise RuntimeError(f"capstan_stage: cannot read the stage context {path} ({CONTEXT_ENV}): {e}") from None
        if not isinstance(context, dict):
            raise RuntimeError(f"capstan_stage: the stage context {path} is not a JSON object")
        channel = PipeChannel(int((context.get("messages") or {}).get("fd", 3)))
        if context.get("protocol") != PROTOCOL_VERSION:
            # Announce ours, so the worker fails the attempt with STAGE_PROTOCOL_VERSION (not retried).
            channel.send({"type": "open", "protocol": PROTOCOL_VERSION, "sdk": SDK})
            raise UnsupportedProtocol(
                f"capstan_stage {SDK} speaks stage protocol {PROTOCOL_VERSION}; the worker's context {path} is protocol "
                f"{context.get('protocol')!r}: install the capstan-stage that comes with this Capstan (pip install ./sdk/python)"
            )
        try:
            inputs = {k: Path(v["path"]) for k, v in (context.get("inputs") or {}).items()}
            input_meta = {k: dict(v.get("meta") or {}) for k, v in (context.get("inputs") or {}).items()}
            outputs = {k: Path(v["path"]) for k, v in (context.get("outputs") or {}).items()}
            ckpt = context.get("checkpoint") or {}
            last = ckpt.get("last")
            last_checkpoint = Checkpoint(Path(last["path"]), dict(last.get("details") or {})) if last else None
            checkpoint_dir = Path(ckpt["dir"])
        except (KeyError, TypeError, AttributeError) as e:
            raise RuntimeError(f"capstan_stage: the stage context {path} is malformed ({type(e).__name__}: {e})") from None
        return cls(channel=channel, in_capstan=True, context=context, outputs=outputs, checkpoint_dir=checkpoint_dir, last_checkpoint=last_checkpoint, inputs=inputs, input_meta=input_meta, local_dir=None)

    @classmethod
    def _local(cls, params: Mapping[str, Any], inputs: Mapping[str, Any], local_dir: Path) -> "StageContext":
        global _warned_local
        if not _warned_local:
            _warned_local = True
            warnings.warn(
                f"capstan_stage: {CONTEXT_ENV} is not set, so this runs outside Capstan: params and inputs are the ones "
                f"given to open_stage(), outputs and checkpoints go under {local_dir}/, messages are printed on stderr",
                RuntimeWarning,
                stacklevel=3,
            )
        local_dir = local_dir.resolve()
        paths = {}
        for kind, p in inputs.items():
            paths[kind] = Path(p)
            if not paths[kind].exists():
                raise FileNotFoundError(f"capstan_stage: input {kind!r}: {p} does not exist")
        context = {
            "protocol": PROTOCOL_VERSION,
            "run": {"id": "local", "pipeline": None, "stage": None, "plugin": None, "pluginVersion": None, "attempt": 1, "replica": None},
            "params": dict(params),
            "device": None,
        }
        return cls(channel=ConsoleChannel(), in_capstan=False, context=context, outputs={}, checkpoint_dir=local_dir / "checkpoints", last_checkpoint=None, inputs=paths, input_meta={k: {} for k in paths}, local_dir=local_dir)

    def __enter__(self) -> "StageContext":
        self._open()
        # Under a tracing worker (TRACEPARENT, and the optional opentelemetry packages): the run's trace.
        if self.in_capstan and self._span is None:
            self._span = start_stage_span(self.run)
        return self

    def _open(self) -> None:
        if not self._opened:
            self._opened = True
            self._channel.send({"type": "open", "protocol": PROTOCOL_VERSION, "sdk": SDK})
            self.checkpoint_dir.mkdir(parents=True, exist_ok=True)

    def __exit__(self, exc_type, exc, tb) -> bool:
        ok = exc is None or (isinstance(exc, SystemExit) and exc.code in (0, None))
        try:
            if ok:
                self._declare_written_outputs()
            else:
                self._send_error(exc)
        finally:
            if self._span is not None:
                self._span.end(None if ok else exc)
                self._span = None
        return False  # the exception, if any, goes on (non-zero exit)

    # ---- folders ------------------------------------------------------------------------------

    def output_dir(self, kind: str) -> Path:
        """The folder to write the produced ``kind`` into (fresh and empty at the start)."""
        if self.in_capstan:
            if kind not in self._outputs:
                raise ValueError(f"this stage produces {sorted(self._outputs) or 'nothing'}, not {kind!r}")
            self._outputs[kind].mkdir(parents=True, exist_ok=True)
            return self._outputs[kind]
        if kind not in self._outputs:
            d = self._local_dir / "outputs" / kind
            if d.exists():
                shutil.rmtree(d)
            d.mkdir(parents=True)
            self._outputs[kind] = d
        return self._outputs[kind]

    # ---- messages -----------------------------------------------------------------------------

    def epoch(self, epoch: int, epochs: int | None = None, **metrics: Any) -> None:
        """One finished epoch (1-based) and its metrics; name them trainLoss, trainAccuracy, valLoss, valAccuracy for the standard curves."""
        if isinstance(epoch, bool) or not isinstance(epoch, numbers.Integral) or epoch < 1:
            raise ValueError(f"epoch must be an integer >= 1 (got {epoch!r}); epochs count from 1")
        msg: dict = {"type": "epoch", "epoch": int(epoch)}
        if epochs is not None:
            msg["epochs"] = int(epochs)
        msg["metrics"] = self._numbers("epoch", metrics, allow_text=False)
        self._send(msg)

    def checkpoint(self, path: str | os.PathLike, **details: Any) -> None:
        """Reports a checkpoint written inside ``checkpoint_dir``; the next attempt gets it as ``last_checkpoint``."""
        p = Path(path)
        p = (p if p.is_absolute() else self.checkpoint_dir / p).resolve()
        root = self.checkpoint_dir.resolve()
        if p != root and root not in p.parents:
            raise ValueError(f"checkpoint {p} is not inside the checkpoint folder {root}")
        if not p.exists():
            raise FileNotFoundError(f"checkpoint {p} does not exist; write it before reporting it")
        self._send({"type": "checkpoint", "path": str(p), "details": check_details("checkpoint details", details)})

    def heartbeat(self, **details: Any) -> None:
        """A sign of life during a long quiet phase (any message counts as one)."""
        msg: dict = {"type": "heartbeat"}
        if details:
            msg["details"] = check_details("heartbeat details", details)
        self._send(msg)

    def metrics(self, **metrics: Any) -> None:
        """Merged into the stage's final metrics: numbers, strings or booleans."""
        self._send({"type": "metrics", "metrics": self._numbers("metrics", metrics, allow_text=True)})

    def usage(self, gpu_seconds: float) -> None:
        """Device time only the process can see (priced at the GPU rate on a GPU device)."""
        seconds = number(gpu_seconds)
        if seconds is None or seconds < 0:
            raise ValueError(f"gpu_seconds must be a finite number >= 0 (got {gpu_seconds!r})")
        self._send({"type": "usage", "gpuSeconds": seconds})

    def output(self, kind: str, **meta: Any) -> None:
        """Declares the output ``kind`` written into ``output_dir(kind)``; ``meta`` is stored on its reference."""
        if self.in_capstan and kind not in self._outputs:
            raise ValueError(f"this stage produces {sorted(self._outputs) or 'nothing'}, not {kind!r}")
        msg: dict = {"type": "output", "kind": kind}
        if meta:
            msg["meta"] = check_details("output meta", meta)
        self._send(msg)
        self._declared.add(kind)

    # ---- internals ----------------------------------------------------------------------------

    def _send(self, message: dict) -> None:
        self._open()  # `open` goes first, also for a context used without `with`
        self._channel.send(message)

    def _numbers(self, what: str, values: Mapping[str, Any], allow_text: bool) -> dict:
        out, dropped = {}, []
        for name, v in values.items():
            if allow_text and isinstance(v, (str, bool)):
                out[name] = v
                continue
            try:
                n = number(v)
            except TypeError:
                allowed = "numbers, strings or booleans" if allow_text else "numbers"
                raise TypeError(f"{what} {name}={v!r}: values must be {allowed}") from None
            if n is None:
                dropped.append(name)
            else:
                out[name] = n
        if dropped:
            self.log.warn(f"{what}: not finite, left out: {', '.join(dropped)}", **{k: str(values[k]) for k in dropped})
        return out

    def _declare_written_outputs(self) -> None:
        for kind, folder in self._outputs.items():
            if kind in self._declared:
                continue
            if folder.is_dir() and any(folder.iterdir()):
                self.output(kind)
            else:
                self.log.warn(f"output {kind!r} was neither written nor declared: {folder} is empty")

    def _send_error(self, exc: BaseException) -> None:
        if isinstance(exc, StageError):
            kind, retryable, bad_input, message = exc.type, exc.retryable, exc.bad_input, exc.message
        else:
            kind, retryable, bad_input, message = type(exc).__name__, True, False, str(exc)
        message = message or type(exc).__name__
        if len(message) > MAX_ERROR_MESSAGE_CHARS:
            message = message[:MAX_ERROR_MESSAGE_CHARS] + "…"
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        if len(tb) > MAX_TRACEBACK_CHARS:
            tb = "…" + tb[-MAX_TRACEBACK_CHARS:]
        self._send({"type": "error", "error": {"type": kind, "message": message, "retryable": retryable, "badInput": bad_input, "traceback": tb}})

    def __repr__(self) -> str:
        where = f"run {self.run.get('id')}, attempt {self.attempt}" if self.in_capstan else "outside Capstan"
        return f"<StageContext {where}>"
