"""The GraphQL layer: schema and types, documents (limits, persisted queries, plans), rendering."""
