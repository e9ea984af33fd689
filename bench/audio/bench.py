"""Interleaved benchmark: hearth's Whisper and faster-whisper, both in-process
(hearth's `transcribe` example, 2 rayon threads; faster-whisper cpu_threads=2),
on the same CTranslate2 model files and the same 60 s clip, at beam 5 (both
projects' default, with temperature fallback) and greedy; see run.sh."""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from faster_whisper import WhisperModel

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "scripts"))
from report import write_section  # noqa: E402
from record_whisper_reference import model_dir  # noqa: E402
HOME = Path(os.environ["HEARTH_HOME"])
THREADS = 2
ROUNDS = int(os.environ.get("ROUNDS", "2"))
SENTENCES = [
    "The morning bus was crowded with students carrying heavy backpacks.",
    "A gentle breeze moved the curtains in the open window.",
    "The baker lifted a tray of warm rolls out of the oven.",
    "Two old friends met for coffee at the corner of the square.",
    "The lighthouse keeper climbed the stairs every evening at dusk.",
    "Our team finished the project two days before the deadline.",
    "The river was high after a week of steady rain.",
    "She found a silver key hidden under the loose floorboard.",
    "The orchestra tuned their instruments before the concert began.",
    "He planted a row of apple trees along the northern wall.",
    "The city council voted to build a new bridge over the canal.",
    "A curious cat watched the birds from the kitchen table.",
    "The hikers reached the summit just as the clouds cleared.",
    "Please remember to switch off the lights when you leave.",
]


def words(text):
    return re.findall(r"[a-z0-9']+", text.lower())


def wer(ref, hyp):
    r, h = words(ref), words(hyp)
    row = list(range(len(h) + 1))
    for i in range(1, len(r) + 1):
        prev, row[0] = row[0], i
        for j in range(1, len(h) + 1):
            cur = min(prev + (r[i - 1] != h[j - 1]), row[j] + 1, row[j - 1] + 1)
            prev, row[j] = row[j], cur
    return row[len(h)] / max(len(r), 1)


def clip(tmp):
    """About 60 s of speech (espeak-ng, en-us), as 16-bit wav."""
    wav = tmp / "clip.wav"
    text, used = "", []
    for s in SENTENCES * 3:
        used.append(s)
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(wav), " ... ".join(used)], check=True)
        if wav.stat().st_size / 2 / 22050 >= 60:
            break
    trimmed = tmp / "clip60.wav"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(wav), "-t", "60", str(trimmed)], check=True)
    # the reference: sentences fully inside the first 60 s (the cut falls in the last pause or word)
    return trimmed, " ".join(used)


def hearth(model_id, audio, beam):
    """One transcription by hearth's engine; the example times transcribe alone (model loaded)."""
    env = dict(os.environ, RAYON_NUM_THREADS=str(THREADS), BEAM=str(beam))
    out = subprocess.run([str(REPO / "target/release/examples/transcribe"), str(HOME / "models" / model_id), str(audio), "transcribe", "en"],
                         env=env, check=True, capture_output=True, text=True).stdout
    took = float(re.search(r"took ([0-9.]+)s", out).group(1))
    text = next(line[5:] for line in out.splitlines() if line.startswith("text "))
    return took, text


def load():
    return os.getloadavg()[0]


SETTINGS = [("beam 5", 5), ("greedy", 1)]


def main():
    tmp = Path(tempfile.mkdtemp(prefix="hearth-bench-audio-"))
    try:
        audio, reference = clip(tmp)
        duration = 60.0
        results = {}
        for model_id in ["whisper-tiny.en", "whisper-base"]:
            fw = WhisperModel(str(model_dir(HOME / "models", model_id, tmp)), device="cpu", compute_type="float32", cpu_threads=THREADS)
            for setting, beam in SETTINGS:
                for rnd in range(ROUNDS):
                    # interleaved: hearth then faster-whisper, each round
                    l0 = load()
                    h_time, h_text = hearth(model_id, audio, beam)
                    l1 = load()
                    t = time.perf_counter()
                    segments, _ = fw.transcribe(str(audio), beam_size=beam, language="en")
                    f_text = " ".join(s.text for s in segments)
                    f_time = time.perf_counter() - t
                    l2 = load()
                    for side, secs, text, la in [("hearth", h_time, h_text, (l0 + l1) / 2), ("faster-whisper", f_time, f_text, (l1 + l2) / 2)]:
                        results.setdefault((model_id, setting, side), []).append((secs / duration, wer(reference, text), la))
                    print(f"{model_id} {setting} round {rnd}: hearth rtf {h_time / duration:.3f} wer {wer(reference, h_text):.3f} | "
                          f"faster-whisper rtf {f_time / duration:.3f} wer {wer(reference, f_text):.3f} | load {l0:.1f}/{l1:.1f}/{l2:.1f}", flush=True)
        report(results)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def report(results):
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    lines = [
        "## Audio: hearth vs faster-whisper",
        "",
        f"`bench/audio/run.sh`: a 60 s espeak-ng clip (en-us), language given, {THREADS} threads each, both in-process "
        f"(hearth's `transcribe` example, timing transcription alone; faster-whisper's `transcribe`), "
        f"the same CTranslate2 float16 files (both compute in float32), beam 5 (the default of both, with temperature "
        f"fallback and the previous window's text as context) and greedy, runs interleaved ({ROUNDS} rounds, best kept). "
        f"CPU: {cpu}, {os.cpu_count()} cores. Load average (1 min) recorded around each run: the machine is shared.",
        "",
        "| model | decoding | hearth RTF | faster-whisper RTF | speed ratio (fw / hearth) | hearth WER | faster-whisper WER | load avg |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for model_id in ["whisper-base", "whisper-tiny.en"]:
        for setting, _ in SETTINGS:
            h = min(results[(model_id, setting, "hearth")])
            f = min(results[(model_id, setting, "faster-whisper")])
            loads = [r[2] for r in results[(model_id, setting, "hearth")] + results[(model_id, setting, "faster-whisper")]]
            lines.append(f"| {model_id} | {setting} | {h[0]:.3f} | {f[0]:.3f} | {f[0] / h[0]:.2f} | {h[1]:.3f} | {f[1]:.3f} | {min(loads):.1f}–{max(loads):.1f} |")
    lines.append("")
    lines.append("RTF = processing time / audio time (lower is faster); a ratio above 1 means hearth is faster.")
    section = "\n".join(lines) + "\n"
    write_section(REPO / "BENCHMARKS.md", "audio", section)
    print(section)


if __name__ == "__main__":
    main()
