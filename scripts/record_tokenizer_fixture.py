#!/usr/bin/env python3
"""Records llama.cpp's tokenization of a fixed set of texts for each default model.

hearth's tokenizer must produce exactly these ids (crates/engine/tests/tokenizer.rs).
Re-run after changing the texts or the models:

    pip install llama-cpp-python
    python scripts/record_tokenizer_fixture.py [MODELS_DIR]

MODELS_DIR defaults to $HEARTH_TEST_MODELS or /tmp/models.
"""
import json
import os
import sys

from llama_cpp import Llama

MODELS = [
    "smollm2-135m-instruct-q4_1.gguf",
    "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    "gemma-3-270m-q4_k_m.gguf",
]

TEXTS = [
    "Hello, world!",
    "hello world",
    " leading space",
    "trailing space ",
    "two  spaces and   three",
    "\n",
    "line one\nline two\n\nline four\r\n",
    "\t\ttabs\tinside",
    "      indented with six spaces",
    "Numbers: 0 7 42 123 4567 1234567890 3.14159 -12",
    "I'm sure they'll say it's what we've done, he'd said. DON'T",
    "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
    "fn main() { println!(\"{}\", x.map(|v| v * 2).sum::<u32>()); }",
    "<html><body><h1>Title</h1><p>Para &amp; more</p></body></html>",
    "Unicode: café, naïve, Ångström, straße, Ελληνικά, русский, 中文字符, 日本語, 한국어",
    "Emoji: 🙂🚀👩‍👩‍👧‍👦 🇫🇷 ❤️ and ✓",
    "Mixed\u00a0no-break\u2003em-space\u200bzero-width",
    "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
    "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n",
    "<|fim_prefix|>def add(a, b):\n    <|fim_suffix|>\n<|fim_middle|>",
    "<|endoftext|>text after eot",
    "a" * 40 + " " + "ab" * 20,
    "The quick brown fox jumps over the lazy dog. " * 3,
    "!!!???...,,,;;;:::---___===+++***",
    "URL: https://example.com/path?q=1&r=two#frag, email: a.b@c.org",
    "   ",
    "x",
]


def main() -> None:
    models_dir = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("HEARTH_TEST_MODELS", "/tmp/models")
    fixture = {"texts": TEXTS, "models": {}}
    for name in MODELS:
        llm = Llama(model_path=os.path.join(models_dir, name), vocab_only=True, verbose=False)
        cases = []
        for text in TEXTS:
            data = text.encode("utf-8")
            cases.append({
                "text": text,
                "ids": llm.tokenize(data, add_bos=False, special=True),
                "ids_with_bos": llm.tokenize(data, add_bos=True, special=True),
            })
        fixture["models"][name] = cases
    out = os.path.join(os.path.dirname(__file__), "..", "crates", "engine", "tests", "fixtures", "tokenizer_llamacpp.json")
    with open(out, "w", encoding="utf-8") as f:
        json.dump(fixture, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"wrote {os.path.normpath(out)}")


if __name__ == "__main__":
    main()
