"""WeatherNote: current weather and forecasts over GraphQL, from a Redis cache in front of Open-Meteo.

The packages, bottom to top (each imports only those below it):

    ops, errors, clock, tasks, settings, breaker   what everything uses: metrics, logs, time, errors
    model                                          cells, entries and their parts, units, conditions
    redis                                          the one gateway to Redis (standalone or Cluster), keys, pub/sub
    upstream                                       Open-Meteo: contract, client, pace, the shared budget
    demand                                         watched, requested and kept cells, the daily rhythm, usage
    cache                                          the read path: store, memo, refresh, spend policy, service
    live                                           the pub/sub hub, entry channels, watches, feeds
    prewarm, fairuse                               the pre-warm cycle; identities, limits, admission
    graphql                                        schema, documents (limits, APQ, plans), rendering, operations
    services                                       the composition root: everything built through constructors
    http                                           the transports: GraphQL over HTTP and WebSocket, REST, the app

`simulator` (an Open-Meteo-compatible server) and `topology` (the deployment as
local processes) are programs of their own beside the service.
"""
