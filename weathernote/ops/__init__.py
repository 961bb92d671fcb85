"""What operators see: Prometheus metrics, structured logs, the per-request log line.

Used by every other package; imports none of them.
"""
