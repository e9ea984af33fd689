#!/usr/bin/env python3
"""The features hearth's moderation runtime computes, for training and evaluation.

Text is cut the way crates/engine/src/moderate/chunk.rs cuts it (sentences, and
windows of consecutive sentences packed up to the models' limits); every chunk
gets the all-MiniLM-L6-v2 embedding from a running hearth server
(`/v1/embeddings`, so the numbers are the engine's own) and the six
probabilities of the converted toxicity classifier (NumPy, the same files the
Rust port loads). Embeddings are cached on disk by chunk text.

Windows are counted in the tokens of the encoder the runtime chunks with (`make(encoder)`): the
tokenizer.json in its folder, and its window less [CLS] and [SEP] for the longest sentence piece.

Environment: HEARTH_URL (default http://127.0.0.1:18731), MINILM_DIR (all-minilm-l6-v2's folder),
MPNET_DIR (the sentence-transformers folder of all-mpnet-base-v2, for `MpnetCache`).
"""
import json
import os
import pickle
from pathlib import Path

import numpy as np
import requests

from labels import CATEGORIES, read  # noqa: F401 (CATEGORIES: the scripts read it as F.CATEGORIES)

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CACHE = HERE / ".cache"
URL = os.environ.get("HEARTH_URL", "http://127.0.0.1:18731")
MINILM_DIR = os.environ.get("MINILM_DIR", "/root/.cache/hearth/models/all-minilm-l6-v2")
MPNET_DIR = os.environ.get("MPNET_DIR", "/root/.cache/hearth/models/all-mpnet-base-v2")  # as `hearth pull all-mpnet-base-v2` leaves it
# The runtime's chunking encoder: its folder and its window (sentence_bert_config.json's max_seq_length).
CHUNKING = {"minilm": (MINILM_DIR, 256), "mpnet": (MPNET_DIR, 384)}
TOXIC_WORDS = 100
WINDOW_TOKENS = 128  # a context window packs whole sentences up to this many tokens


def load_tsv(paths):
    """Rows of (primary label, text, set of labels with parents implied); a malformed line stops the run."""
    return [(cats[0], text, full) for _, cats, text, full in read(paths)]


def sentences(text):
    """chunk.rs `sentences`: ends after . ! ? followed by whitespace (or the end), and at line breaks."""
    out, start = [], 0
    for i, c in enumerate(text):
        nxt = text[i + 1] if i + 1 < len(text) else None
        if c == "\n" or (c in ".!?" and (nxt is None or nxt.isspace())):
            out.append(text[start:i + 1])
            start = i + 1
    out.append(text[start:])
    return [s.strip() for s in out if any(ch.isalnum() for ch in s)]


class Counter:
    """Token counts as the runtime makes them: the chunking encoder's tokenizer and the classifier's words."""

    def __init__(self, toxic, encoder):
        from tokenizers import Tokenizer

        folder, window = CHUNKING[encoder]
        self.tok = Tokenizer.from_file(str(Path(folder) / "tokenizer.json"))
        self.tok.no_truncation()
        self.tok.no_padding()
        self.toxic = toxic
        self.embed_tokens = window - 2  # less [CLS] and [SEP]

    def embed_len(self, s):
        return len(self.tok.encode(s, add_special_tokens=False).ids)

    def fits(self, s):
        return self.embed_len(s) <= self.embed_tokens and len(self.toxic.tokenize(s)) <= TOXIC_WORDS


def halve_until_fits(piece, counter, out):
    if counter.fits(piece):
        out.append(piece)
        return
    words = piece.split()
    if len(words) > 1:
        k = len(words) // 2
        halve_until_fits(" ".join(words[:k]), counter, out)
        halve_until_fits(" ".join(words[k:]), counter, out)
    else:
        out.append(piece[:500])


def sentence_chunks(text, counter):
    out = []
    for s in sentences(text):
        halve_until_fits(s, counter, out)
    return out or [text]


def window_chunks(text, counter):
    """Consecutive sentence chunks packed greedily up to WINDOW_TOKENS embedding tokens (and the toxicity
    window); the next window starts about half way into the previous one, so a harm spread over adjacent
    sentences is seen whole. A text that fits is one window. Mirrors chunk.rs `windows`."""
    sents = sentence_chunks(text, counter)
    el = [counter.embed_len(s) for s in sents]
    tl = [len(counter.toxic.tokenize(s)) for s in sents]
    out, i, n = [], 0, len(sents)
    while i < n:
        j, e, t = i + 1, el[i], tl[i]
        while j < n and e + el[j] <= WINDOW_TOKENS and t + tl[j] <= TOXIC_WORDS:
            e, t, j = e + el[j], t + tl[j], j + 1
        out.append(" ".join(sents[i:j]))
        if j == n:
            break
        i = max(i + 1, (i + j + 1) // 2)
    return out


class Embedder:
    def __init__(self):
        CACHE.mkdir(exist_ok=True)
        self.path = CACHE / "minilm.pkl"
        self.cache = pickle.loads(self.path.read_bytes()) if self.path.exists() else {}

    def __call__(self, chunks):
        todo = sorted({c for c in chunks if c not in self.cache})
        for i in range(0, len(todo), 64):
            batch = todo[i:i + 64]
            r = requests.post(f"{URL}/v1/embeddings", json={"model": "all-minilm-l6-v2", "input": batch}, timeout=600)
            r.raise_for_status()
            for c, d in zip(batch, r.json()["data"]):
                self.cache[c] = np.asarray(d["embedding"], dtype=np.float32)
            if (i // 64) % 20 == 19:
                self.save()
        if todo:
            self.save()
        return np.stack([self.cache[c] for c in chunks])

    def save(self):
        self.path.write_bytes(pickle.dumps(self.cache))


class ToxicCache:
    def __init__(self, toxic):
        self.toxic = toxic
        self.path = CACHE / "toxic.pkl"
        self.cache = pickle.loads(self.path.read_bytes()) if self.path.exists() else {}

    def __call__(self, chunks):
        new = False
        for c in chunks:
            if c not in self.cache:
                self.cache[c] = self.toxic.probs(c).astype(np.float32)
                new = True
        if new:
            self.path.write_bytes(pickle.dumps(self.cache))
        return np.stack([self.cache[c] for c in chunks])


def chunk_features(texts, mode, counter, embed, toxic, qwen=None):
    """Per text, the feature rows (MiniLM, toxicity probabilities, the larger encoder's or empty) of its
    chunks: mode `sentence` or `window`."""
    cut = {"sentence": sentence_chunks, "window": window_chunks}[mode]
    per_text = [cut(t, counter) for t in texts]
    flat = [c for cs in per_text for c in cs]
    e, p = embed(flat), toxic(flat)
    q = qwen(flat) if qwen else np.zeros((len(flat), 0), np.float32)
    out, k = [], 0
    for cs in per_text:
        out.append((e[k:k + len(cs)], p[k:k + len(cs)], q[k:k + len(cs)]))
        k += len(cs)
    return out


def make(encoder="minilm"):
    """The token counter of the runtime that chunks with `encoder`, the MiniLM embedder and the classifier."""
    from toxic_np import Toxic

    toxic = Toxic()
    return Counter(toxic, encoder), Embedder(), ToxicCache(toxic)


QWEN_GGUF = os.environ.get("QWEN_GGUF", "/root/.cache/hearth/models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf")
POOLED_BIN = os.environ.get("POOLED_BIN", str(REPO / "target" / "release" / "examples" / "pooled_features"))


class QwenCache:
    """Mean-pooled final hidden states of Qwen2.5-Coder-0.5B-Instruct, computed by the engine
    (examples/pooled_features.rs), cached by chunk text."""

    def __init__(self):
        CACHE.mkdir(exist_ok=True)
        self.path = CACHE / "qwen.pkl"
        self.cache = pickle.loads(self.path.read_bytes()) if self.path.exists() else {}

    def __call__(self, chunks):
        import subprocess

        todo = sorted({c for c in chunks if c not in self.cache})
        for i in range(0, len(todo), 500):
            batch = todo[i:i + 500]
            stdin = "".join(json.dumps(c) + "\n" for c in batch)
            r = subprocess.run([POOLED_BIN, QWEN_GGUF], input=stdin, capture_output=True, text=True, check=True)
            print(r.stderr.strip().splitlines()[-1], flush=True)
            for c, line in zip(batch, r.stdout.splitlines()):
                self.cache[c] = np.asarray(json.loads(line), dtype=np.float32)
            self.path.write_bytes(pickle.dumps(self.cache))
        return np.stack([self.cache[c] for c in chunks])


class MpnetCache:
    """all-mpnet-base-v2 embeddings (768, normalised) by sentence-transformers on 2 CPU threads, cached by
    chunk text."""

    def __init__(self):
        CACHE.mkdir(exist_ok=True)
        self.path = CACHE / "mpnet.pkl"
        self.cache = pickle.loads(self.path.read_bytes()) if self.path.exists() else {}
        self.model = None

    def __call__(self, chunks):
        import time

        todo = sorted({c for c in chunks if c not in self.cache}, key=len)
        if todo and self.model is None:
            import torch
            from sentence_transformers import SentenceTransformer

            torch.set_num_threads(2)
            self.model = SentenceTransformer(MPNET_DIR, device="cpu")
        t0 = time.time()
        for i in range(0, len(todo), 512):
            batch = todo[i:i + 512]
            vs = self.model.encode(batch, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
            self.cache.update((c, v.astype(np.float32)) for c, v in zip(batch, vs))
            self.path.write_bytes(pickle.dumps(self.cache))
            print(f"mpnet: {i + len(batch)}/{len(todo)} chunks, {time.time() - t0:.0f} s", flush=True)
        return np.stack([self.cache[c] for c in chunks])
