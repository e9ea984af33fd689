#!/usr/bin/env python3
"""Records CTranslate2's greedy Whisper tokens for the engine's `whisper_reference` test.

For each clip (espeak-ng speech written here, stored as 16 kHz 16-bit mono FLAC
under crates/engine/tests/fixtures/whisper/, so both sides read the very same
samples) and model, runs the same CTranslate2 files hearth loads
($HEARTH_TEST_MODELS/<model>/model.bin) through CTranslate2 itself, as
faster-whisper drives it: faster-whisper's log-mel of the first 30 s window
(zero-padded), the prompt <|startoftranscript|><|lang|><|transcribe|>, greedy
search (beam 1) with timestamps, faster-whisper's suppressed tokens and blank
suppression, max initial timestamp 1 s, float32 compute. Stores the tokens
(timestamps included, end of text excluded), the no-speech probability and, per
step, the gap between CTranslate2's two most likely tokens (log-probabilities),
into crates/engine/tests/fixtures/whisper_reference.json.

Usage: bash -c 'python3 -m venv /tmp/fw && /tmp/fw/bin/pip install faster-whisper==1.2.1 &&
       /tmp/fw/bin/python scripts/record_whisper_reference.py [MODELS_DIR]'
(needs espeak-ng and ffmpeg; MODELS_DIR defaults to $HEARTH_TEST_MODELS)
"""
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import ctranslate2
import numpy as np
import tokenizers
from faster_whisper.audio import decode_audio
from faster_whisper.feature_extractor import FeatureExtractor
from faster_whisper.tokenizer import Tokenizer
from faster_whisper.transcribe import get_suppressed_tokens

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "crates/engine/tests/fixtures"

# (clip name, espeak-ng voice, text, language, models)
CLIPS = [
    (
        "kettle-en",
        "en-us",
        "The kettle in the kitchen started to whistle just after seven. My neighbour grows tomatoes and beans along the garden fence.",
        "en",
        ["whisper-tiny.en", "whisper-base"],
    ),
    (
        "museum-en",
        "en-gb",
        "The museum opens at ten and closes early on public holidays. A small boat drifted slowly across the quiet lake.",
        "en",
        ["whisper-tiny.en", "whisper-base"],
    ),
    (
        "vater-de",
        "de",
        "Mein Vater trinkt jeden Morgen eine Tasse Kaffee und liest die Zeitung. Meine Mutter arbeitet in einer Schule in der Stadt.",
        "de",
        ["whisper-base"],
    ),
]


def model_dir(models: Path, model_id: str, tmp: Path) -> Path:
    """hearth's files plus the vocabulary.txt CTranslate2 wants, in id order
    from tokenizer.json (byte-level BPE, then the added tokens, then the
    timestamp tokens that tokenizer.json leaves out)."""
    src = models / model_id
    d = tmp / model_id
    d.mkdir()
    for name in ["model.bin", "config.json", "tokenizer.json"]:
        os.symlink(src / name, d / name)
    spec = json.loads((src / "tokenizer.json").read_text())
    vocab = dict(spec["model"]["vocab"])
    vocab.update({t["content"]: t["id"] for t in spec["added_tokens"]})
    tokens = [None] * (max(vocab.values()) + 1)
    for token, i in vocab.items():
        tokens[i] = token
    assert None not in tokens, "tokenizer.json ids have a gap"
    tokens += [f"<|{i * 0.02:.2f}|>" for i in range(1501)]
    (d / "vocabulary.txt").write_text("\n".join(tokens) + "\n")
    return d


def make_clip(name: str, voice: str, text: str) -> Path:
    out = FIXTURES / "whisper" / f"{name}.flac"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            wav = Path(tmp) / "s.wav"
            subprocess.run(["espeak-ng", "-v", voice, "-s", "150", "-w", str(wav), text], check=True)
            subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(wav), "-ar", "16000", "-ac", "1", "-sample_fmt", "s16", str(out)], check=True)
    return out


def main():
    models = Path(sys.argv[1] if len(sys.argv) > 1 else os.environ["HEARTH_TEST_MODELS"])
    cases = []
    with tempfile.TemporaryDirectory() as tmp:
        loaded = {}
        for clip, voice, text, language, model_ids in CLIPS:
            path = make_clip(clip, voice, text)
            audio = decode_audio(str(path), sampling_rate=16000)
            for model_id in model_ids:
                if model_id not in loaded:
                    d = model_dir(models, model_id, Path(tmp))
                    model = ctranslate2.models.Whisper(str(d), device="cpu", compute_type="float32")
                    hf = tokenizers.Tokenizer.from_file(str(d / "tokenizer.json"))
                    loaded[model_id] = (model, hf)
                model, hf = loaded[model_id]
                fe = FeatureExtractor(feature_size=model.n_mels)
                mel = fe(audio)[:, :3000]
                mel = np.pad(mel, [(0, 0), (0, 3000 - mel.shape[1])]).astype(np.float32)
                tok = Tokenizer(hf, model.is_multilingual, task="transcribe", language=language if model.is_multilingual else "en")
                prompt = list(tok.sot_sequence)
                result = model.generate(
                    ctranslate2.StorageView.from_array(mel[None]),
                    [prompt],
                    beam_size=1,
                    max_length=448,
                    return_scores=True,
                    return_logits_vocab=True,
                    return_no_speech_prob=True,
                    suppress_blank=True,
                    suppress_tokens=list(get_suppressed_tokens(tok, [-1])),
                    max_initial_timestamp_index=50,
                )[0]
                tokens = result.sequences_ids[0]
                gaps = []
                for step in result.logits[0]:
                    row = np.array(step, dtype=np.float32).ravel()
                    top2 = np.sort(row)[-2:]
                    gaps.append(round(float(top2[1] - top2[0]), 4))
                text_out = tok.decode([t for t in tokens if t < tok.timestamp_begin])
                print(f"{clip} {model_id}: {len(tokens)} tokens, min gap {min(gaps):.3f}, no_speech {result.no_speech_prob:.3f}: {text_out}")
                cases.append(
                    {
                        "clip": f"whisper/{path.name}",
                        "model": model_id,
                        "language": language,
                        "prompt": prompt,
                        "tokens": tokens,
                        "top_gaps": gaps,
                        "no_speech_prob": round(float(result.no_speech_prob), 5),
                        "text": text_out,
                    }
                )
    fixture = {
        "recorded_with": f"ctranslate2 {ctranslate2.__version__} (float32, CPU), faster-whisper's FeatureExtractor and suppressed tokens",
        "cases": cases,
    }
    (FIXTURES / "whisper_reference.json").write_text(json.dumps(fixture, indent=1) + "\n")


if __name__ == "__main__":
    main()
