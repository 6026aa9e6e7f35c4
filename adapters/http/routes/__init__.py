"""HTTP routes, one module per resource; each imports only deps and models."""
