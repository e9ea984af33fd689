#!/usr/bin/env python3
"""Check and count the second evaluation set (scripts/moderation/eval2/eval2_*.tsv).

Every non-comment line must be `labels<TAB>text`: exactly one TAB, labels either
`none` or comma-separated OpenAI category names, no parent listed next to a label
that already implies it, no empty or duplicate text. Counts are per category with
parents implied. Exits 1 on any bad line. `--markdown` prints a table.
"""
import glob
import os
import sys

CATEGORIES = [
    "harassment", "harassment/threatening", "hate", "hate/threatening",
    "self-harm", "self-harm/instructions", "self-harm/intent",
    "sexual", "sexual/minors", "violence", "violence/graphic",
]
IMPLIES = {
    "harassment/threatening": {"harassment", "violence"},
    "hate/threatening": {"hate", "violence"},
    "self-harm/intent": {"self-harm"},
    "self-harm/instructions": {"self-harm"},
    "sexual/minors": {"sexual"},
    "violence/graphic": {"violence"},
}


def read(paths):
    errors, rows, seen = [], [], {}
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                line = line.rstrip("\n")
                where = f"{os.path.basename(path)}:{n}"
                if not line.strip() or line.startswith("#"):
                    continue
                if line.count("\t") != 1:
                    errors.append(f"{where}: expected exactly one TAB")
                    continue
                labels, text = line.split("\t")
                text_key = text.strip().lower()
                if not text.strip():
                    errors.append(f"{where}: empty text")
                    continue
                if text_key in seen:
                    errors.append(f"{where}: duplicate of {seen[text_key]}")
                seen[text_key] = where
                if labels == "none":
                    rows.append((path, set()))
                    continue
                parts = labels.split(",")
                unknown = [p for p in parts if p not in CATEGORIES]
                if unknown or len(set(parts)) != len(parts):
                    errors.append(f"{where}: bad labels {labels!r}")
                    continue
                implied = set().union(*(IMPLIES.get(p, set()) for p in parts))
                redundant = implied & set(parts)
                if redundant:
                    errors.append(f"{where}: parent listed with its child: {sorted(redundant)}")
                rows.append((path, set(parts) | implied))
    return rows, errors


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    paths = sorted(glob.glob(os.path.join(here, "eval2_*.tsv")))
    rows, errors = read(paths)
    for e in errors:
        print(e, file=sys.stderr)
    counts = {c: sum(c in labels for _, labels in rows) for c in CATEGORIES}
    benign = sum(not labels for _, labels in rows)
    if "--markdown" in sys.argv:
        print("| category | texts |\n|---|---|")
        for c in CATEGORIES:
            print(f"| `{c}` | {counts[c]} |")
        print(f"| none (benign) | {benign} |")
        print(f"| **all** | {len(rows)} |")
    else:
        for path in paths:
            print(f"{os.path.basename(path)}: {sum(p == path for p, _ in rows)}")
        for c in CATEGORIES:
            print(f"{c:24} {counts[c]}")
        print(f"{'none':24} {benign} ({100 * benign / max(len(rows), 1):.0f} %)")
        print(f"{'all':24} {len(rows)}")
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
