#!/usr/bin/env python3
"""Converts the Keras toxicity classifier of `toxic-comment-classifier==0.3.0`
(PyPI, MIT) into files hearth's Rust code loads, once:

  models/moderation/toxic.safetensors   the weights (F32)
  models/moderation/toxic_vocab.json    the tokenizer: filters, lowercase, the
                                        word -> id map of the 19,999 words the
                                        model knows (ids 1..19999)
  crates/engine/tests/fixtures/toxic_reference.json
                                        sentences, their token ids and the six
                                        probabilities, to check the Rust port

Needs only h5py and numpy: the pickled Keras `Tokenizer` is read with a stub
class (its state is a plain dict). The reference probabilities come from
TensorFlow/Keras when it is importable (`--keras`), else from the NumPy
forward pass below, which follows Keras' LSTM semantics (gates i,f,c,o;
sigmoid recurrent activation; pre-padding and pre-truncation to 100 ids).

Usage: convert_toxic.py WHEEL_DIR [--keras]
  WHEEL_DIR: the unzipped wheel (holds toxic_classifier/model/...).
"""
import json
import pickle
import struct
import sys
from pathlib import Path

import h5py
import numpy as np

MAXLEN = 100
VOCAB_SIZE = 20000
LABELS = ["toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate"]
REPO = Path(__file__).resolve().parents[2]

# Sentences for the fixture: benign, insulting, threatening, hateful, obscene,
# unknown words, punctuation, and one longer than the 100-id window.
FIXTURE_TEXTS = [
    "Thank you for the helpful edit, I appreciate it.",
    "You are a stupid idiot and everyone hates you.",
    "I will find you and kill you.",
    "Go back to your country, you filthy foreigner.",
    "What the f*** is this s***, shut up!!!",
    "Zxqv blorptastic wibblewobble.",
    "",
    " ".join(["the weather is nice today and we walked in the park"] * 12) + " you moron",
]


class _Stub:
    """Stands in for keras' Tokenizer class: the pickle only sets its state."""

    def __setstate__(self, state):
        self.__dict__.update(state)


class _StubUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if module.startswith("keras") or module.startswith("tensorflow"):
            return _Stub
        return super().find_class(module, name)


def load_tokenizer(path):
    with open(path, "rb") as f:
        tok = _StubUnpickler(f).load()
    state = tok.__dict__
    assert state["num_words"] == VOCAB_SIZE and state["oov_token"] is None and not state["char_level"]
    assert state["split"] == " " and state["lower"]
    words = {w: int(i) for w, i in state["word_index"].items() if int(i) < VOCAB_SIZE}
    return {"filters": state["filters"], "lower": state["lower"], "split": state["split"], "words": words}


def tokenize(tok, text):
    """Keras `text_to_word_sequence` + `texts_to_sequences` (num_words cap, no OOV token)."""
    if tok["lower"]:
        text = text.lower()
    text = text.translate(str.maketrans({c: tok["split"] for c in tok["filters"]}))
    return [tok["words"][w] for w in text.split(tok["split"]) if w and w in tok["words"]]


def pad(ids):
    """Keras `pad_sequences` defaults: keep the last MAXLEN, zeros in front."""
    ids = ids[-MAXLEN:]
    return [0] * (MAXLEN - len(ids)) + ids


def load_weights(path):
    f = h5py.File(path, "r")
    g = lambda name: np.asarray(f[name], dtype=np.float32)
    w = {"embedding": g("layers/embedding/vars/0")}
    for d in ("forward", "backward"):
        base = f"layers/bidirectional/{d}_layer/cell/vars/"
        w[f"{d}.kernel"] = g(base + "0")  # [50 in, 200] gates i,f,c,o
        w[f"{d}.recurrent"] = g(base + "1")  # [50 units, 200]
        w[f"{d}.bias"] = g(base + "2")
    w["dense.weight"], w["dense.bias"] = g("layers/dense/vars/0"), g("layers/dense/vars/1")
    w["out.weight"], w["out.bias"] = g("layers/dense_1/vars/0"), g("layers/dense_1/vars/1")
    return w


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def lstm(xs, kernel, recurrent, bias):
    units = recurrent.shape[0]
    h, c, out = np.zeros(units, np.float64), np.zeros(units, np.float64), []
    for x in xs:
        z = x @ kernel + h @ recurrent + bias
        i, f, g, o = (z[k * units:(k + 1) * units] for k in range(4))
        c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
        h = sigmoid(o) * np.tanh(c)
        out.append(h)
    return np.stack(out)


def forward_numpy(w, padded):
    w = {k: v.astype(np.float64) for k, v in w.items()}
    xs = w["embedding"][padded]
    fwd = lstm(xs, w["forward.kernel"], w["forward.recurrent"], w["forward.bias"])
    bwd = lstm(xs[::-1], w["backward.kernel"], w["backward.recurrent"], w["backward.bias"])
    pooled = np.concatenate([fwd.max(0), bwd.max(0)])  # max over time: order of steps is irrelevant
    hidden = np.maximum(pooled @ w["dense.weight"] + w["dense.bias"], 0.0)
    return sigmoid(hidden @ w["out.weight"] + w["out.bias"])


def forward_keras(weights_path, padded_batch):
    from tensorflow.keras.layers import LSTM, Bidirectional, Dense, Dropout, Embedding, GlobalMaxPooling1D, Input
    from tensorflow.keras.models import Model

    inp = Input(shape=(MAXLEN,))
    x = Embedding(input_dim=VOCAB_SIZE, output_dim=50)(inp)
    x = Bidirectional(LSTM(50, return_sequences=True))(x)
    x = GlobalMaxPooling1D()(x)
    x = Dense(50, activation="relu")(x)
    x = Dropout(0.1)(x)
    out = Dense(len(LABELS), activation="sigmoid")(x)
    model = Model(inputs=inp, outputs=out)
    model.load_weights(weights_path)
    return model.predict(np.array(padded_batch), verbose=0)


def write_safetensors(path, tensors):
    header, offset, blobs = {}, 0, []
    for name in sorted(tensors):
        data = np.ascontiguousarray(tensors[name], dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(tensors[name].shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    header["__metadata__"] = {"source": "toxic-comment-classifier==0.3.0 (MIT)", "labels": ",".join(LABELS)}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw + b"".join(blobs))


def main():
    wheel = Path(sys.argv[1])
    use_keras = "--keras" in sys.argv[2:]
    model_dir = wheel / "toxic_classifier" / "model"
    tok = load_tokenizer(model_dir / "tokenizer.pickle")
    w = load_weights(model_dir / "model.weights.h5")

    out_dir = REPO / "models" / "moderation"
    out_dir.mkdir(parents=True, exist_ok=True)
    write_safetensors(out_dir / "toxic.safetensors", w)
    vocab = {"filters": tok["filters"], "lower": tok["lower"], "split": tok["split"], "max_len": MAXLEN,
             "labels": LABELS, "words": dict(sorted(tok["words"].items(), key=lambda kv: kv[1]))}
    (out_dir / "toxic_vocab.json").write_text(json.dumps(vocab, ensure_ascii=False, separators=(",", ":")))

    ids = [tokenize(tok, t) for t in FIXTURE_TEXTS]
    padded = [pad(i) for i in ids]
    numpy_probs = np.stack([forward_numpy(w, p) for p in padded])
    if use_keras:
        probs = forward_keras(str(model_dir / "model.weights.h5"), padded)
        print("max |keras - numpy| =", float(np.abs(probs - numpy_probs).max()))
        reference = "tensorflow.keras"
    else:
        probs, reference = numpy_probs, "numpy port of the Keras layers"
    fixture = {"reference": reference, "labels": LABELS, "cases": [
        {"text": t, "ids": i, "probabilities": [float(p) for p in pr]} for t, i, pr in zip(FIXTURE_TEXTS, ids, probs)]}
    fixture_path = REPO / "crates" / "engine" / "tests" / "fixtures" / "toxic_reference.json"
    fixture_path.parent.mkdir(parents=True, exist_ok=True)
    fixture_path.write_text(json.dumps(fixture, indent=1, ensure_ascii=False) + "\n")
    for t, pr in zip(FIXTURE_TEXTS, probs):
        print(" ".join(f"{l}={p:.3f}" for l, p in zip(LABELS, pr)), "|", t[:60])


if __name__ == "__main__":
    main()
