"""Time travel: the state at any position or time, diffs, explanations, checkpoints."""
