"""The worker's side of the stage protocol, for tests: a context file, folders, a script run as a
child with a pipe on fd 3, and the messages it sent."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SDK_ROOT = Path(__file__).resolve().parents[1]  # sdk/python: the children import this working copy


@dataclass
class Result:
    returncode: int
    messages: list
    stdout: str
    stderr: str
    seconds: float
    raw: bytes = b""

    def of(self, kind: str) -> list:
        return [m for m in self.messages if m["type"] == kind]

    def explain(self) -> str:
        return f"exit {self.returncode}\nmessages: {json.dumps(self.messages, indent=1)[:4000]}\nstdout: {self.stdout[-2000:]}\nstderr: {self.stderr[-4000:]}"


@dataclass
class Worker:
    root: Path
    params: dict = field(default_factory=dict)
    inputs: dict = field(default_factory=dict)  # kind -> folder
    outputs: tuple = ("model",)
    last_checkpoint: dict | None = None
    protocol: int = 1
    run: dict | None = None
    device: dict | None = None

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self.checkpoint_dir = self.root / "checkpoints"
        self.work_dir = self.root / "work"
        self.output_dirs = {k: self.root / "outputs" / k for k in self.outputs}
        for d in (self.checkpoint_dir, self.work_dir, *self.output_dirs.values()):
            d.mkdir(parents=True, exist_ok=True)
        self.context_file = self.root / "context.json"

    def context(self) -> dict:
        return {
            "protocol": self.protocol,
            "run": self.run or {"id": "pipeline/test/abc12", "pipeline": "test", "stage": "train", "plugin": "test:script", "pluginVersion": "1.0.0", "attempt": 1, "replica": None},
            "params": self.params,
            "inputs": {k: {"path": str(p), "uri": f"file://{p}", "sha256": "0" * 64, "bytes": 0, "meta": {"format": "test", "kind": k}} for k, p in self.inputs.items()},
            "outputs": {k: {"path": str(p)} for k, p in self.output_dirs.items()},
            "checkpoint": {"dir": str(self.checkpoint_dir), "last": self.last_checkpoint},
            "workDir": str(self.work_dir),
            "device": self.device,
            "messages": {"fd": 3},
        }

    def start(self, script: str, *, in_capstan: bool = True, python: str | None = None) -> tuple[subprocess.Popen, int]:
        """Starts ``script`` with fd 3 the write end of a pipe (as the worker's launcher does); returns the process and the read end."""
        self.context_file.write_text(json.dumps(self.context()))
        file = self.root / "stage.py"
        file.write_text(script)
        env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR") if k in os.environ}
        env.update(PYTHONUNBUFFERED="1", PYTHONPATH=str(SDK_ROOT), TF_CPP_MIN_LOG_LEVEL="3")
        if in_capstan:
            env["CAPSTAN_STAGE_CONTEXT"] = str(self.context_file)
        r, w = os.pipe()
        # The pipe's write end becomes fd 3 in the child (dup2 clears close-on-exec; every other
        # descriptor of ours is close-on-exec, so close_fds=False leaks nothing else).
        proc = subprocess.Popen(
            [python or sys.executable, str(file)],
            cwd=self.work_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            close_fds=False,
            preexec_fn=lambda: os.dup2(w, 3),
        )
        os.close(w)
        return proc, r

    def run_script(self, script: str, *, in_capstan: bool = True, timeout: float = 120, python: str | None = None) -> Result:
        t0 = time.monotonic()
        proc, r = self.start(script, in_capstan=in_capstan, python=python)
        chunks: list = []
        reader = threading.Thread(target=_drain, args=(r, chunks), daemon=True)
        reader.start()
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        reader.join(10)
        os.close(r)
        raw = b"".join(chunks)
        return Result(proc.returncode, parse_lines(raw), out.decode(errors="replace"), err.decode(errors="replace"), time.monotonic() - t0, raw)


def _drain(fd: int, chunks: list) -> None:
    while True:
        b = os.read(fd, 65536)
        if not b:
            return
        chunks.append(b)


def _not_json(name: str) -> None:
    raise ValueError(f"{name} is not JSON (JSON.parse in the worker rejects it)")


def parse_lines(raw: bytes) -> list:
    """Every line must be one JSON object (a line that is not is a protocol error for the worker)."""
    messages = []
    for line in raw.decode("utf-8").splitlines():
        m: Any = json.loads(line, parse_constant=_not_json)
        assert isinstance(m, dict) and isinstance(m.get("type"), str), line
        messages.append(m)
    return messages
