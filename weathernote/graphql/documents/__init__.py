"""The one way into a GraphQL document: limits, persisted queries."""
