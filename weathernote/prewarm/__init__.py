"""The pre-warmer: one instance at a time keeps the most valuable cells fresh within the budget.

`Prewarmer` runs the cycles under a `Lease`; `ranking` values the candidates
(requests by the daily rhythm's outlook, distinct watchers within their share,
the most populous cities last); `due` says what each cycle renews, fetches and
how it batches, within its share of the day.
"""

from weathernote.prewarm.cycle import CycleReport, Prewarmer
from weathernote.prewarm.lease import Lease
from weathernote.prewarm.ranking import Candidate

__all__ = ["Candidate", "CycleReport", "Lease", "Prewarmer"]
