"""What a run executes on: distribution strategies, checkpoints, the optimizer, gradient accumulation."""
