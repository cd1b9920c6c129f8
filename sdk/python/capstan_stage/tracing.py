"""Optional OpenTelemetry support: a stage run as a span of the pipeline run's trace.

When the worker traces (its OTEL_* settings ask for traces), it passes the stage attempt's trace
context in TRACEPARENT (and TRACESTATE) and its OTEL_EXPORTER_OTLP_* settings. If the
``opentelemetry`` packages are importable (``pip install capstan-stage[otel]``), ``open_stage()``
then wraps the stage in a span ``capstan.python.stage`` (service ``capstan-python-stage``), a
child of the attempt, exported with OTLP over HTTP and flushed when the stage closes. Spans the
script makes itself with ``opentelemetry.trace.get_tracer(...)`` nest under it. Without the
packages, without TRACEPARENT, or with OTEL_SDK_DISABLED / OTEL_TRACES_EXPORTER=none, nothing
happens; tracing never fails a stage (a problem is one warning on stderr).
"""
from __future__ import annotations

import os
import sys
from typing import Any, Mapping

SERVICE_NAME = "capstan-python-stage"
SPAN_NAME = "capstan.python.stage"


class _NoSpan:
    """What a stage gets when it is not traced: ends without doing anything."""

    trace_id: str | None = None

    def end(self, exc: BaseException | None = None) -> None:
        pass


class _StageSpan:
    def __init__(self, provider: Any, span: Any, token: Any, detach: Any):
        self._provider = provider
        self._span = span
        self._token = token
        self._detach = detach
        self.trace_id = format(span.get_span_context().trace_id, "032x")

    def end(self, exc: BaseException | None = None) -> None:
        try:
            if exc is not None:
                from opentelemetry.trace import Status, StatusCode

                self._span.record_exception(exc)
                self._span.set_status(Status(StatusCode.ERROR, str(exc)[:1000]))
            self._span.end()
            self._detach(self._token)
            # Exports what is buffered before the process exits.
            self._provider.shutdown()
        except Exception as e:  # never fail the stage over its trace
            _warn(f"could not export the stage's span: {e}")


def _warn(msg: str) -> None:
    sys.stderr.write(f"capstan_stage: tracing: {msg}\n")


def _wanted(env: Mapping[str, str]) -> bool:
    if not env.get("TRACEPARENT"):
        return False
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = [x.strip() for x in env.get("OTEL_TRACES_EXPORTER", "").split(",") if x.strip()]
    return "none" not in exporters


def start_stage_span(run: Mapping[str, Any], env: Mapping[str, str] | None = None) -> Any:
    """The stage's span, started (or a no-op when tracing is off or unavailable); call ``.end(exc)`` once."""
    env = os.environ if env is None else env
    if not _wanted(env):
        return _NoSpan()
    try:
        from opentelemetry import context, trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
    except Exception:
        return _NoSpan()  # the optional packages are not installed: no tracing
    try:
        carrier = {"traceparent": env["TRACEPARENT"]}
        if env.get("TRACESTATE"):
            carrier["tracestate"] = env["TRACESTATE"]
        parent = TraceContextTextMapPropagator().extract(carrier)
        provider = TracerProvider(resource=Resource.create({"service.name": env.get("OTEL_SERVICE_NAME") or SERVICE_NAME}))
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        # The script's own spans (trace.get_tracer(...)) go to the same place, under this one.
        trace.set_tracer_provider(provider)
        attrs = {"process.pid": os.getpid()}
        for key, attr in (("id", "capstan.run_id"), ("stage", "capstan.stage.id"), ("plugin", "capstan.stage.plugin"), ("attempt", "capstan.stage.attempt")):
            if run.get(key) is not None:
                attrs[attr] = run[key]
        span = provider.get_tracer("capstan_stage").start_span(SPAN_NAME, context=parent, attributes=attrs)
        token = context.attach(trace.set_span_in_context(span, parent))
        return _StageSpan(provider, span, token, context.detach)
    except Exception as e:
        _warn(f"not traced: {e}")
        return _NoSpan()
