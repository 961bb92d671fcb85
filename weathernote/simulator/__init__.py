"""An Open-Meteo-compatible forecast server for offline development and tests.

`create_app` builds the Starlette app; `add_arguments`/`run` are the command
line (`weathernote simulate-upstream`, `python -m weathernote.simulator`);
`SimulatorProcess` runs that command as a child process and drives its control endpoints.
"""

from weathernote.simulator.app import create_app
from weathernote.simulator.cli import add_arguments, run
from weathernote.simulator.config import SimulatorConfig
from weathernote.simulator.process import SimulatorError, SimulatorProcess

__all__ = ["SimulatorConfig", "SimulatorError", "SimulatorProcess", "add_arguments", "create_app", "run"]
