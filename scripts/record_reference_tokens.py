#!/usr/bin/env python3
"""Records llama.cpp's greedy continuations for the engine's reference test.

For each model and fixed prompt, stores the prompt token ids (llama.cpp's
tokenizer, special tokens parsed) and the 32 tokens llama.cpp picks greedily
(argmax of the logits, no sampler), into
crates/engine/tests/fixtures/reference_tokens.json. The Rust test
`model_reference` replays the same prompt ids through hearth's forward pass and
requires the same 32 tokens.

Usage: python scripts/record_reference_tokens.py [MODELS_DIR]
(needs llama-cpp-python; MODELS_DIR defaults to $HEARTH_TEST_MODELS or /tmp/models)
"""
import hashlib
import json
import os
import sys
from pathlib import Path

import llama_cpp
import numpy as np

GENERATED = 32

# (file name, prompts). Instruct models get one prompt in their chat format.
MODELS = [
    (
        "smollm2-135m-instruct-q4_1.gguf",
        [
            "The capital of France is",
            "def fibonacci(n):\n",
            "<|im_start|>system\nYou are a helpful AI assistant.<|im_end|>\n"
            "<|im_start|>user\nWhat is the tallest mountain in the world?<|im_end|>\n"
            "<|im_start|>assistant\n",
        ],
    ),
    (
        "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        [
            "The capital of France is",
            "def quicksort(arr):\n",
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
            "<|im_start|>user\nWrite a Python function that returns the sum of a list.<|im_end|>\n"
            "<|im_start|>assistant\n",
        ],
    ),
    (
        "gemma-3-270m-q4_k_m.gguf",
        [
            "The capital of France is",
            "Once upon a time, in a small village,",
            "<start_of_turn>user\nName three colors.<end_of_turn>\n<start_of_turn>model\n",
        ],
    ),
]


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def greedy(llm: llama_cpp.Llama, prompt_ids: list[int]) -> tuple[list[int], list[float]]:
    """Argmax continuation; also the top1-top2 logit margin of each step (to spot near-ties)."""
    llm.reset()
    n_vocab = llm.n_vocab()
    tokens, margins = [], []
    llm.eval(prompt_ids)
    for _ in range(GENERATED):
        logits = np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(n_vocab,)).copy()
        top2 = np.argsort(logits)[-2:]
        best = int(top2[1])
        tokens.append(best)
        margins.append(round(float(logits[top2[1]] - logits[top2[0]]), 4))
        llm.eval([best])
    return tokens, margins


def main() -> None:
    default_dir = os.environ.get("HEARTH_TEST_MODELS", "/tmp/models")
    models_dir = Path(sys.argv[1] if len(sys.argv) > 1 else default_dir)
    out_path = Path(__file__).resolve().parent.parent / "crates/engine/tests/fixtures/reference_tokens.json"
    cases = []
    models = []
    for file_name, prompts in MODELS:
        path = models_dir / file_name
        if not path.exists():
            sys.exit(f"missing model file {path}")
        models.append({"file": file_name, "sha256": sha256(path)})
        llm = llama_cpp.Llama(model_path=str(path), n_ctx=512, n_threads=2, logits_all=False, verbose=False)
        for prompt in prompts:
            prompt_ids = llm.tokenize(prompt.encode(), add_bos=True, special=True)
            tokens, margins = greedy(llm, prompt_ids)
            text = llm.detokenize(tokens).decode(errors="replace")
            print(f"{file_name}: {prompt!r} -> {text!r}")
            cases.append(
                {
                    "model": file_name,
                    "prompt": prompt,
                    "prompt_ids": prompt_ids,
                    "tokens": tokens,
                    "margins": margins,
                    "text": text,
                }
            )
        del llm
    fixture = {
        "generator": "scripts/record_reference_tokens.py",
        "llama_cpp_python": llama_cpp.__version__,
        "models": models,
        "cases": cases,
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(fixture, indent=1) + "\n")
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
