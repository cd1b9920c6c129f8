"""capstan_stage.tracing: optional, never in the way (the end-to-end span is tested in test/telemetry)."""
from __future__ import annotations

import sys
import unittest
from unittest import mock

from capstan_stage import tracing

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
RUN = {"id": "pipeline/p/abcde", "stage": "py", "attempt": 1}


class TracingTest(unittest.TestCase):
    def test_no_traceparent_no_span(self) -> None:
        span = tracing.start_stage_span(RUN, env={})
        self.assertIsNone(span.trace_id)
        span.end()

    def test_switched_off_by_the_standard_variables(self) -> None:
        for env in ({"TRACEPARENT": TRACEPARENT, "OTEL_SDK_DISABLED": "true"}, {"TRACEPARENT": TRACEPARENT, "OTEL_TRACES_EXPORTER": "none"}):
            span = tracing.start_stage_span(RUN, env=env)
            self.assertIsNone(span.trace_id, env)
            span.end(RuntimeError("the stage failed"))

    def test_without_the_opentelemetry_packages_nothing_happens(self) -> None:
        # An import of opentelemetry fails, as where the optional packages are not installed.
        blocked = {name: None for name in ("opentelemetry", "opentelemetry.trace", "opentelemetry.context")}
        with mock.patch.dict(sys.modules, blocked):
            span = tracing.start_stage_span(RUN, env={"TRACEPARENT": TRACEPARENT})
            self.assertIsNone(span.trace_id)
            span.end(ValueError("bad input"))

    def test_continues_the_parent_trace_when_available(self) -> None:
        try:
            import opentelemetry.sdk  # noqa: F401
        except ImportError:
            self.skipTest("the optional opentelemetry packages are not installed")
        # An endpoint nothing listens on: the export fails quietly (within its timeout), the stage is not affected.
        with mock.patch.dict("os.environ", {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", "OTEL_EXPORTER_OTLP_TIMEOUT": "1"}):
            span = tracing.start_stage_span(RUN, env={"TRACEPARENT": TRACEPARENT})
            self.assertEqual(span.trace_id, "0af7651916cd43dd8448eb211c80319c")
            span.end()


if __name__ == "__main__":
    unittest.main()
