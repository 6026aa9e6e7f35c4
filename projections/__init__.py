"""Read models built from the tierlog event log."""
