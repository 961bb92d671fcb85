"""An Open-Meteo-compatible forecast server for offline development and tests.

`create_app` builds the Starlette app; `add_arguments`/`run` are the command
line (`weathernote simulate-upstream`, `python -m weathernote.simulator`).
"""

from weathernote.simulator.app import create_app
from weathernote.simulator.cli import add_arguments, run
from weathernote.simulator.config import SimulatorConfig

__all__ = ["SimulatorConfig", "add_arguments", "create_app", "run"]
