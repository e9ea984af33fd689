#!/usr/bin/env python3
"""Training tokens/s: hearth-train vs PyTorch + PEFT LoRA, same GGUF, same data, same
LoRA (rank 8, alpha 16, q/k/v/o/gate/up/down), batch 1, AdamW 2e-3, f32, same thread
count, in one run with the two sides interleaved round by round.

Each side is a fresh process per round (crates/train/examples/bench.rs,
bench/train/peft_train.py); each times its steps after a warm-up and reports
loss-bearing tokens (OpenAI's `trained_tokens`) per second. Writes the train section
of BENCHMARKS.md. Run through bench/train/run.sh.
"""
import argparse
import json
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "bench" / "train"))
from report import write_section  # noqa: E402
from data import CHAT, COMPLETIONS  # noqa: E402

MODELS = [
    ("smollm2-135m-instruct-q4_1", "chat"),
    ("gemma-3-270m-q4_k_m", "completion"),
]


def jsonl(kind):
    if kind == "chat":
        rows = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in CHAT]
    else:
        rows = [{"prompt": p, "completion": c} for p, c in COMPLETIONS]
    f = tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False)
    f.write("".join(json.dumps(r) + "\n" for r in rows))
    f.close()
    return f.name


def run(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def cpu():
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models-dir", default=os.path.expanduser(os.environ.get("HEARTH_HOME", "~/.cache/hearth")) + "/models")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--out", default=str(REPO / "BENCHMARKS.md"))
    args = ap.parse_args()
    hearth = str(REPO / "target/release/examples/bench")
    peft = [sys.executable, str(REPO / "bench/train/peft_train.py")]
    load_before = os.getloadavg()
    results = {}
    for name, kind in MODELS:
        gguf, data = f"{args.models_dir}/{name}.gguf", jsonl(kind)
        common = [gguf, data, str(args.epochs), str(args.threads), str(args.warmup)]
        for r in range(args.rounds):
            for side, cmd in (("hearth", [hearth] + common), ("peft", peft + common)):
                t = time.time()
                res = run(cmd)
                res["load"] = os.getloadavg()[0]
                res["wall"] = time.time() - t
                print(name, side, r + 1, json.dumps({k: v for k, v in res.items() if k != "step_tokens"}), flush=True)
                results.setdefault((name, side), []).append(res)
        os.unlink(data)
    load_after = os.getloadavg()

    torch_version = results[(MODELS[0][0], "peft")][0]["torch"]
    lines = [
        "## Training: hearth-train vs PyTorch + PEFT LoRA",
        "",
        f"Written by `bench/train/run.sh` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {cpu()}, "
        f"{os.cpu_count()} cores, {args.threads} threads each side (`TrainSpec::threads`, `torch.set_num_threads`); "
        f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after (the machine is shared).",
        "",
        f"Both sides train LoRA rank 8, alpha 16, dropout 0, on q/k/v/o/gate/up/down, batch 1, AdamW (lr 2e-3, "
        f"β 0.9/0.999, no weight decay), f32, {args.epochs} epochs of {len(CHAT)} made-up examples "
        f"(`bench/train/data.py`), from the same GGUF (transformers dequantizes it to f32 through its GGUF loader; "
        f"torch {torch_version}, PEFT). Sequences are built alike (context without loss, then the answer and its "
        f"end marker with loss); the trained-token count of each run is printed to show they match. "
        f"**tokens/s = loss-bearing tokens of the timed steps / their time**, the first {args.warmup} steps excluded; "
        f"loading the model and writing the result are outside. One fresh process per side per round, "
        f"rounds interleaved (hearth, PEFT, hearth, PEFT).",
        "",
        "| model | side | round | trained tokens (all epochs) | timed steps | timed tokens | seconds | tokens/s | s/step | loss first → last |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, _ in MODELS:
        for side in ("hearth", "peft"):
            for i, res in enumerate(results[(name, side)]):
                label = "hearth-train" if side == "hearth" else "PyTorch + PEFT"
                lines.append(
                    f"| {name} | {label} | {i + 1} | {res['trained_tokens']} | {res['timed_steps']} | {res['timed_tokens']} | "
                    f"{res['timed_seconds']:.1f} | {res['tokens_per_s']:.1f} | {res['timed_seconds'] / res['timed_steps']:.2f} | "
                    f"{res['first_loss']:.3f} → {res['last_loss']:.3f} |"
                )
    lines.append("")
    for name, _ in MODELS:
        h = [r["tokens_per_s"] for r in results[(name, "hearth")]]
        p = [r["tokens_per_s"] for r in results[(name, "peft")]]
        seqs = results[(name, "peft")][0]["sequence_lengths"]
        lines.append(
            f"- {name}: hearth-train {max(h):.1f} tokens/s (best round), PyTorch + PEFT {max(p):.1f}: "
            f"**{max(h) / max(p):.2f}×**. Sequences of {min(seqs)}–{max(seqs)} tokens in all (PEFT's count)."
        )
    write_section(args.out, "train", "\n".join(lines))


if __name__ == "__main__":
    main()
