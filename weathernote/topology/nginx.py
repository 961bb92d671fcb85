"""nginx in front of the instances, and in front of the regions: their configurations, generated
from the templates shipped in this package (found through importlib.resources, so an installed
package finds them too), checked, and the command that runs one in its state directory's prefix."""

from __future__ import annotations

import os
import shutil
import subprocess
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from weathernote.topology.errors import TopologyError
from weathernote.topology.processes import HOST

TEMPLATE = resources.files("weathernote.topology").joinpath("nginx.conf.template")
FRONT_TEMPLATE = resources.files("weathernote.topology").joinpath("front.conf.template")
# passive health: one failed attempt (refused, reset, timeout, 502/503) skips an instance this long
FAIL_TIMEOUT_SECONDS = 3
# the same for a region behind the front: probed again (by one request, sent on to the backup if
# it fails) this often while it is down
REGION_FAIL_TIMEOUT_SECONDS = 5


def nginx_binary() -> str:
    return shutil.which("nginx") or "/usr/sbin/nginx"


def write_config(prefix: Path, listen: int, instance_ports: list[int]) -> None:
    """A fresh prefix (`logs/`, `temp/`, the edge's `cache/`) with `nginx.conf` for these instances, listening on `listen`."""
    shutil.rmtree(prefix, ignore_errors=True)
    for sub in ("logs", "temp", "cache"):
        (prefix / sub).mkdir(parents=True)
    (prefix / "nginx.conf").write_text(render_config(listen, instance_ports))


def render_config(listen: int, instance_ports: list[int]) -> str:
    servers = "\n".join(
        f"        server {HOST}:{port} max_fails=1 fail_timeout={FAIL_TIMEOUT_SECONDS}s;" for port in instance_ports
    )
    routes = "\n".join(
        f"        location = /_instances/{index + 1}/{path} {{\n"
        f"            proxy_pass http://{HOST}:{port}/{path};\n"
        f'            proxy_set_header Connection "";\n'
        f"            proxy_cache off;\n"
        f"        }}"
        for index, port in enumerate(instance_ports)
        for path in ("ready", "health")
    )
    values = {"@LISTEN@": str(listen), "@UPSTREAM_SERVERS@": servers, "@INSTANCE_ROUTES@": routes}
    return _fill(TEMPLATE, values)


def write_front_config(prefix: Path, listen: int, regions: list[tuple[str, int]]) -> None:
    """A fresh prefix with the front's `nginx.conf`: the regions' nginx by (name, port), the first
    the one it sends to, the others its backups in this order."""
    shutil.rmtree(prefix, ignore_errors=True)
    for sub in ("logs", "temp"):
        (prefix / sub).mkdir(parents=True)
    (prefix / "nginx.conf").write_text(render_front_config(listen, regions))


def render_front_config(listen: int, regions: list[tuple[str, int]]) -> str:
    servers = "\n".join(
        f"        server {HOST}:{port} max_fails=1 fail_timeout={REGION_FAIL_TIMEOUT_SECONDS}s{' backup' if i else ''};"
        for i, (_, port) in enumerate(regions)
    )
    routes = "\n".join(
        f"        location = /_regions/{name}/{path} {{\n"
        f"            proxy_pass http://{HOST}:{port}/{path};\n"
        f'            proxy_set_header Connection "";\n'
        f"        }}"
        for name, port in regions
        for path in ("ready", "health")
    )
    return _fill(FRONT_TEMPLATE, {"@LISTEN@": str(listen), "@REGION_SERVERS@": servers, "@REGION_ROUTES@": routes})


def _fill(template: Traversable, values: dict[str, str]) -> str:
    values = {**values, "@WORKER_USER@": "user root;" if os.geteuid() == 0 else ""}
    lines = template.read_text().splitlines()
    for placeholder, value in values.items():
        # placeholders are replaced outside comments only (the header names them)
        used = [i for i, line in enumerate(lines) if placeholder in line and not line.lstrip().startswith("#")]
        if not used:
            raise TopologyError(f"{template} lost its {placeholder}")
        for i in used:
            lines[i] = lines[i].replace(placeholder, value)
    return "\n".join(lines) + "\n"


def instance_route(lb_url: str, index: int, path: str = "ready") -> str:
    """Instance `index`'s (0-based) /ready or /health through nginx, whichever instances are up."""
    return f"{lb_url}/_instances/{index + 1}/{path}"


def region_route(front_url: str, name: str, path: str = "ready") -> str:
    """Region `name`'s /ready or /health through the front, asked of that region's nginx alone."""
    return f"{front_url}/_regions/{name}/{path}"


def check_config(binary: str, prefix: Path) -> None:
    """`nginx -t` on the written configuration: a TopologyError with nginx's words if it rejects it."""
    checked = subprocess.run(
        [binary, "-t", "-q", *_prefix_options(prefix)], capture_output=True, text=True, timeout=30, check=False
    )
    if checked.returncode != 0:
        raise TopologyError(f"nginx rejects the generated configuration:\n{checked.stderr}")


def nginx_command(binary: str, prefix: Path) -> list[str]:
    """nginx in the foreground (the template says `daemon off`), its files under `prefix`."""
    return [binary, *_prefix_options(prefix)]


def _prefix_options(prefix: Path) -> list[str]:
    return ["-p", f"{prefix}/", "-c", str(prefix / "nginx.conf"), "-e", str(prefix / "logs" / "error.log")]
