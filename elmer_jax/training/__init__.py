"""Training: optimizer, train step, (next) checkpoints, metrics and loop."""
