#!/usr/bin/env python3
"""Checks and counts labelled moderation data: the training files, the evaluation set or the second
evaluation set (labels.py says what a valid line is; a text may appear only once in a set). Counts
are per category with parents implied (harassment/threatening also counts as harassment and
violence, and so on). Exits non-zero at the first malformed line.

Usage: count_data.py [--markdown] [train|eval|eval2|FILES...]   (default: train)
"""
import sys
from collections import Counter
from pathlib import Path

from labels import CATEGORIES, BadLine, read

HERE = Path(__file__).resolve().parent
SETS = {"train": [HERE / "dataset.tsv", *sorted((HERE / "data").glob("train_*.tsv"))],
        "eval": sorted((HERE / "eval").glob("eval_*.tsv")),
        "eval2": sorted((HERE / "eval2").glob("eval2_*.tsv"))}


def main():
    args = [a for a in sys.argv[1:] if a != "--markdown"]
    files = SETS[args[0]] if len(args) == 1 and args[0] in SETS else [Path(a) for a in args] or SETS["train"]
    try:
        rows = read(files)
    except BadLine as e:
        sys.exit(str(e))
    per_cat = Counter(c for r in rows for c in r[3])
    benign = sum(1 for r in rows if not r[3])
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
