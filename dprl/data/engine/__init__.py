"""The data engine: fine-grained recognition data sets -> KVG grounding samples.

One module per stage. The data half: sources.py (pictures on disk -> entity pictures),
compose.py (entity pictures -> multi-entity composites with exact boxes), output.py (composites
-> KVG-Bench-schema rows and images); build.py runs the three for one config. The model-driven
stages, each asking through the rollout contract (asking.py): knowledge.py (which categories the
model knows), teacher.py (chains of thought kept by IoU), difficulty.py (the RL set's prompts the
policy gets right sometimes). run.py runs them all for `dprl data-engine`.
"""
