"""Small data files cut from the test world, for tests that run `dprl eval` on a few samples."""
import json
import os


def grounding_subset(world: str, out_dir, domains=("aircraft", "dog"), n: int = 2) -> str:
    """The first `n` test samples of `domains`, image paths made absolute: the file's path."""
    rows = [json.loads(line) for line in open(os.path.join(world, "kvg_test.jsonl"))]
    rows = [r for r in rows if r["domain"] in domains][:n]
    for r in rows:
        r["image"] = os.path.join(world, r["image"])
    path = os.path.join(str(out_dir), "test.jsonl")
    with open(path, "w") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in rows)
    return path
