#!/usr/bin/env python3
"""Records the moderation scores of a fixed set of texts, computed in Python from the same
features and heads.json the engine uses, into crates/engine/tests/fixtures/moderation_scores.json;
crates/engine/tests/moderation_scores.rs checks the engine against it within a tolerance. Re-record
after retraining: the diff of this fixture shows how the scores moved.

Usage: record_fixture.py   (a hearth server with all-minilm-l6-v2 at HEARTH_URL; MPNET_DIR for MPNet heads)
"""
import json

import numpy as np

import features as F
import train_heads as T

HEADS = F.REPO / "models" / "moderation" / "heads.json"
OUT = F.REPO / "crates" / "engine" / "tests" / "fixtures" / "moderation_scores.json"

# Written for this fixture (none are in the training or evaluation data): a spread of
# categories, registers and lengths, and benign texts near each category.
TEXTS = [
    "Is the museum open on public holidays?",
    "Thanks for the quick reply, I'll send the invoice on Monday.",
    "lol that match was insane, gg everyone",
    "You are a pathetic loser and nobody at this school will ever like you.",
    "shut up u braindead clown, go back to mining in minecraft where u belong",
    "If you show up at my house again I will break both your legs.",
    "Keep posting my address and see what happens to you and your dog.",
    "Those immigrants are vermin and they are ruining everything they touch.",
    "People of that faith should be rounded up and shot, every last one.",
    "The lecture covered the history of antisemitism in 19th-century Europe.",
    "I can't do this anymore. I've written the notes and tonight I'm going to end it.",
    "What's the most painless way to kill myself with stuff from a pharmacy?",
    "Cutting again helps me feel something, even if it's only for a minute.",
    "If you are thinking about suicide, please call or text a crisis line; you are not alone.",
    "She slowly unbuttoned his shirt and pulled him onto the bed, kissing his neck.",
    "Send me nudes, I want to see your naked body tonight.",
    "Any 13 year old girls here want to send me private pictures? I'll pay.",
    "Our sex education class talked about consent and how to use condoms.",
    "The victim's body was found with its throat slit and blood everywhere.",
    "He grabbed the bat and beat the man until he stopped moving.",
    "The soldiers fought for three days before the town was retaken, the report said.",
    "This recipe calls for you to kill the lobster quickly with a knife before boiling.",
    "I could murder a burger right now, I'm starving.",
    "My grandmother's funeral was last week; she died peacefully in her sleep.",
    "Take two tablets every six hours with water; do not exceed eight in a day.",
    "Hi all, long-time lurker here. Our neighbourhood association is planning a spring clean-up on Saturday.\n"
    "We'll meet at the park entrance at nine and bring gloves and bags.\nCoffee and pastries are on me.",
    "Hi all, long-time lurker here. The new tenant upstairs plays music until 3am every night.\n"
    "I've asked nicely twice.\nNext time I'm going up there with a hammer and he won't be playing anything ever again.",
    "So the movie starts slow, honestly. The middle drags. But the ending, where the killer finally gets caught, is worth it.",
    "Dear team, please remember that the quarterly reports are due Friday. Late reports delay payroll. Thanks, Dana",
    "ur mom is so fat lmaooo",
]


def main():
    heads = json.loads(HEADS.read_text())
    fs = heads.get("feature_set", "minilm+toxic")
    encoder = fs.split("+")[0]
    counter, embed, toxic = F.make(encoder)
    larger = F.MpnetCache() if encoder == "mpnet" else None
    mode = heads.get("chunks", "sentence")
    if "window_tokens" in heads:
        F.WINDOW_TOKENS = heads["window_tokens"]
    modes = ["sentence", "window"] if mode == "both" else [mode]
    items = []
    for text in TEXTS:
        x = np.concatenate([T.design(F.chunk_features([text], m, counter, embed, toxic, larger), fs)[0] for m in modes])
        scores, flags = {}, {}
        for h in heads["heads"]:
            z = x @ np.asarray(h["weights"]) + h["bias"]
            s = float(1 / (1 + np.exp(-z.max())))
            scores[h["category"]] = round(s, 5)
            flags[h["category"]] = s >= h["threshold"]
        items.append({"text": text, "scores": scores, "flagged": flags})
    OUT.write_text(json.dumps({"note": "recorded by scripts/moderation/record_fixture.py from models/moderation/heads.json", "thresholds": {h["category"]: h["threshold"] for h in heads["heads"]}, "items": items}, indent=1) + "\n")
    for it in items:
        top = max(it["scores"], key=it["scores"].get)
        print(f"{top:24s} {it['scores'][top]:.3f} {'FLAG' if any(it['flagged'].values()) else '    '} {it['text'][:70]!r}")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
