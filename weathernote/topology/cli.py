"""The command line, `python -m weathernote.topology up|status|down`: the topology from a shell.
`up` returns once everything answers and leaves it running; `status` and `down`, later and from
another shell, find it through the state directory: one topology, or (`up --regions N`) the
regions and their front."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

from weathernote.topology.errors import TopologyError
from weathernote.topology.nginx import instance_route, region_route
from weathernote.topology.regions import Regions, has_regions
from weathernote.topology.state import STATE_FILE, default_state_dir, instance_name
from weathernote.topology.topology import (
    DEFAULT_DRAIN_SECONDS,
    DEFAULT_INSTANCES,
    DEFAULT_PORT,
    DEFAULT_PRIMARIES,
    DEFAULT_REPLICAS,
    Topology,
)

PROG = "python -m weathernote.topology"


def describe(report: dict[str, Any]) -> str:
    """`Topology.status()`'s report for people: one line a part, with its URL, pid and readiness."""
    if not report.get("running") and not report.get("processes"):
        return f"no local topology runs (state directory {report['state_dir']})"
    alive = {p["name"]: p for p in report["processes"]}

    def state(name: str) -> str:
        proc = alive.get(name)
        if proc is None:
            return "-"
        return f"pid {proc['pid']:<7} {'running' if proc.get('alive', True) else 'NOT RUNNING'}"

    def ready(code: int | None) -> str:
        return {200: "ready", None: "no answer"}.get(code, f"not ready ({code})")

    lb = report["load_balancer"]
    lines = [
        f"WeatherNote local topology, up since {report['started_at']} (state in {report['state_dir']})",
        f"  load balancer  {lb['url']:<28} nginx     {state('nginx')}   /ready: {ready(lb.get('ready'))}",
        f"                 GraphQL {lb['url']}/graphql  (WebSocket: {lb['url'].replace('http', 'ws', 1)}/graphql)",
    ]
    for instance in report["instances"]:
        n = instance["index"] + 1
        name = instance_name(instance["index"])
        lines.append(
            f"  instance {n}     {instance['url']:<28} serve     {state(name)}"
            f"   /ready: {ready(instance.get('ready'))}, through nginx ({instance_route(lb['url'], instance['index'])}):"
            f" {ready(instance.get('ready_through_nginx'))}"
        )
    upstream = report["upstream"]
    if upstream["simulated"]:
        lines.append(f"  upstream       {upstream['url']:<28} simulator {state('simulator')}")
    else:
        lines.append(f"  upstream       {upstream['url']}")
    nodes = [p for p in report["processes"] if p["name"].startswith("redis-")]
    running = sum(1 for p in nodes if p.get("alive", True))
    ports = ", ".join(str(p["port"]) for p in nodes)
    lines.append(f"  redis cluster  {report['redis']['url']:<28} {running}/{len(nodes)} nodes running (ports {ports})")
    lines.append(f"  logs           {report['state_dir']}/logs/, nginx's in {report['state_dir']}/nginx/logs/")
    return "\n".join(lines)


def describe_regions(report: dict[str, Any]) -> str:
    """`Regions.status()`'s report for people: the front, then each region as `describe` says it."""
    if not report.get("running") and not report.get("processes"):
        return f"no local regions run (state directory {report['state_dir']})"
    front = report["load_balancer"]
    [proc] = [p for p in report["processes"] if p["name"] == "front-nginx"] or [None]
    state = f"pid {proc['pid']:<7} {'running' if proc['alive'] else 'NOT RUNNING'}" if proc else "-"
    ready = {200: "ready", None: "no answer"}.get(front.get("ready"), f"not ready ({front.get('ready')})")
    names = [region["name"] for region in report["regions"]]
    lines = [
        f"WeatherNote local regions, up since {report['started_at']} (state in {report['state_dir']})",
        f"  front          {front['url']:<28} nginx     {state}   /ready: {ready}",
        f"                 GraphQL {front['url']}/graphql  (WebSocket: {front['url'].replace('http', 'ws', 1)}/graphql)",
        f"                 sends to {names[0]}, fails over to {', then '.join(names[1:])}",
    ]
    for index, region in enumerate(report["regions"]):
        through = {200: "ready", None: "no answer"}.get(region.get("ready_through_front"), "not ready")
        role = "the front's first choice" if index == 0 else "backup"
        lines.append(
            f"  {region['name']} ({role})   nginx {region['url']}, through the front"
            f" ({region_route(front['url'], region['name'])}): {through}"
        )
        lines.extend(f"    {line}" for line in describe(region["status"]).splitlines())
    lines.append(f"  front's logs   {report['state_dir']}/logs/, {report['state_dir']}/front/logs/")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "up":
        env = {}
        for item in args.set:
            name, sep, value = item.partition("=")
            if not sep:
                parser.error(f"--set {item}: expected NAME=VALUE")
            env[name] = value
        return _up(args, env)
    if args.command == "status":
        return _status(args)
    return _down(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="WeatherNote's scale-out topology on loopback, without Docker"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start everything and wait until it answers")
    status = commands.add_parser("status", help="what runs")
    down = commands.add_parser("down", help="stop everything and remove the state")
    for sub in (up, status, down):
        sub.add_argument("--dir", type=Path, default=None, help=f"state directory (default {default_state_dir()})")
    up.add_argument("--port", type=int, default=DEFAULT_PORT, help="nginx's port on 127.0.0.1 (default 8080)")
    up.add_argument(
        "--regions",
        type=int,
        default=1,
        help="regions side by side, each its own cluster, upstream, instances and nginx, with one nginx in"
        " front that fails over (default 1: no front); the front listens on --port, the regions on the next ports",
    )
    up.add_argument(
        "--instances", type=int, default=DEFAULT_INSTANCES, help="weathernote serve processes (a region's; default 3)"
    )
    up.add_argument(
        "--primaries", type=int, default=DEFAULT_PRIMARIES, help="Redis Cluster primaries (a region's; default 3)"
    )
    up.add_argument(
        "--replicas", type=int, default=DEFAULT_REPLICAS, help="replicas of each primary (default 1; 0 for none)"
    )
    up.add_argument("--upstream-url", default=None, help="use this Open-Meteo URL instead of starting the simulator")
    up.add_argument(
        "--drain-seconds", type=float, default=DEFAULT_DRAIN_SECONDS, help="WEATHERNOTE_DRAIN_SECONDS (default 3)"
    )
    up.add_argument(
        "--prewarm-interval",
        type=float,
        default=None,
        help="WEATHERNOTE_PREWARM_INTERVAL_SECONDS (default: the service's, 900)",
    )
    up.add_argument("--log-level", default="info", help="the instances' WEATHERNOTE_LOG_LEVEL (default info)")
    up.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="any other instance setting, e.g. rate_limit_per_minute=1000 (repeatable)",
    )
    up.add_argument("--timeout", type=float, default=120, help="seconds to wait for everything to answer")
    status.add_argument("--json", action="store_true", help="the state and live checks as JSON")
    down.add_argument("--timeout", type=float, default=30, help="seconds before SIGKILL")
    return parser


def _up(args: argparse.Namespace, env: dict[str, str]) -> int:
    options: dict[str, Any] = {
        "port": args.port,
        "instances": args.instances,
        "primaries": args.primaries,
        "replicas": args.replicas,
        "upstream_url": args.upstream_url,
        "drain_seconds": args.drain_seconds,
        "prewarm_interval_seconds": args.prewarm_interval,
        "log_level": args.log_level,
        "env": env,
    }
    topology: Topology | Regions
    directory = Path(args.dir or default_state_dir())
    other = None
    if args.regions > 1 and (directory / STATE_FILE).exists():
        other = "a one-region topology runs"
    elif args.regions == 1 and has_regions(directory):
        other = "regions run"
    if other:
        print(f"{other} in {directory}: stop it first ({_command('down', args.dir)})", file=sys.stderr)
        return 1
    topology = Regions(args.dir, regions=args.regions, **options) if args.regions > 1 else Topology(args.dir, **options)
    started = time.monotonic()
    try:
        fresh = topology.start(args.timeout)
    except TopologyError as exc:
        print(f"up failed, everything it started is stopped again:\n{exc}", file=sys.stderr)
        return 1
    print(_describe(topology))
    if fresh:
        print(f"up in {time.monotonic() - started:.1f} s; stop it with: {_command('down', args.dir)}")
    else:
        print("(already running: nothing started)")
    return 0


def _status(args: argparse.Namespace) -> int:
    """Exit 0 when everything runs, 1 when some of it does, 3 when nothing does."""
    regions = has_regions(args.dir)
    report = Regions(args.dir).status() if regions else Topology(args.dir).status()
    print(json.dumps(report, indent=2) if args.json else (describe_regions if regions else describe)(report))
    if not _processes(report):
        return 3
    return 0 if report["running"] else 1


def _down(args: argparse.Namespace) -> int:
    topology = Regions(args.dir) if has_regions(args.dir) else Topology(args.dir)
    processes = _processes(topology.status())
    if topology.stop(args.timeout):
        alive = sum(1 for proc in processes if proc["alive"])
        print(
            f"stopped {alive} running processes of {len(processes)}; state removed from {topology.dir} (logs kept in {topology.dir / 'logs'})"
        )
    else:
        print(f"nothing was running (state directory {topology.dir})")
    return 0


def _processes(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Every process a status report names: the regions' too."""
    regions = [region["status"] for region in report.get("regions", [])]
    return [*report.get("processes", []), *(p for region in regions for p in region.get("processes", []))]


def _describe(topology: Topology | Regions) -> str:
    if isinstance(topology, Regions):
        return describe_regions(topology.status())
    return describe(topology.status())


def _command(verb: str, state_dir: Path | None) -> str:
    """How to run this command again, as the user would type it from here."""
    python = Path(sys.executable)
    with contextlib.suppress(ValueError):
        python = python.absolute().relative_to(Path.cwd())
    return " ".join(
        [str(python), "-m", "weathernote.topology", verb, *(["--dir", str(state_dir)] if state_dir else [])]
    )
