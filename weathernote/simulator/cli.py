"""Command line: `python -m weathernote.simulator` and `weathernote simulate-upstream`."""

from __future__ import annotations

import argparse
import socket
from dataclasses import fields

import uvicorn

from weathernote.simulator.app import create_app
from weathernote.simulator.config import SimulatorConfig
from weathernote.simulator.faults.corruption import CORRUPTIONS

_HELP = {
    "latency_ms": "delay added to every forecast request",
    "latency_jitter_ms": "extra random delay, uniform in [0, this]",
    "error_rate": "probability (0..1) of a fault: 502, 503 or a 200 with a broken body, in rotation",
    "forced_status": "answer every forecast request with this HTTP error status",
    "rate_limit_per_minute": "weighted calls per client and clock minute",
    "rate_limit_per_hour": "weighted calls per client and clock hour",
    "rate_limit_per_day": "weighted calls per client and clock day",
    "max_concurrent": "requests in flight per client before 429 (0 = unlimited)",
    "clock_speed": "simulated seconds per real second",
    "seed": "seed of the weather and of fault/jitter draws",
    "corrupt": "answer 200 with a well-formed but wrong body: " + ", ".join(CORRUPTIONS),
    "corrupt_location": "with --corrupt, make only this location (its index, from 0) of an answer wrong",
    "body_padding_bytes": "follow each answer with this many bytes of JSON whitespace (a huge body)",
    "trickle_bytes_per_second": "send answers at this many bytes a second (0 = at once)",
}
_TYPES: dict[str, type] = {
    "forced_status": int,
    "max_concurrent": int,
    "seed": int,
    "body_padding_bytes": int,
    "corrupt": str,
    "corrupt_location": int,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8081, help="port to listen on, 0 for any free one (default 8081)")
    parser.add_argument(
        "--clock-start", type=float, default=None, help="simulated Unix time the clock starts at (default: now)"
    )
    defaults = SimulatorConfig()
    for knob in fields(SimulatorConfig):
        default = getattr(defaults, knob.name)
        parser.add_argument(
            "--" + knob.name.replace("_", "-"),
            dest=knob.name,
            type=_TYPES.get(knob.name, float),
            choices=CORRUPTIONS if knob.name == "corrupt" else None,
            default=default,
            help=f"{_HELP[knob.name]} (default {default})",
        )


def config_from(args: argparse.Namespace) -> SimulatorConfig:
    config = SimulatorConfig()
    config.update({knob.name: getattr(args, knob.name) for knob in fields(SimulatorConfig)})
    return config


def run(args: argparse.Namespace) -> None:
    """Serve until interrupted; prints `simulator listening on http://HOST:PORT` once listening."""
    try:
        config = config_from(args)
    except ValueError as error:
        raise SystemExit(f"simulator: {error}") from None
    uvicorn_config = uvicorn.Config(
        create_app(config, args.clock_start), host=args.host, port=args.port, log_level="warning", access_log=False
    )
    _AnnouncingServer(uvicorn_config).run()


class _AnnouncingServer(uvicorn.Server):
    """Says where it listens once the socket is bound, so a parent process can wait for the line."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)  # exits the process if the port cannot be bound
        port = self.servers[0].sockets[0].getsockname()[1]  # the real one with --port 0
        host = self.config.host
        shown_host = f"[{host}]" if ":" in host else host
        print(f"simulator listening on http://{shown_host}:{port}", flush=True)
