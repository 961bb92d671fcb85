"""What operators see: Prometheus metrics, structured logs, the per-request log line.

Used by every other package; imports none of them.
"""

from weathernote.ops import logs, metrics, requestlog

__all__ = ["logs", "metrics", "requestlog"]
