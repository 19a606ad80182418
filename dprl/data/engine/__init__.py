"""The data engine: fine-grained recognition data sets -> KVG grounding samples.

The data half, one module per stage: sources.py (pictures on disk -> entity pictures),
compose.py (entity pictures -> multi-entity composites with exact boxes), output.py (composites
-> KVG-Bench-schema rows and images); build.py runs the three for one config.
"""
