"""The HTTP API: dependencies, routes, request models, authentication, the server."""
