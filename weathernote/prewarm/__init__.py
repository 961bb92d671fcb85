"""The pre-warmer: one instance at a time keeps the most valuable cells fresh within the budget."""

from weathernote.prewarm.cycle import CycleReport, Prewarmer

__all__ = ["CycleReport", "Prewarmer"]
