"""The converted Keras toxicity classifier in NumPy: the same files and arithmetic as
crates/engine/src/moderate/toxic.rs (convert_toxic.py checks both against Keras)."""
import json
import struct
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
TOXIC_LABELS = ["toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate"]


def read_safetensors(path):
    raw = Path(path).read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        a, b = meta["data_offsets"]
        out[name] = np.frombuffer(raw[8 + n + a:8 + n + b], dtype="<f4").reshape(meta["shape"])
    return out


class Toxic:
    def __init__(self):
        d = REPO / "models" / "moderation"
        self.w = {k: v.astype(np.float64) for k, v in read_safetensors(d / "toxic.safetensors").items()}
        self.vocab = json.loads((d / "toxic_vocab.json").read_text())

    def tokenize(self, text):
        v = self.vocab
        text = text.lower() if v["lower"] else text
        text = text.translate(str.maketrans({c: v["split"] for c in v["filters"]}))
        return [v["words"][t] for t in text.split(v["split"]) if t and t in v["words"]]

    def probs(self, text):
        ids = self.tokenize(text)[-self.vocab["max_len"]:]
        ids = [0] * (self.vocab["max_len"] - len(ids)) + ids
        w, xs = self.w, self.w["embedding"][ids]
        pooled = np.concatenate([self._lstm(xs, "forward").max(0), self._lstm(xs[::-1], "backward").max(0)])
        hidden = np.maximum(pooled @ w["dense.weight"] + w["dense.bias"], 0)
        return 1 / (1 + np.exp(-(hidden @ w["out.weight"] + w["out.bias"])))

    def _lstm(self, xs, d):
        k, r, b = self.w[f"{d}.kernel"], self.w[f"{d}.recurrent"], self.w[f"{d}.bias"]
        u = r.shape[0]
        h, c, out = np.zeros(u), np.zeros(u), []
        sig = lambda x: 1 / (1 + np.exp(-x))
        for x in xs:
            z = x @ k + h @ r + b
            c = sig(z[u:2 * u]) * c + sig(z[:u]) * np.tanh(z[2 * u:3 * u])
            h = sig(z[3 * u:]) * np.tanh(c)
            out.append(h)
        return np.stack(out)


def toxic_logits(p):
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))
