"""What operators see: Prometheus metrics, structured logs, the per-request log line, traces.

Used by every other package; imports none of them.
"""

from weathernote.ops import logs, metrics, requestlog, tracing

__all__ = ["logs", "metrics", "requestlog", "tracing"]
