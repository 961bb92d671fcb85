"""The transports: the Starlette app, GraphQL over HTTP and WebSocket, REST, the uvicorn runner."""
