"""open_stage() against a worker played by the test: context, messages on fd 3, errors, pipe, by hand."""
from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import tempfile
import textwrap
import time
import unittest
from pathlib import Path

from tests.harness import SDK_ROOT, Worker, parse_lines

HEADER = "import json, sys, time, threading\nfrom pathlib import Path\nfrom capstan_stage import open_stage, StageError, BadInput\n"


def script(body: str) -> str:
    return HEADER + textwrap.dedent(body)


class StageTestCase(unittest.TestCase):
    def setUp(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="capstan-sdk-")
        self.tmp = Path(self._tmp.name)

    def tearDown(self) -> None:
        self._tmp.cleanup()

    def worker(self, **kw) -> Worker:
        return Worker(self.tmp / "run", **kw)


class ReportingTest(StageTestCase):
    def test_context_messages_and_auto_declared_output(self):
        data = self.tmp / "data"
        data.mkdir()
        w = self.worker(
            params={"epochs": 2, "batchSize": 32},
            inputs={"dataset": data},
            device={"kind": "cpu", "id": "0", "label": "cpu:0"},
            run={"id": "pipeline/p/x1", "pipeline": "p", "stage": "train", "plugin": "acme:train", "pluginVersion": "1.0.0", "attempt": 2, "replica": {"index": 0, "count": 2}},
        )
        prev = w.checkpoint_dir / "epoch-0"
        prev.mkdir()
        w.last_checkpoint = {"path": str(prev), "details": {"epoch": 0, "note": "x"}}
        r = w.run_script(script("""
            with open_stage(params={"ignored": True}) as ctx:
                print(json.dumps({
                    "params": ctx.params, "inputs": {k: str(v) for k, v in ctx.inputs.items()}, "meta": ctx.input_meta,
                    "run": ctx.run, "attempt": ctx.attempt, "replica": ctx.replica, "device": ctx.device,
                    "in_capstan": ctx.in_capstan, "checkpoint_dir": str(ctx.checkpoint_dir), "work_dir": str(ctx.work_dir),
                    "last": [str(ctx.last_checkpoint.path), ctx.last_checkpoint.details],
                }))
                ctx.log.info("starting", batch=32)
                ctx.log.warning("careful")
                ctx.log.debug("details")
                ctx.log.error("not fatal")
                ctx.epoch(1, epochs=2, trainLoss=0.5, trainAccuracy=0.8, valLoss=0.6, valAccuracy=0.75)
                ck = ctx.checkpoint_dir / "epoch-1"
                ck.mkdir()
                (ck / "w.bin").write_bytes(b"w")
                ctx.checkpoint(ck, epoch=1)
                ctx.checkpoint("epoch-1", epoch=1, relative=True)
                ctx.heartbeat(phase="eval")
                ctx.heartbeat()
                ctx.metrics(testAccuracy=0.9, backend="keras", resumed=False, count=3)
                ctx.usage(gpu_seconds=1.5)
                (ctx.output_dir("model") / "model.keras").write_bytes(b"model")
        """))
        self.assertEqual(r.returncode, 0, r.explain())
        seen = json.loads(r.stdout.strip().splitlines()[-1])
        self.assertEqual(seen["params"], {"epochs": 2, "batchSize": 32})
        self.assertEqual(seen["inputs"], {"dataset": str(data)})
        self.assertEqual(seen["meta"], {"dataset": {"format": "test", "kind": "dataset"}})
        self.assertEqual((seen["attempt"], seen["replica"], seen["device"]["label"]), (2, {"index": 0, "count": 2}, "cpu:0"))
        self.assertEqual(seen["run"]["plugin"], "acme:train")
        self.assertEqual((seen["in_capstan"], seen["checkpoint_dir"], seen["work_dir"]), (True, str(w.checkpoint_dir), str(w.work_dir)))
        self.assertEqual(seen["last"], [str(prev), {"epoch": 0, "note": "x"}])

        m = r.messages
        self.assertEqual(m[0], {"type": "open", "protocol": 1, "sdk": "capstan-stage/0.1.0"})
        self.assertEqual([x["level"] for x in r.of("log")], ["info", "warn", "debug", "error"])
        self.assertEqual(r.of("log")[0], {"type": "log", "level": "info", "message": "starting", "fields": {"batch": 32}})
        self.assertEqual(r.of("epoch"), [{"type": "epoch", "epoch": 1, "epochs": 2, "metrics": {"trainLoss": 0.5, "trainAccuracy": 0.8, "valLoss": 0.6, "valAccuracy": 0.75}}])
        ck = str(w.checkpoint_dir / "epoch-1")
        self.assertEqual(r.of("checkpoint"), [{"type": "checkpoint", "path": ck, "details": {"epoch": 1}}, {"type": "checkpoint", "path": ck, "details": {"epoch": 1, "relative": True}}])
        self.assertEqual(r.of("heartbeat"), [{"type": "heartbeat", "details": {"phase": "eval"}}, {"type": "heartbeat"}])
        self.assertEqual(r.of("metrics"), [{"type": "metrics", "metrics": {"testAccuracy": 0.9, "backend": "keras", "resumed": False, "count": 3}}])
        self.assertEqual(r.of("usage"), [{"type": "usage", "gpuSeconds": 1.5}])
        self.assertEqual(m[-1], {"type": "output", "kind": "model"})  # written, not declared: declared on exit
        self.assertEqual(len(r.of("output")), 1)

    def test_declared_output_is_sent_once_with_its_meta(self):
        w = self.worker(outputs=("model", "report"))
        r = w.run_script(script("""
            with open_stage() as ctx:
                (ctx.output_dir("model") / "model.keras").write_bytes(b"m")
                ctx.output("model", format="keras", epochs=2)
                (ctx.output_dir("report") / "r.txt").write_text("ok")
        """))
        self.assertEqual(r.returncode, 0, r.explain())
        self.assertEqual(r.of("output"), [{"type": "output", "kind": "model", "meta": {"format": "keras", "epochs": 2}}, {"type": "output", "kind": "report"}])

    def test_an_output_left_empty_is_not_declared_and_says_so(self):
        r = self.worker().run_script(script("""
            with open_stage() as ctx:
                ctx.output_dir("model")
        """))
        self.assertEqual(r.returncode, 0, r.explain())
        self.assertEqual(r.of("output"), [])
        self.assertIn("'model' was neither written nor declared", r.of("log")[-1]["message"])
        self.assertEqual(r.of("log")[-1]["level"], "warn")

    def test_sys_exit_0_is_a_normal_exit(self):
        r = self.worker().run_script(script("""
            with open_stage() as ctx:
                (ctx.output_dir("model") / "m").write_bytes(b"m")
                sys.exit(0)
        """))
        self.assertEqual(r.returncode, 0, r.explain())
        self.assertEqual(r.of("output"), [{"type": "output", "kind": "model"}])
        self.assertEqual(r.of("error"), [])

    def test_misuse_is_refused_with_clear_errors(self):
        r = self.worker().run_script(script("""
            import math
            out = {}
            with open_stage() as ctx:
                for name, call in {
                    "unknown_kind": lambda: ctx.output_dir("report"),
                    "declare_unknown": lambda: ctx.output("report"),
                    "outside": lambda: ctx.checkpoint("/tmp"),
                    "dotdot": lambda: ctx.checkpoint("../outputs"),
                    "missing": lambda: ctx.checkpoint("epoch-9"),
                    "epoch0": lambda: ctx.epoch(0, trainLoss=1.0),
                    "text_in_epoch": lambda: ctx.epoch(1, trainLoss="low"),
                    "negative_usage": lambda: ctx.usage(gpu_seconds=-1),
                    "big_details": lambda: ctx.heartbeat(blob="x" * 70000),
                }.items():
                    try:
                        call()
                        out[name] = None
                    except Exception as e:
                        out[name] = f"{type(e).__name__}: {e}"
                ctx.epoch(1, trainLoss=float("nan"), valLoss=0.5)
                ctx.metrics(a=float("inf"), b=2)
            print(json.dumps(out))
        """))
        self.assertEqual(r.returncode, 0, r.explain())
        out = json.loads(r.stdout.strip().splitlines()[-1])
        self.assertIn("produces ['model'], not 'report'", out["unknown_kind"])
        self.assertIn("produces ['model'], not 'report'", out["declare_unknown"])
        self.assertIn("is not inside the checkpoint folder", out["outside"])
        self.assertIn("is not inside the checkpoint folder", out["dotdot"])
        self.assertIn("FileNotFoundError", out["missing"])
        self.assertIn("epochs count from 1", out["epoch0"])
        self.assertIn("trainLoss='low'", out["text_in_epoch"])
        self.assertIn("ValueError", out["negative_usage"])
        self.assertIn("keep it under 65536", out["big_details"])
        # Not-finite numbers are left out (JSON has no NaN), with a warning naming them.
        self.assertEqual(r.of("epoch"), [{"type": "epoch", "epoch": 1, "metrics": {"valLoss": 0.5}}])
        self.assertEqual(r.of("metrics"), [{"type": "metrics", "metrics": {"b": 2}}])
        warns = [x["message"] for x in r.of("log") if x["level"] == "warn"]
        self.assertIn("epoch: not finite, left out: trainLoss", warns)
        self.assertIn("metrics: not finite, left out: a", warns)

    def test_numpy_values_are_sent_as_numbers(self):
        try:
            import numpy  # noqa: F401
        except ImportError:
            self.skipTest("numpy is not installed")
        r = self.worker().run_script(script("""
            import numpy as np
            with open_stage() as ctx:
                ctx.epoch(np.int64(1), epochs=np.int32(3), trainLoss=np.float32(0.25), valLoss=np.array(0.5))
                ctx.metrics(n=np.int64(7), flag=True)
                ctx.heartbeat(shape=np.array([2, 3]), where=Path("/x"))
        """))
        self.assertEqual(r.returncode, 0, r.explain())
        self.assertEqual(r.of("epoch")[0], {"type": "epoch", "epoch": 1, "epochs": 3, "metrics": {"trainLoss": 0.25, "valLoss": 0.5}})
        self.assertEqual(r.of("metrics")[0]["metrics"], {"n": 7, "flag": True})
        self.assertEqual(r.of("heartbeat")[0]["details"], {"shape": [2, 3], "where": "/x"})

    def test_lines_from_many_threads_stay_whole(self):
        r = self.worker().run_script(script("""
            with open_stage() as ctx:
                def talk(i):
                    for j in range(300):
                        ctx.log.info("x" * (j * 37 % 5000), thread=i, n=j)
                threads = [threading.Thread(target=talk, args=(i,)) for i in range(8)]
                for t in threads: t.start()
                for t in threads: t.join()
        """))
        self.assertEqual(r.returncode, 0, r.explain())
        logs = [x for x in r.of("log") if "thread" in x.get("fields", {})]
        self.assertEqual(len(logs), 8 * 300)
        for x in logs:
            self.assertEqual(len(x["message"]), x["fields"]["n"] * 37 % 5000)


class ErrorTest(StageTestCase):
    def run_raising(self, raise_line: str):
        return self.worker().run_script(script(f"""
            with open_stage() as ctx:
                (ctx.output_dir("model") / "half-written").write_bytes(b"m")
                {raise_line}
        """))

    def test_stage_error_keeps_its_type_and_retry_intent(self):
        r = self.run_raising('raise StageError("labels out of range", type="BAD_LABELS", retryable=False)')
        self.assertNotEqual(r.returncode, 0)
        (e,) = r.of("error")
        self.assertEqual({k: e["error"][k] for k in ("type", "message", "retryable", "badInput")}, {"type": "BAD_LABELS", "message": "labels out of range", "retryable": False, "badInput": False})
        self.assertIn("StageError: labels out of range", e["error"]["traceback"])
        self.assertIn("stage.py", e["error"]["traceback"])
        self.assertEqual(r.of("output"), [])  # a failed attempt declares nothing
        self.assertEqual(r.messages[-1]["type"], "error")
        self.assertIn("StageError: labels out of range", r.stderr)  # and Python still prints it

    def test_bad_input_is_never_retried(self):
        r = self.run_raising('raise BadInput("the CSV has no rows", type="EMPTY_DATA")')
        self.assertNotEqual(r.returncode, 0)
        e = r.of("error")[0]["error"]
        self.assertEqual((e["type"], e["retryable"], e["badInput"]), ("EMPTY_DATA", False, True))

    def test_defaults_for_stage_error_and_bad_input(self):
        e1 = self.run_raising('raise StageError("x")').of("error")[0]["error"]
        e2 = self.run_raising('raise BadInput("y")').of("error")[0]["error"]
        self.assertEqual((e1["type"], e1["retryable"], e1["badInput"]), ("STAGE_ERROR", False, False))
        e3 = self.run_raising('raise StageError("z", type="STORE_DOWN", retryable=True)').of("error")[0]["error"]
        self.assertEqual((e3["type"], e3["retryable"], e3["badInput"]), ("STORE_DOWN", True, False))
        self.assertEqual((e2["type"], e2["retryable"], e2["badInput"]), ("BAD_INPUT", False, True))

    def test_any_other_exception_is_named_by_its_class_and_retryable(self):
        r = self.run_raising('raise ValueError("boom")')
        self.assertEqual(r.returncode, 1)
        e = r.of("error")[0]["error"]
        self.assertEqual((e["type"], e["message"], e["retryable"], e["badInput"]), ("ValueError", "boom", True, False))

    def test_traceback_and_message_are_bounded(self):
        r = self.run_raising('raise RuntimeError("z" * 200000)')
        e = r.of("error")[0]["error"]
        self.assertLessEqual(len(e["traceback"]), 8 * 1024 + 1)
        self.assertTrue(e["traceback"].startswith("…"))
        self.assertLessEqual(len(e["message"]), 16 * 1024 + 1)

    def test_unsupported_protocol_is_announced_then_refused(self):
        w = self.worker(protocol=2)
        r = w.run_script(script("""
            with open_stage() as ctx:
                print("should not run")
        """))
        self.assertNotEqual(r.returncode, 0)
        self.assertEqual(r.messages, [{"type": "open", "protocol": 1, "sdk": "capstan-stage/0.1.0"}])
        self.assertIn("speaks stage protocol 1; the worker's context", r.stderr)
        self.assertIn("is protocol 2", r.stderr)
        self.assertNotIn("should not run", r.stdout)

    def test_unreadable_context_and_missing_pipe_are_clear(self):
        w = self.worker()
        w.context_file.write_text("{not json")
        env = {**os.environ, "PYTHONPATH": str(SDK_ROOT), "CAPSTAN_STAGE_CONTEXT": str(w.context_file)}
        code = "from capstan_stage import open_stage\nwith open_stage(): pass"
        r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn(f"cannot read the stage context {w.context_file}", r.stderr)
        w.context_file.write_text(json.dumps(w.context()))
        # No fd 3 (descriptors above 2 are closed by default).
        r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("messages go to file descriptor 3, but it is not open", r.stderr)


class WorkerGoneTest(StageTestCase):
    def start_and_close_after_open(self, body: str):
        w = self.worker()
        proc, r = w.start(script(body))
        try:
            line = b""
            while not line.endswith(b"\n"):
                select.select([r], [], [], 30)
                chunk = os.read(r, 4096)
                self.assertTrue(chunk, "the process closed fd 3 before sending open")
                line += chunk
            self.assertEqual(parse_lines(line.split(b"\n")[0] + b"\n")[0]["type"], "open")
        finally:
            os.close(r)  # the worker dies
        t0 = time.monotonic()
        try:
            out, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            self.fail("the process trained on after the worker closed its pipe")
        return proc.returncode, time.monotonic() - t0, err.decode()

    def test_exits_at_the_next_message(self):
        code, seconds, err = self.start_and_close_after_open("""
            with open_stage() as ctx:
                for i in range(100000):
                    ctx.heartbeat(i=i)
                    time.sleep(0.01)
        """)
        self.assertEqual(code, 141)
        self.assertLess(seconds, 5)
        self.assertIn("the worker closed the message pipe (fd 3); stopping", err)

    def test_exits_while_quiet(self):
        code, seconds, err = self.start_and_close_after_open("""
            with open_stage() as ctx:
                time.sleep(120)  # a long epoch: no message to fail on
        """)
        self.assertEqual(code, 141)
        self.assertLess(seconds, 5)
        self.assertIn("the worker closed the message pipe", err)


class OutsideCapstanTest(StageTestCase):
    def test_runs_by_hand_with_readable_lines(self):
        data = self.tmp / "data"
        data.mkdir()
        local = self.tmp / "local"
        (local / "outputs" / "model").mkdir(parents=True)
        (local / "outputs" / "model" / "stale.txt").write_text("from an earlier run")
        r = self.worker().run_script(script(f"""
            with open_stage(params={{"epochs": 2}}, inputs={{"dataset": {str(data)!r}}}, local_dir={str(local)!r}) as ctx:
                print(json.dumps({{"params": ctx.params, "inputs": {{k: str(v) for k, v in ctx.inputs.items()}}, "in_capstan": ctx.in_capstan,
                                  "ckpt": str(ctx.checkpoint_dir), "last": ctx.last_checkpoint, "attempt": ctx.attempt, "device": ctx.device}}))
                ctx.log.info("hello", who="me")
                ctx.epoch(1, epochs=2, trainLoss=0.123456789, valAccuracy=0.5)
                (ctx.checkpoint_dir / "epoch-0001").mkdir()
                ctx.checkpoint(ctx.checkpoint_dir / "epoch-0001", epoch=1)
                ctx.metrics(testAccuracy=0.75)
                (ctx.output_dir("model") / "model.keras").write_bytes(b"m")
        """), in_capstan=False)
        self.assertEqual(r.returncode, 0, r.explain())
        self.assertEqual(r.raw, b"")  # nothing on fd 3
        seen = json.loads(r.stdout.strip().splitlines()[-1])
        self.assertEqual(seen, {"params": {"epochs": 2}, "inputs": {"dataset": str(data)}, "in_capstan": False, "ckpt": str(local / "checkpoints"), "last": None, "attempt": 1, "device": None})
        self.assertEqual(r.stderr.count("RuntimeWarning"), 1)
        self.assertIn("outside Capstan", r.stderr)
        for line in (
            "[capstan] info  hello who=me",
            "[capstan] epoch 1/2 trainLoss=0.123457 valAccuracy=0.5",
            f"[capstan] checkpoint {local / 'checkpoints' / 'epoch-0001'} epoch=1",
            "[capstan] metrics testAccuracy=0.75",
            "[capstan] output model",
        ):
            self.assertIn(line, r.stderr)
        self.assertEqual(sorted(p.name for p in (local / "outputs" / "model").iterdir()), ["model.keras"])  # fresh, like under Capstan

    def test_errors_by_hand(self):
        r = self.worker().run_script(script(f"""
            with open_stage(local_dir={str(self.tmp / 'local')!r}) as ctx:
                raise BadInput("bad rows", type="BAD_ROWS")
        """), in_capstan=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("[capstan] error BAD_ROWS: bad rows (retryable=False, badInput=True)", r.stderr)
        self.assertIn("capstan_stage.errors.BadInput: bad rows", r.stderr)

    def test_a_missing_input_is_named(self):
        r = self.worker().run_script(script("""
            with open_stage(inputs={"dataset": "/no/such/folder"}) as ctx:
                pass
        """), in_capstan=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("input 'dataset': /no/such/folder does not exist", r.stderr)


if __name__ == "__main__":
    unittest.main()
