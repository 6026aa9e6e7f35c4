"""The audit: hash chain, invariants, determinism and read-model checks over a stored log."""
