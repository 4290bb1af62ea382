"""``tests.web.webapp``'s app with OpenTelemetry on, for worker subprocesses: each ended
span is appended as a JSON line to ``$TETHER_TEST_SPANS`` at once (a SIGKILL loses only
spans that had not ended)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

import tether.otel
from tests.web.webapp import app

__all__ = ["app"]


class FileExporter(SpanExporter):
    def __init__(self, path: str) -> None:
        self.path = path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with open(self.path, "a", encoding="utf-8") as f:
            for s in spans:
                ctx = s.get_span_context()
                f.write(json.dumps({"name": s.name, "attributes": dict(s.attributes or {}),
                                    "trace_id": ctx.trace_id if ctx else None,
                                    "span_id": ctx.span_id if ctx else None,
                                    "parent_id": s.parent.span_id if s.parent else None,
                                    "parent_remote": bool(s.parent and s.parent.is_remote)}
                                   ) + "\n")
                f.flush()
        return SpanExportResult.SUCCESS


provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(FileExporter(os.environ["TETHER_TEST_SPANS"])))
tether.otel.instrument(provider)
