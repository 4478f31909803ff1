"""Compare two runs of scripts/same_tokens.sh: every (model, recipe, sample) must have the same
answer text, NFE, rows and cost_rows. Prints one line per model and exits 1 on any difference.
Usage: python scripts/same_tokens.py runs/same/base runs/same/new"""

import json
import sys
from pathlib import Path

KEYS = ("answer", "nfe", "rows", "cost_rows", "answer_tokens")


def load(path: Path) -> dict:
    rows = [json.loads(line) for line in path.open()]
    return {(r["recipe"], r["index"]): r for r in rows}


def main(a: str, b: str) -> int:
    bad = 0
    for f in sorted(Path(a).glob("*.jsonl")):
        old, new = load(f), load(Path(b) / f.name)
        diff = [k for k in old if k not in new or any(old[k][x] != new[k][x] for x in KEYS)]
        same = len(old) - len(diff)
        print(f"{f.stem}: {same}/{len(old)} identical ({len({k[0] for k in old})} recipes)")
        for k in diff[:5]:
            o, n = old[k], new.get(k, {})
            print("  ", k, {x: (o[x], n.get(x)) for x in KEYS if o[x] != n.get(x)})
        bad += len(diff) + (len(new) != len(old))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
