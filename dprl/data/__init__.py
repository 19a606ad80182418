"""Data: the synthetic fine-grained world, and loading data sets in KVG-Bench's schema."""
