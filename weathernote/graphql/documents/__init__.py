"""The one way into a GraphQL document: limits, persisted queries, parse and validation once, plans.

A query text (sent whole or by its persisted hash) is checked under the
document limits and planned once (`Planner`); a transport executes only the
document the planner passed, or serves what was rendered for its plan.
"""

from weathernote.graphql.documents.limits import DocumentLimits
from weathernote.graphql.documents.persisted import PersistedQueries, PersistedQueryError, load_manifest
from weathernote.graphql.documents.planner import DEFAULT_CACHE_BYTES, Planner
from weathernote.graphql.documents.plans import Bound, NotPlannable, Plan, included

__all__ = [
    "DEFAULT_CACHE_BYTES",
    "Bound",
    "DocumentLimits",
    "NotPlannable",
    "PersistedQueries",
    "PersistedQueryError",
    "Plan",
    "Planner",
    "included",
    "load_manifest",
]
