"""The Open-Meteo upstream: its contract (variables, weights, validation), its client, when it can
have newer data (pace), and the shared budget of weighted calls every instance spends from."""

from weathernote.upstream.budget import Limits, Payer, Shares, Spent, UpstreamBudget
from weathernote.upstream.client import OpenMeteoClient
from weathernote.upstream.contract import request_weight
from weathernote.upstream.pace import STEP_SECONDS

__all__ = ["STEP_SECONDS", "Limits", "OpenMeteoClient", "Payer", "Shares", "Spent", "UpstreamBudget", "request_weight"]
