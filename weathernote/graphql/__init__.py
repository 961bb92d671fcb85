"""The GraphQL layer: the schema and its types, the one way into a document (documents/), planned
answers built without execution (projection) and planned subscriptions rendered once, the operations
of streaming transports, and the error codes of the contract.

It knows the weather service and live watches, never Redis or HTTP.
"""

from weathernote.graphql.context import Context, check_days
from weathernote.graphql.operations import Emitter, Operations
from weathernote.graphql.projection import Projector
from weathernote.graphql.rendering import PayloadRenderer
from weathernote.graphql.schema import build_root, schema

__all__ = ["Context", "Emitter", "Operations", "PayloadRenderer", "Projector", "build_root", "check_days", "schema"]
