#!/usr/bin/env python3
"""The PyTorch + PEFT side of bench/train: LoRA on the same GGUF (dequantized to f32 by
transformers), the same data and hyperparameters as hearth-train's bench example, and
one JSON line of timings on stdout (same fields, same definitions).

  peft_train.py BASE.gguf DATA.jsonl EPOCHS THREADS WARMUP_STEPS

Sequences as hearth builds them: chat, the chat template's prompt (generation prompt
included) is context and the reply with the end-of-turn marker after it bears loss;
prompt/completion, BOS + prompt is context and the completion with EOS bears loss.
"""
import json
import os
import random
import sys
import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer


def sequences(tok, lines):
    out = []
    for ex in lines:
        if "messages" in ex:
            msgs = ex["messages"]
            prompt = tok.apply_chat_template(msgs[:-1], add_generation_prompt=True, tokenize=False)
            ctx = tok(prompt, add_special_tokens=False)["input_ids"]
            ans = tok(msgs[-1]["content"] + "<|im_end|>", add_special_tokens=False)["input_ids"]
        else:  # prompt/completion: BOS + prompt is context; the completion and EOS bear loss
            ctx = tok(ex["prompt"], add_special_tokens=True)["input_ids"]
            ans = tok(ex["completion"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        ids = torch.tensor([ctx + ans])
        labels = torch.tensor([[-100] * len(ctx) + ans])
        out.append((ids, labels, len(ans), len(ctx) + len(ans)))
    return out


def main():
    base, data, epochs, threads, warmup = sys.argv[1:6]
    epochs, threads, warmup = int(epochs), int(threads), int(warmup)
    torch.set_num_threads(threads)
    torch.manual_seed(7)
    folder, name = os.path.split(os.path.abspath(base))
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=targets, bias="none"))
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    seqs = sequences(tok, [json.loads(l) for l in open(data) if l.strip()])
    rng = random.Random(7)
    losses, step_tokens, step = [], [], 0
    started = time.perf_counter()
    timed_from, tokens_at_warmup, total, last_t = None, 0, 0, started
    for _ in range(epochs):
        order = list(range(len(seqs)))
        rng.shuffle(order)
        for i in order:
            ids, labels, trained, _ = seqs[i]
            loss = model(input_ids=ids, labels=labels).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            total += trained
            losses.append(loss.item())
            step_tokens.append(trained)
            last_t = time.perf_counter()
            if step == warmup:
                timed_from, tokens_at_warmup = last_t, total
    seconds = last_t - timed_from
    print(json.dumps({
        "steps": step,
        "timed_steps": step - warmup,
        "timed_tokens": total - tokens_at_warmup,
        "timed_seconds": seconds,
        "tokens_per_s": (total - tokens_at_warmup) / seconds,
        "trained_tokens": total,
        "first_loss": losses[0],
        "last_loss": losses[-1],
        "step_tokens": step_tokens,
        "sequence_lengths": [s[3] for s in seqs],
        "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()
