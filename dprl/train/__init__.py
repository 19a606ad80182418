"""Training: the DeepSpeed engine, weight sync, advantages, and the SFT and GRPO stages."""
