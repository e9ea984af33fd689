#!/usr/bin/env python3
"""Zero-shot moderation scores from an instruct model served by hearth, measured on the evaluation set.

For each text and category the model is asked, through /v1/chat/completions, whether the text does
what the category's definition says; the score is P(yes) / (P(yes) + P(no)) from the first token's
top logprobs. The text comes before the question, so the prompt's prefix is shared by a text's
categories (hearth's prefix cache). Compares with the heads in models/moderation/heads.json on the same
texts. The evaluation set is only scored here, never trained on.

Usage: zero_shot.py [--every N] [--model ID]   (a hearth server with the model and all-minilm-l6-v2 at HEARTH_URL)
"""
import argparse
import glob
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import requests
from sklearn.metrics import average_precision_score

import features as F
import train_heads as T

HERE = Path(__file__).resolve().parent
# Each category in our own words, after OpenAI's moderation category descriptions.
DEFINITIONS = {
    "harassment": "harasses, insults, demeans or bullies a person or group",
    "hate": "expresses hatred of, dehumanises or demeans people because of race, ethnicity, religion, nationality, gender, sexual orientation, disability or caste",
    "hate/threatening": "hateful content against a protected group that also threatens or calls for violence or serious harm against that group",
    "self-harm": "promotes, encourages or depicts self-harm such as suicide, cutting or eating disorders, or says the writer intends it",
    "sexual": "is sexually explicit, meant to arouse, or solicits sexual services (not sex education or wellness)",
    "sexual/minors": "sexualises anyone under 18",
    "violence": "threatens, incites, glorifies or celebrates violence or physical harm against people or animals",
    "violence/graphic": "describes death, violence or serious physical injury in graphic, gory detail",
}
SYSTEM = "You are a strict content moderator. Answer with one word: yes or no."


def ask(model, text, cat):
    question = f"Text:\n\"\"\"\n{text}\n\"\"\"\n\nDoes this text do the following: {DEFINITIONS[cat]}? Answer yes or no."
    body = {"model": model, "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}],
            "max_tokens": 1, "temperature": 0, "logprobs": True, "top_logprobs": 10}
    r = requests.post(f"{F.URL}/v1/chat/completions", json=body, timeout=600)
    r.raise_for_status()
    top = r.json()["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
    p = {"yes": 0.0, "no": 0.0}
    for t in top:
        word = t["token"].strip().lower()
        if word in p:
            p[word] += float(np.exp(t["logprob"]))
    return p["yes"] / max(p["yes"] + p["no"], 1e-9)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--every", type=int, default=3, help="score every N-th evaluation text")
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct-q4_k_m")
    ap.add_argument("--parallel", type=int, default=4)
    args = ap.parse_args()
    rows = F.load_tsv(sorted(glob.glob(str(HERE / "eval" / "*.tsv"))))[::args.every]
    cats = list(DEFINITIONS)
    jobs = [(i, c) for i in range(len(rows)) for c in cats]
    t0 = time.time()
    with ThreadPoolExecutor(args.parallel) as pool:
        scores = list(pool.map(lambda j: ask(args.model, rows[j[0]][1], j[1]), jobs))
    took = time.time() - t0
    zs = np.asarray(scores).reshape(len(rows), len(cats))

    # The shipped heads on the same texts.
    shipped = json.loads((F.REPO / "models" / "moderation" / "heads.json").read_text())
    heads = {h["category"]: h for h in shipped["heads"]}
    fs = shipped.get("feature_set", "minilm+toxic")
    encoder = fs.split("+")[0]
    counter, embed, toxic = F.make(encoder)
    feats = F.chunk_features([r[1] for r in rows], "window", counter, embed, toxic, F.MpnetCache() if encoder == "mpnet" else None)
    dx, do = T.design(feats, fs)
    print(f"{len(rows)} evaluation texts, {len(jobs)} questions in {took:.0f} s ({len(jobs) / took:.1f}/s)\n", file=sys.stderr)
    print("| method | " + " | ".join(f"`{c}`" for c in cats) + " | macro |")
    print("|---|" + "---|" * (len(cats) + 1))
    out = {}
    for name in ["zero-shot", "heads", "heads + zero-shot (mean of ranks)"]:
        aps = []
        for k, c in enumerate(cats):
            y = T.labels(rows, c)
            h = T.text_max(dx @ np.asarray(heads[c]["weights"]) + heads[c]["bias"], do, len(rows))
            s = {"zero-shot": zs[:, k], "heads": h,
                 "heads + zero-shot (mean of ranks)": np.argsort(np.argsort(h)) + np.argsort(np.argsort(zs[:, k]))}[name]
            aps.append(average_precision_score(y, s))
        out[name] = aps
        print(f"| {name} | " + " | ".join(f"{a:.2f}" for a in aps) + f" | {np.mean(aps):.2f} |")


if __name__ == "__main__":
    main()
