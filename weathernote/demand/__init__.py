"""What users ask for: usage figures, the most requested cells and the daily rhythm of demand."""

from weathernote.demand.usage import Usage

__all__ = ["Usage"]
