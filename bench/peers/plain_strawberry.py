"""Baseline: what most people write first. Strawberry's own ASGI view, a resolver that reads
the same Redis entry and decodes it, no parser or validation cache, nothing precomputed."""

from __future__ import annotations

import json
import os

import strawberry
from redis.asyncio import Redis
from strawberry.asgi import GraphQL

redis = Redis.from_url(os.environ["BENCH_REDIS_URL"])


@strawberry.type
class Cell:
    lat: float
    lon: float


@strawberry.type
class CurrentWeather:
    temperature: float | None
    cached: bool
    cell: Cell


@strawberry.type
class Query:
    @strawberry.field
    async def current(self, lat: float, lon: float) -> CurrentWeather:
        cell_lat, cell_lon = round(lat, 1), round(lon, 1)
        raw = await redis.get(f"weather:lat:{cell_lat:.1f}:lon:{cell_lon:.1f}")
        data = json.loads(raw.partition(b"\n")[2]) if raw else {}
        return CurrentWeather(
            temperature=data.get("temperature"), cached=raw is not None, cell=Cell(lat=cell_lat, lon=cell_lon)
        )


app = GraphQL(strawberry.Schema(query=Query), graphql_ide=None)
