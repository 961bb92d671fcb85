"""The `weathernote` command: serve, simulate-upstream, prewarm, export-schema, redis-cli."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from weathernote.ops.logs import configure_logging
from weathernote.settings import Settings

log = logging.getLogger("weathernote")


def _settings_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per setting, named like its WEATHERNOTE_ variable."""
    for name, field in Settings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        env = "WEATHERNOTE_" + name.upper()
        parser.add_argument(flag, dest=name, default=None, metavar=name.upper(), help=f"{field.description} [${env}]")


def _settings_from(args: argparse.Namespace) -> Settings:
    overrides = {name: getattr(args, name) for name in Settings.model_fields if getattr(args, name, None) is not None}
    for name in ("trusted_proxies", "redis_seed_nodes"):  # lists, spelled as their variables are
        if name in overrides:
            overrides[name] = overrides[name].split(",")
    return Settings(**overrides)


def _export_environment(settings: Settings) -> None:
    """Worker processes read their settings from the environment."""
    for name, value in settings.model_dump().items():
        key = "WEATHERNOTE_" + name.upper()
        if value is None:
            os.environ.pop(key, None)
        elif isinstance(value, list):
            os.environ[key] = ",".join(value)
        else:
            os.environ[key] = str(value)


class _LocalSimulator:
    """The Open-Meteo simulator as a child process, for running offline."""

    def __init__(self) -> None:
        from weathernote.simulator.process import SimulatorError, SimulatorProcess

        self._process = SimulatorProcess()
        try:
            self._process.start(timeout=15)
        except SimulatorError as error:
            raise SystemExit(f"the upstream simulator did not start: {error}") from None
        self.url = self._process.url

    def stop(self) -> None:
        self._process.stop()


def serve(args: argparse.Namespace) -> int:
    from weathernote.fairuse.identity import load_or_create_secret
    from weathernote.http.serving import run
    from weathernote.redis.embedded import EmbeddedRedis

    settings = _settings_from(args)
    simulator = embedded = None
    # uvicorn shuts down gracefully on SIGTERM, then re-raises it under the
    # previous handler: make that handler a normal exit so `finally` runs.
    signal.signal(signal.SIGTERM, _exit_normally)
    _refuse_a_weak_secret(settings)
    try:
        if args.simulator:
            simulator = _LocalSimulator()
            settings = settings.model_copy(update={"upstream_url": simulator.url})
            log.info("offline: Open-Meteo simulator at %s", simulator.url)
        if not settings.redis_url:
            embedded = EmbeddedRedis(settings.data_dir)
            embedded.start()
            settings = settings.model_copy(update={"redis_url": embedded.url})
            log.info("embedded Redis at %s, data in %s", embedded.url, settings.data_dir)
            if not settings.client_id_secret:
                secret = load_or_create_secret(settings.data_dir / "client_id_secret")
                settings = settings.model_copy(update={"client_id_secret": secret})
        if settings.workers > 1:
            # prometheus_client aggregates the workers' metrics through files in this directory
            metrics_dir = Path(tempfile.mkdtemp(prefix="weathernote-metrics-"))
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
        _export_environment(settings)
        run(settings)
    finally:
        if embedded:
            embedded.stop()
        if simulator:
            simulator.stop()
    return 0


def _refuse_a_weak_secret(settings: Settings) -> None:
    """With an external Redis, several instances share limits only under one strong, shared key."""
    from weathernote.fairuse import secret_problem

    problem = secret_problem(settings.client_id_secret) if settings.redis_url else None
    if problem:
        raise SystemExit(
            f"weathernote: {problem}. With an external Redis every instance must hash client ids under the"
            " same strong key: set it to the output of `openssl rand -hex 32` (the same for every instance)."
        )


def _exit_normally(signum: int, frame: object) -> None:
    raise SystemExit(0)


def simulate_upstream(args: argparse.Namespace) -> int:
    from weathernote import simulator

    simulator.run(args)
    return 0


def prewarm(args: argparse.Namespace) -> int:
    """One pre-warm cycle now (whoever holds the lease), then exit."""
    import asyncio
    import dataclasses

    import orjson

    from weathernote.errors import CacheError
    from weathernote.redis.embedded import EmbeddedRedis
    from weathernote.services import Services

    settings = _settings_from(args)
    _refuse_a_weak_secret(settings)
    embedded = None
    if not settings.redis_url:
        embedded = EmbeddedRedis(settings.data_dir)
        embedded.start()
        settings = settings.model_copy(update={"redis_url": embedded.url})

    async def once() -> dict[str, Any]:
        services = Services(settings, prewarm_in_background=False)
        await services.start()
        try:
            return dataclasses.asdict(await services.prewarmer.cycle())
        finally:
            await services.stop()

    try:
        report = asyncio.run(once())
    except CacheError as exc:
        sys.stderr.write(f"pre-warm cycle not run: Redis unavailable ({exc})\n")
        return 1
    finally:
        if embedded:
            embedded.stop()
    sys.stdout.write(orjson.dumps(report).decode() + "\n")
    return 0


def export_schema(args: argparse.Namespace) -> int:
    from weathernote.graphql.schema import schema

    text = str(schema) + "\n"
    if args.output == "-":
        sys.stdout.write(text)
    else:
        Path(args.output).write_text(text)
    return 0


def redis_cli(args: argparse.Namespace) -> int:
    """valkey-cli against the configured Redis (WEATHERNOTE_REDIS_URL, cluster mode on), else the
    embedded one of the data directory."""
    from weathernote.redis.embedded import binary_path

    settings = Settings()
    cli = binary_path("valkey-cli")
    if settings.redis_url:
        # -c follows a Cluster's redirections and is harmless on a single server
        os.execv(cli, [str(cli), "-u", settings.redis_url, "-c", *args.command])
    port_file = settings.data_dir / "redis.port"
    try:
        port = port_file.read_text().split()[0]
    except OSError:
        raise SystemExit(
            f"no embedded Redis is running for the data directory {settings.data_dir}.\n"
            "Start one with `make serve`, or point this command where the server runs: the same"
            " WEATHERNOTE_DATA_DIR as that server, or WEATHERNOTE_REDIS_URL=redis://host:port."
        ) from None
    os.execv(cli, [str(cli), "-p", port, *args.command])


def build_parser() -> argparse.ArgumentParser:
    from weathernote import simulator

    parser = argparse.ArgumentParser(prog="weathernote", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve_parser = commands.add_parser("serve", help="run the GraphQL/WebSocket server")
    _settings_flags(serve_parser)
    serve_parser.add_argument(
        "--simulator",
        action="store_true",
        help="run offline: start the Open-Meteo simulator and use it as the upstream",
    )
    serve_parser.set_defaults(handler=serve)

    sim_parser = commands.add_parser(
        "simulate-upstream", help="an Open-Meteo-compatible server for offline use and tests"
    )
    simulator.add_arguments(sim_parser)
    sim_parser.set_defaults(handler=simulate_upstream)

    prewarm_parser = commands.add_parser("prewarm", help="run the pre-warmer")
    prewarm_parser.add_argument("--once", action="store_true", required=True, help="one cycle, then exit")
    _settings_flags(prewarm_parser)
    prewarm_parser.set_defaults(handler=prewarm)

    export_parser = commands.add_parser("export-schema", help="print the GraphQL schema (SDL)")
    export_parser.add_argument("-o", "--output", default="-", help="file to write (default stdout)")
    export_parser.set_defaults(handler=export_schema)

    cli_parser = commands.add_parser("redis-cli", help="valkey-cli against the embedded Redis")
    cli_parser.add_argument("command", nargs=argparse.REMAINDER)
    cli_parser.set_defaults(handler=redis_cli)
    return parser


def main(argv: Sequence[str] | None = None) -> Any:
    configure_logging(os.environ.get("WEATHERNOTE_LOG_LEVEL", "info"))
    args = build_parser().parse_args(argv)
    return args.handler(args)
