"""The read side: read-model storage, the projection runner, the queries the HTTP API serves."""
