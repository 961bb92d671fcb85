"""The local topology: WeatherNote's scale-out deployment (`deploy/compose.yaml`) as plain
processes on loopback, without a container engine. A Redis Cluster of 3 primaries and 3 replicas
(the embedded Valkey), the Open-Meteo simulator (unless a real upstream is given), `weathernote
serve` instances sharing them and one client-id secret, and nginx in front as the load balancer.

`python -m weathernote.topology up|status|down` runs it from a shell, each process in a session
of its own that outlives the command (deploy/local/README.md); tests and benchmarks drive a
`Topology` directly. `describe` turns its `status()` into the text `status` prints.
"""

from weathernote.topology.cli import describe
from weathernote.topology.errors import TopologyError
from weathernote.topology.state import default_state_dir
from weathernote.topology.topology import Topology

__all__ = ["Topology", "TopologyError", "default_state_dir", "describe"]
