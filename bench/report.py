"""Writes one benchmark's section of BENCHMARKS.md, leaving the others as they are.

Each benchmark owns the text between `<!-- NAME:begin -->` and `<!-- NAME:end -->`.
"""
from pathlib import Path

HEADER = "# Benchmarks\n\nEvery number is measured side by side on one machine in one run.\n"


def write_section(path, name, body):
    """Replaces (or appends) section `name` of the file at `path` with `body`."""
    path = Path(path)
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    block = f"{begin}\n{body.strip(chr(10))}\n{end}"
    text = path.read_text() if path.exists() else HEADER
    if begin in text and end in text:
        text = text[: text.index(begin)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)


if __name__ == "__main__":
    # `python3 bench/report.py FILE NAME < body`: what the shell scripts use.
    import sys

    write_section(sys.argv[1], sys.argv[2], sys.stdin.read())
