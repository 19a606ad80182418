"""Training: the shared DeepSpeed engine builder, weight sync into the rollout engine, metrics."""
