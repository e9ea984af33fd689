#!/usr/bin/env python3
"""Checks and counts the moderation training data in scripts/moderation/data/train_*.tsv.

Every non-comment line must be `labels<TAB>text` with exactly one TAB, labels a
comma-separated list of OpenAI category names (the most specific ones only, no
parent that another label implies, in CATEGORIES order) or `none`, and
non-empty text; no text may appear twice. Counts are per category with the parents implied
as in train_heads.py (harassment/threatening also counts as harassment and
violence, and so on). Exits non-zero on the first malformed line.

Usage: count_data.py [--markdown] [FILES...]   (default: data/train_*.tsv)
"""
import sys
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
CATEGORIES = ["harassment", "harassment/threatening", "hate", "hate/threatening", "self-harm",
              "self-harm/instructions", "self-harm/intent", "sexual", "sexual/minors", "violence",
              "violence/graphic"]
IMPLIES = {
    "harassment/threatening": ["harassment", "violence"],
    "hate/threatening": ["hate", "violence"],
    "self-harm/intent": ["self-harm"],
    "self-harm/instructions": ["self-harm"],
    "sexual/minors": ["sexual"],
    "violence/graphic": ["violence"],
}


def parse(path):
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        if line.count("\t") != 1:
            sys.exit(f"{path.name}:{n}: expected exactly one TAB: {line[:80]!r}")
        labels, text = line.split("\t")
        if not text.strip():
            sys.exit(f"{path.name}:{n}: empty text")
        cats = labels.split(",")
        if cats != ["none"] and not all(c in CATEGORIES for c in cats):
            sys.exit(f"{path.name}:{n}: unknown label in {labels!r}")
        implied = {p for c in cats for p in IMPLIES.get(c, [])}
        if cats != ["none"] and cats != sorted(set(cats) - implied, key=CATEGORIES.index):
            sys.exit(f"{path.name}:{n}: labels not in canonical form (most specific only, no repeats, "
                     f"in CATEGORIES order): {labels!r}")
        full = set() if cats == ["none"] else {p for c in cats for p in [c, *IMPLIES.get(c, [])]}
        rows.append((path.name, text, full))
    return rows


def main():
    args = [a for a in sys.argv[1:] if a != "--markdown"]
    files = [Path(a) for a in args] or sorted((HERE / "data").glob("train_*.tsv"))
    rows = [r for f in files for r in parse(f)]
    texts = Counter(r[1] for r in rows)
    dups = [t for t, c in texts.items() if c > 1]
    if dups:
        sys.exit(f"duplicate texts: {dups[:5]}")
    per_cat = Counter(c for r in rows for c in r[2])
    benign = sum(1 for r in rows if not r[2])
    per_file = Counter(r[0] for r in rows)
    if "--markdown" in sys.argv:
        print("| category | positives (parents implied) |\n|---|---|")
        for c in CATEGORIES:
            print(f"| `{c}` | {per_cat[c]} |")
        print(f"| none (benign) | {benign} |\n| **all lines** | {len(rows)} |")
        print("\n| file | lines |\n|---|---|")
        for f, c in sorted(per_file.items()):
            print(f"| `{f}` | {c} |")
    else:
        for c in CATEGORIES:
            print(f"{c:24s} {per_cat[c]:5d}")
        print(f"{'none':24s} {benign:5d}  ({100 * benign / max(1, len(rows)):.0f} %)")
        print(f"{'total':24s} {len(rows):5d}")
        for f, c in sorted(per_file.items()):
            print(f"  {f}: {c}")


if __name__ == "__main__":
    main()
