"""Replay checkers: invariants, determinism and what-if over a folded log."""
