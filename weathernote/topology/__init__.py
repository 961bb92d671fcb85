"""The local topology: WeatherNote's scale-out deployment (`deploy/compose.yaml`) as plain
processes on loopback, without a container engine. A Redis Cluster of 3 primaries and 3 replicas
(the embedded Valkey), the Open-Meteo simulator (unless a real upstream is given), `weathernote
serve` instances sharing them and one client-id secret, and nginx in front as the load balancer.

`Regions` runs two or more such topologies side by side, each a region with its own cluster,
upstream and instances, sharing only the client-id secret, behind one more nginx that fails over
from the first region to the next (docs/regions.md).

`python -m weathernote.topology up|status|down` runs either from a shell (`up --regions 2`), each
process in a session of its own that outlives the command (deploy/local/README.md); tests and
benchmarks drive a `Topology` or `Regions` directly. `describe` and `describe_regions` turn their
`status()` into the text `status` prints.
"""

from weathernote.topology.cli import describe, describe_regions
from weathernote.topology.errors import TopologyError
from weathernote.topology.regions import Regions
from weathernote.topology.state import default_state_dir
from weathernote.topology.topology import Topology

__all__ = ["Regions", "Topology", "TopologyError", "default_state_dir", "describe", "describe_regions"]
