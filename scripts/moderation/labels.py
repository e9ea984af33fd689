"""The moderation categories and the one strict reader of the labelled TSV files (training data,
both evaluation sets). No dependencies beyond the standard library, so the checker runs anywhere.

A file holds `labels<TAB>text` lines; `labels` is `none` or the most specific OpenAI categories,
comma-separated, each once, never a parent that another label implies; `\\n` in a text
stands for a line break; `#` lines are comments.
"""
from pathlib import Path

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


class BadLine(ValueError):
    pass


def parse_line(line):
    """(most specific labels, text with line breaks, every label with parents implied); raises BadLine."""
    if line.count("\t") != 1:
        raise BadLine("expected exactly one TAB")
    field, text = line.split("\t")
    text = text.replace("\\n", "\n").strip()
    if not text:
        raise BadLine("empty text")
    cats = field.split(",")
    if cats == ["none"]:
        return cats, text, set()
    if not all(c in CATEGORIES for c in cats):
        raise BadLine(f"unknown label in {field!r}")
    implied = {p for c in cats for p in IMPLIES.get(c, [])}
    if len(set(cats)) != len(cats) or implied & set(cats):
        raise BadLine(f"labels must be the most specific ones, each once: {field!r}")
    return cats, text, set(cats) | implied


def read(paths):
    """Rows of (file name, most specific labels, text, labels with parents implied) from every file;
    raises BadLine naming the file and line of the first malformed line or repeated text."""
    rows, seen = [], {}
    for path in map(Path, paths):
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip() or line.startswith("#"):
                continue
            try:
                cats, text, full = parse_line(line)
            except BadLine as e:
                raise BadLine(f"{path.name}:{n}: {e}: {line[:80]!r}") from None
            if text in seen:
                raise BadLine(f"{path.name}:{n}: the same text as {seen[text]}")
            seen[text] = f"{path.name}:{n}"
            rows.append((path.name, cats, text, full))
    return rows
