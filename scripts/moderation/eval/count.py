#!/usr/bin/env python3
"""Check and count the moderation evaluation set (eval*.tsv in this folder).

Each non-comment line must be `labels<TAB>text` with exactly one TAB, labels a
comma-separated list of known categories or `none` alone. Counts are per
category with the implied parents added (harassment/threatening also counts as
harassment and violence, and so on), as the README's table reports them.
Exit status 1 on any malformed line. `--markdown` prints the README table.
"""
import glob
import os
import sys

CATEGORIES = [
    "harassment", "harassment/threatening", "hate", "hate/threatening",
    "self-harm", "self-harm/intent", "self-harm/instructions",
    "sexual", "sexual/minors", "violence", "violence/graphic",
]
PARENTS = {
    "harassment/threatening": ["harassment", "violence"],
    "hate/threatening": ["hate", "violence"],
    "self-harm/intent": ["self-harm"],
    "self-harm/instructions": ["self-harm"],
    "sexual/minors": ["sexual"],
    "violence/graphic": ["violence"],
}


def expand(labels):
    out = set(labels)
    for label in labels:
        out.update(PARENTS.get(label, []))
    return out


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    files = sorted(glob.glob(os.path.join(here, "eval*.tsv")))
    errors, rows, texts = 0, [], {}
    for path in files:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                line = line.rstrip("\n")
                if not line or line.startswith("#"):
                    continue
                where = f"{os.path.basename(path)}:{n}"
                if line.count("\t") != 1 or "\r" in line:
                    print(f"{where}: expected exactly one TAB", file=sys.stderr)
                    errors += 1
                    continue
                labels, text = line.split("\t")
                labels = labels.split(",")
                bad = [l for l in labels if l not in CATEGORIES and l != "none"]
                if bad or ("none" in labels and len(labels) > 1) or len(set(labels)) != len(labels):
                    print(f"{where}: bad labels {labels}", file=sys.stderr)
                    errors += 1
                    continue
                if not text.strip():
                    print(f"{where}: empty text", file=sys.stderr)
                    errors += 1
                    continue
                if text in texts:
                    print(f"{where}: duplicate of {texts[text]}", file=sys.stderr)
                    errors += 1
                texts[text] = where
                rows.append(set() if labels == ["none"] else expand(labels))
    benign = sum(1 for r in rows if not r)
    counts = {c: sum(1 for r in rows if c in r) for c in CATEGORIES}
    multi = sum(1 for t in texts if "\\n" in t or t.count(". ") >= 2)
    if "--markdown" in sys.argv:
        print("| category | positives (parents implied) |\n|---|---|")
        for c in CATEGORIES:
            print(f"| `{c}` | {counts[c]} |")
        print(f"| benign (`none`) | {benign} |\n| **total** | **{len(rows)}** |")
    else:
        for c in CATEGORIES:
            print(f"{c:24} {counts[c]}")
        print(f"{'none':24} {benign}\n{'total':24} {len(rows)}\n{'multi-sentence':24} {multi}")
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
