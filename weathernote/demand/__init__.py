"""What users ask for: watched, requested and kept cells, the daily rhythm of demand, usage figures.

`Demand` is the one owner of the cells the upstream budget is spent on: the
read path asks it whether a cell is worth a call, the pre-warmer ranks by it
and publishes what it keeps there.
"""

from weathernote.demand.interest import Demand
from weathernote.demand.requested import RequestedCells
from weathernote.demand.rhythm import Shape
from weathernote.demand.usage import Usage
from weathernote.demand.watched import WatchedCells

__all__ = ["Demand", "RequestedCells", "Shape", "Usage", "WatchedCells"]
