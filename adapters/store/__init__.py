"""The event log: eventsourcing recorders for SQLite and PostgreSQL, the msgspec codec,
the hash chain, store URLs."""
