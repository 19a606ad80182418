"""Evaluation: KVG-Bench-format and FGVR scoring of checkpoints side by side, Table-1 reports, the
knowledge probe and the world audit (`dprl eval` runs dprl.eval.run)."""
